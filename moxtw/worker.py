"""An HTTP worker process (started by :class:`moxtw.workers.HTTPWorkers`, not by hand).

``python -m moxtw.worker --config FILE --listen 'HOST|PORT|4' ...`` listens with
``SO_REUSEPORT`` on the addresses the main process listens on and serves the webapi from
the same configuration and store, until SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import protocol
from twisted.internet.error import ReactorNotRunning
from twisted.internet.protocol import connectionDone
from twisted.internet.stdio import StandardIO
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.python.failure import Failure

log = Logger()


class _ParentLink(protocol.Protocol):
    """Standard input/output to the main process; its end (the parent died) stops us."""

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        #: Gets what the main process writes (configuration reloads, moxtw.settings).
        self.receiver: Any = lambda data: None

    def dataReceived(self, data: bytes) -> None:
        self.receiver(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        log.info("main process went away; stopping")
        stop_once(self.reactor)


def stop_once(reactor: Any) -> None:
    """Stop the reactor unless it is stopping already: the main process going away, its
    SIGTERM and the SIGTERM of its death signal can all arrive during one shutdown."""
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def _die_with_parent(parent: int) -> None:
    """On Linux, get SIGTERM when the main process dies (even by SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="moxtw.worker")
    p.add_argument("--config", required=True)
    p.add_argument("--number", default="0")
    p.add_argument("--listen", action="append", default=[], help="HOST|PORT|FAMILY (4 or 6) to listen on")
    args = p.parse_args(argv)

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    from twisted.internet import reactor

    from . import metrics
    from .app import build_parts
    from .config import load_config
    from .workers import reuseport_socket

    r: Any = reactor
    metrics.set_process(f"worker{args.number}")
    parent = os.getppid()
    _die_with_parent(parent)
    # SIGHUP reloads the main process's TLS certificate and configuration; workers have
    # no TLS, get the configuration from the main process (moxtw.settings), and a SIGHUP
    # to the whole process group must not kill them.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = load_config(args.config)
    parts, services = build_parts(config, r)
    pending = [False]
    link = _ParentLink(r)
    StandardIO(link, reactor=r)

    def notify_queued() -> None:
        # Coalesce: one byte per reactor iteration is enough for the main process.
        if not pending[0]:
            pending[0] = True

            def send() -> None:
                pending[0] = False
                if link.transport is not None:
                    link.transport.write(b"q")

            r.callLater(0, send)

    parts.webapi.methods.on_queued = notify_queued
    # Configuration reloads come from the main process; settings saved here ask it for one.
    from .settings import WorkerSettingsLink

    def write(data: bytes) -> None:
        if link.transport is not None:
            link.transport.write(data)

    settings_link = WorkerSettingsLink(parts.settings.live, write)
    link.receiver = settings_link.data_received
    parts.settings.reload = settings_link.request_reload
    # The DNSBL monitor runs in the main process: "Check now" asks it.
    if parts.webui.dnsbl is not None and parts.webui.dnsbl.monitoring:
        parts.webui.dnsbl.request_check = lambda: write(b"d")
    # Admin changes that make messages due (release, reschedule) kick the main
    # process's queue the same way.
    parts.admin.ops.on_changed = notify_queued
    for svc in services:
        svc.startService()
    for spec in args.listen:
        host, port, family = spec.split("|")
        af = socket.AF_INET6 if family == "6" else socket.AF_INET
        sock = reuseport_socket(host, int(port), af)
        r.adoptStreamPort(sock.fileno(), af, parts.site)
        sock.close()

    async def stop() -> None:
        for svc in reversed(services):
            try:
                await maybeDeferred(svc.stopService)
            except Exception:
                log.failure("stopping {name}", name=svc.name)

    from twisted.internet.defer import Deferred, maybeDeferred

    r.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(stop()))
    log.info("serving the webapi on {count} socket(s)", count=len(args.listen))
    # Our own SIGTERM/SIGINT handling: Twisted's calls reactor.stop() for each signal and
    # logs a ReactorNotRunning traceback for the second one.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda n, f: r.callFromThread(stop_once, r))
    r.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
