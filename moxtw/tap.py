"""``twistd moxtw``: command-line options and ``makeService``.

The only module that imports the global reactor.  ``Options.postOptions`` loads and
validates the whole configuration, so a bad file makes twistd print every problem and exit
1 before anything starts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from .config import Config, ConfigError, load_config
from .store.lock import DataDirInUse, lock_data_dir
from .tls import TLSFileError, check_tls_config

log = Logger()


class LocalserveOptions(usage.Options):
    """``twistd moxtw localserve``: development mode, zero configuration."""

    synopsis = "[--dir DIR] [--outgoing-webhook URL] [--incoming-webhook URL] ..."

    optParameters = [
        ["dir", "d", "moxtw-localserve", "Directory for configuration, database and messages."],
        ["outgoing-webhook", None, "", "URL for outgoing delivery event webhooks of account mox."],
        ["incoming-webhook", None, "", "URL for incoming message webhooks of account mox."],
        ["webhook-authorization", None, "", "Authorization header value sent with webhooks, verbatim."],
        ["retry-scale", None, "1", "Divide every queue and webhook retry interval by N."],
    ]

    def postOptions(self) -> None:
        try:
            scale = int(self["retry-scale"])
        except ValueError:
            raise usage.UsageError("--retry-scale must be a positive whole number") from None
        if scale < 1:
            raise usage.UsageError("--retry-scale must be a positive whole number")
        self["retry-scale"] = scale
        for flag in ("outgoing-webhook", "incoming-webhook"):
            url = self[flag]
            if url and not (url.startswith("http://") or url.startswith("https://")):
                raise usage.UsageError(f"--{flag} must be an http:// or https:// URL")


class Options(usage.Options):
    """``twistd moxtw --config FILE`` or ``twistd moxtw localserve``."""

    synopsis = "--config FILE | localserve [options]"
    longdesc = (
        "Run moxtw: the mail daemon with mox's webapi and webhooks. "
        "Production: --config FILE. Development: localserve."
    )

    optParameters = [["config", "c", None, "Configuration file (TOML)."]]

    subCommands = [
        ["localserve", None, LocalserveOptions, "Zero-configuration development mode on loopback."],
    ]

    config: Config
    created: bool = False
    directory: Path | None = None
    #: Applied to the file at each reload (localserve's flags override it).
    adjust: Callable[[Config], Config] | None = None

    def postOptions(self) -> None:
        if self.subCommand == "localserve":
            from .localserve import Overrides, apply_overrides, load_localserve

            if self["config"]:
                raise usage.UsageError("localserve reads DIR/moxtw.toml; do not pass --config")
            sub = self.subOptions
            self.directory = Path(sub["dir"]).absolute()
            overrides = Overrides(
                outgoing_webhook=sub["outgoing-webhook"],
                incoming_webhook=sub["incoming-webhook"],
                webhook_authorization=sub["webhook-authorization"],
                retry_scale=sub["retry-scale"],
            )
            self.adjust = functools.partial(apply_overrides, overrides=overrides)
            try:
                self.config, self.created = load_localserve(self.directory, overrides)
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
            except OSError as e:
                raise usage.UsageError(f"localserve directory {self.directory}: {e}") from None
        else:
            if not self["config"]:
                raise usage.UsageError("pass --config FILE, or use the localserve subcommand")
            try:
                self.config = load_config(self["config"])
            except ConfigError as e:
                raise usage.UsageError(str(e)) from None
        try:
            # The certificate and key must load (logged and swapped again on SIGHUP).
            check_tls_config(self.config.tls)
        except TLSFileError as e:
            raise usage.UsageError(str(e)) from None
        try:
            lock_data_dir(self.config.data_dir)
        except (DataDirInUse, OSError) as e:
            raise usage.UsageError(str(e)) from None


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    from .app import build_service

    reactor_: Any = reactor
    service = build_service(options.config, reactor_, adjust=options.adjust)
    if options.subCommand == "localserve":
        from .localserve import banner

        assert options.directory is not None
        if options.created:
            log.info("localserve: wrote new configuration {path}", path=str(options.directory / "moxtw.toml"))
        log.info("{banner}", banner=banner(options.config, options.directory))
    return service
