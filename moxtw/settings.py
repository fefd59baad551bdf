"""Account settings that change while moxtw runs: read, edited in the configuration file,
and applied to the running daemon without a restart.

One implementation, several front ends: the web pages, the admin API
(``AccountSettingsGet``, ``AccountSettingsSave``, ``ConfigReload``) and the command line
(``moxtw account show|set|unset``, ``moxtw reload``) all go through this module.

**The editable settings** of an account (:class:`AccountSettings`): its outgoing and
incoming webhook (url, authorization, events, signing_secret, max_in_flight), the keep
periods of retired messages and webhooks, its FromID login addresses, its daily limits
and ``login_disabled``.  :meth:`AccountSettings.redacted` is the view for display: the
signing secret and the authorization value are never shown in full (``whsec_…Ab12``).

**Editing** (:func:`update_account`) changes the TOML file with tomlkit, so comments,
layout and every other key stay byte for byte as they were; the whole new text is
validated with the real loader (:func:`moxtw.config.parse_config`; a problem refuses the
change with the loader's message and leaves the file untouched) and written atomically
(temporary file, fsync, rename; owner, group and mode kept).  Writers are serialised
with ``flock`` on a lock file next to the configuration (``.moxtw.toml.lock``), so the
daemon and a ``moxtw account set`` can write at once; a writer that does not take the
lock (an editor) is detected by comparing the file's contents just before the rename,
and the change is then applied again on the fresh text.  A secret or authorization
that is blank, or equal to its redacted form, is kept as it is.

**Applying** (:class:`LiveSettings`, :class:`ConfigReloader`) follows one path whatever
triggered it (SIGHUP, the admin API, the CLI): the file is read and validated in a
thread, compared with what runs, and the account changes are applied by replacing the
entries of the daemon's one shared ``config.accounts`` dict in place (every component
reads ``config.accounts[name]`` when it needs it) and rebuilding the address index
(:meth:`moxtw.accounts.Accounts.rebuild`).  Accounts may be added and removed; the
admin password hash is applied too.  Everything else (listeners, data_dir, hostname,
domains, tls paths, the queue/webhooks/webapi/dns/dnsbl sections, hold rules) is logged
as needing a restart and left as it is.  A file that does not load is logged and the
running configuration stays.

**HTTP worker processes** (``[webapi] workers``) get the exact text the main process
applied: after each reload the main process writes it to every worker's standard input
(``R<length>\\n<text>``), and the worker applies it the same way.  A worker that
changes settings (an admin API call it served) writes ``c`` to the main process and
waits for its answer (``a<json>\\n``), which the main process sends after the reload
and after the new text, so the change is in effect in every process before the call
returns.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import attrs
import tomlkit
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from .config import AccountConfig, Config, ConfigError, WebhookConfig, format_duration, parse_config

if TYPE_CHECKING:
    from .accounts import Accounts
    from .tls import TLSReloader
    from .workers import HTTPWorkers

__all__ = [
    "AccountSettings",
    "ConfigReloader",
    "LiveSettings",
    "OWNER_EDITABLE",
    "ReloadResult",
    "SaveResult",
    "SettingsConflict",
    "SettingsError",
    "SettingsOps",
    "UpdateResult",
    "WorkerSettingsLink",
    "add_cli",
    "diff_config",
    "parse_assignments",
    "redact",
    "update_account",
    "write_atomic",
]

log = Logger()

#: Seconds :func:`update_account` waits for another writer's lock before giving up.
LOCK_TIMEOUT = 10.0
#: Times :func:`update_account` applies a change again when the file changed under it.
WRITE_ATTEMPTS = 3


class SettingsError(Exception):
    """A change that cannot be made; ``str()`` is a message for the user."""


class SettingsConflict(SettingsError):
    """The settings or the file changed since they were read."""


# --- the file -------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically: a temporary file in the same directory,
    fsynced, then renamed over it (and the directory fsynced).  The file's mode, owner and
    group are kept (``root:moxtw`` for a service's file), where allowed; a new file is
    0600."""
    st = path.stat() if path.exists() else None
    mode = st.st_mode & 0o777 if st is not None else 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        try:
            os.write(fd, text.encode("utf-8"))
            os.fchmod(fd, mode)
            if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                with contextlib.suppress(PermissionError):
                    os.fchown(fd, st.st_uid, st.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def lock_path(config_path: Path) -> Path:
    """The lock file of a configuration file: ``.NAME.lock`` next to it."""
    return config_path.with_name(f".{config_path.name}.lock")


@contextlib.contextmanager
def config_lock(config_path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the exclusive ``flock`` of ``config_path``'s lock file (blocking: call it in a
    thread in the daemon).  The lock file is created readable by everyone (flock needs
    only a read-only descriptor), so root's CLI and the daemon's user share it."""
    path = lock_path(config_path)
    try:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o644)  # whatever the umask: the daemon's user opens it too
        except FileExistsError:
            fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        raise SettingsError(f"cannot open the lock file {path}: {e.strerror}{_write_hint(e)}") from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise SettingsError(
                        f"{config_path} is being changed by another writer (lock {path} held for {timeout:g}s)"
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _write_hint(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (
            " (the daemon needs write access to the configuration's directory to save settings; "
            "see 'Changing account settings without a restart' in docs/operator-guide.md, "
            "or use `moxtw account set` as root)"
        )
    return ""


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the settings ------------------------------------------------------------------------------


def redact(value: str) -> str:
    """A secret for display: ``whsec_…Ab12``, ``Bearer …wxyz``; the last four characters
    only when at least 16 remain, nothing of a short value ("" stays "")."""
    if not value:
        return ""
    prefix = ""
    if value.startswith("whsec_"):
        prefix = "whsec_"
    else:
        scheme, space, _ = value.partition(" ")
        if space and 0 < len(scheme) <= 16 and scheme.isalpha():
            prefix = scheme + " "
    rest = value[len(prefix) :]
    return prefix + "\u2026" + (rest[-4:] if len(rest) >= 16 else "")


def _redacted_hook(hook: WebhookConfig | None) -> WebhookConfig | None:
    if hook is None:
        return None
    return attrs.evolve(hook, authorization=redact(hook.authorization), signing_secret=redact(hook.signing_secret))


def duration_text(seconds: float) -> str:
    """A keep period as the configuration writes it (``"72h"``, ``"1m30s"``, ``"500ms"``)."""
    ms = int(round(seconds * 1000))
    whole, rest = divmod(ms, 1000)
    text = format_duration(whole) if whole else ""
    if rest:
        text += f"{rest}ms"
    return text or "0"


def _hook_json(hook: WebhookConfig | None, outgoing: bool) -> dict[str, Any] | None:
    if hook is None:
        return None
    out: dict[str, Any] = {
        "url": hook.url,
        "authorization": hook.authorization,
        "signing_secret": hook.signing_secret,
        "max_in_flight": hook.max_in_flight,
    }
    if outgoing:
        out["events"] = list(hook.events)
    return out


@attrs.frozen
class AccountSettings:
    """The settings of one account that can be changed while moxtw runs.

    Keep periods are seconds (0: not kept); ``events`` empty means every event.  Use
    :meth:`redacted` for anything shown to a person or sent over the network.
    """

    account: str
    outgoing_webhook: WebhookConfig | None = None
    incoming_webhook: WebhookConfig | None = None
    keep_retired_messages: float = 0.0
    keep_retired_webhooks: float = 0.0
    fromid_login_addresses: tuple[str, ...] = ()
    max_outgoing_messages_per_day: int = 1000
    max_first_time_recipients_per_day: int = 200
    login_disabled: str = ""

    @classmethod
    def from_account(cls, account: AccountConfig) -> AccountSettings:
        return cls(
            account=account.name,
            outgoing_webhook=account.outgoing_webhook,
            incoming_webhook=account.incoming_webhook,
            keep_retired_messages=account.keep_retired_messages,
            keep_retired_webhooks=account.keep_retired_webhooks,
            fromid_login_addresses=account.fromid_login_addresses,
            max_outgoing_messages_per_day=account.max_outgoing_messages_per_day,
            max_first_time_recipients_per_day=account.max_first_time_recipients_per_day,
            login_disabled=account.login_disabled,
        )

    @classmethod
    def from_config(cls, config: Config, account: str) -> AccountSettings:
        acc = config.accounts.get(account)
        if acc is None:
            raise SettingsError(f"no account {account!r}")
        return cls.from_account(acc)

    def redacted(self) -> AccountSettings:
        """These settings with the webhooks' authorization and signing secret redacted."""
        return attrs.evolve(
            self,
            outgoing_webhook=_redacted_hook(self.outgoing_webhook),
            incoming_webhook=_redacted_hook(self.incoming_webhook),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON object keyed like the configuration file (keep periods as durations such
        as "72h").  Redact first: ``settings.redacted().to_json()``."""
        return {
            "outgoing_webhook": _hook_json(self.outgoing_webhook, True),
            "incoming_webhook": _hook_json(self.incoming_webhook, False),
            "keep_retired_messages": duration_text(self.keep_retired_messages),
            "keep_retired_webhooks": duration_text(self.keep_retired_webhooks),
            "fromid_login_addresses": list(self.fromid_login_addresses),
            "max_outgoing_messages_per_day": self.max_outgoing_messages_per_day,
            "max_first_time_recipients_per_day": self.max_first_time_recipients_per_day,
            "login_disabled": self.login_disabled,
        }

    def version(self) -> str:
        """A short hash of the settings (secrets included): pass it back to
        :func:`update_account` to refuse a change if the settings changed meanwhile."""
        full = self.to_json()
        full["account"] = self.account
        # Keep periods exactly, not as rounded text.
        full["keep"] = [self.keep_retired_messages, self.keep_retired_webhooks]
        return hashlib.sha256(json.dumps(full, sort_keys=True).encode()).hexdigest()[:16]


# --- changes ------------------------------------------------------------------------------------

#: Value kinds of the editable keys.
STR, SECRET, URL, INT, LIST, DURATION = "str", "secret", "url", "int", "list", "duration"

_HOOK_KEYS = {"url": URL, "authorization": SECRET, "signing_secret": SECRET, "max_in_flight": INT}
WEBHOOK_KEYS: dict[str, dict[str, str]] = {
    "outgoing_webhook": {**_HOOK_KEYS, "events": LIST},
    "incoming_webhook": dict(_HOOK_KEYS),
}
#: The editable keys of ``[accounts.NAME]`` and their kinds (webhooks: :data:`WEBHOOK_KEYS`).
ACCOUNT_KEYS: dict[str, str] = {
    "keep_retired_messages": DURATION,
    "keep_retired_webhooks": DURATION,
    "fromid_login_addresses": LIST,
    "max_outgoing_messages_per_day": INT,
    "max_first_time_recipients_per_day": INT,
    "login_disabled": STR,
}
#: Every editable key, dotted, for messages and ``moxtw account set --help``.
EDITABLE_KEYS: tuple[str, ...] = (
    *(f"{hook}.{key}" for hook, keys in WEBHOOK_KEYS.items() for key in keys),
    *WEBHOOK_KEYS,
    *ACCOUNT_KEYS,
)


#: What an account's owner may change on the account pages (the rest is the admin's):
#: its webhooks and keep periods.  Pass as ``allowed`` to :meth:`SettingsOps.save`.
OWNER_EDITABLE: frozenset[str] = frozenset({*WEBHOOK_KEYS, "keep_retired_messages", "keep_retired_webhooks"})


def _allowed(key: str, allowed: Collection[str] | None) -> bool:
    """Whether dotted ``key`` is in ``allowed`` (a webhook's name allows all its keys)."""
    return allowed is None or key in allowed or key.partition(".")[0] in allowed


class _Remove:
    def __repr__(self) -> str:
        return "REMOVE"


#: An edit's value: remove the key (or the whole webhook table).
REMOVE: Any = _Remove()

#: One edit: the key path below ``[accounts.NAME]`` and the TOML value (or :data:`REMOVE`).
Edit = tuple[tuple[str, ...], Any]


def _flatten(changes: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``{"outgoing_webhook": {"url": u}}`` and ``{"outgoing_webhook.url": u}`` alike →
    ``[("outgoing_webhook.url", u)]``; a webhook set to None stays whole."""
    if not isinstance(changes, Mapping):
        raise SettingsError(f"expected an object of settings, got {_show(changes)}")
    out: list[tuple[str, Any]] = []
    for key, value in changes.items():
        if not isinstance(key, str):
            raise SettingsError(f"setting names are strings, got {key!r}")
        if key in WEBHOOK_KEYS and isinstance(value, Mapping):
            for sub, v in value.items():
                out.append((f"{key}.{sub}", v))
        else:
            out.append((key, value))
    return out


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, (str, int, float, list, dict, bool, type(None))) else repr(value)


def _convert(key: str, kind: str, value: Any, current: str) -> Any:
    """The TOML value for ``key`` (REMOVE, or None for "keep as it is")."""
    if value is None:
        return REMOVE
    if kind in (STR, URL, SECRET):
        if not isinstance(value, str):
            raise SettingsError(f"{key}: expected a string, got {_show(value)}")
        if kind == SECRET and (value == "" or value == current or value == redact(current)):
            return None  # blank or shown redacted: keep the secret
        if kind == STR and value == "":
            return REMOVE
        return value
    if kind == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"{key}: expected an integer, got {_show(value)}")
        return value
    if kind == LIST:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{key}: expected a list of strings, got {_show(value)}")
        return list(value) if value else REMOVE
    if kind == DURATION:
        if isinstance(value, str):
            return value.strip() or REMOVE
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return duration_text(float(value))
        raise SettingsError(f'{key}: expected a duration such as "72h", got {_show(value)}')
    raise AssertionError(kind)


def _current_secret(account: AccountConfig, hook: str, key: str) -> str:
    config: WebhookConfig | None = getattr(account, hook)
    return "" if config is None else str(getattr(config, key))


def plan_edits(
    account: AccountConfig, changes: Mapping[str, Any], allowed: Collection[str] | None = None
) -> list[Edit]:
    """Check ``changes`` (nested or dotted keys, as :data:`EDITABLE_KEYS`) against the
    account's current values and turn them into edits.

    Values: strings, integers, lists of strings as in the file; keep periods also as
    seconds.  None removes a key (its default applies) or a whole webhook; an empty
    webhook url removes the webhook too.  A blank authorization or signing secret, or
    one equal to its redacted form, keeps the current one.  ``allowed`` (e.g.
    :data:`OWNER_EDITABLE`) limits the keys that may be changed.
    """
    edits: list[Edit] = []
    removed_hooks: set[str] = set()
    for key, value in _flatten(changes):
        where = f"accounts.{account.name}.{key}"
        if key in EDITABLE_KEYS and not _allowed(key, allowed):
            raise SettingsError(f"{where}: cannot be changed here")
        if key in WEBHOOK_KEYS:
            if value is not None:
                raise SettingsError(f"{where}: expected an object of webhook settings or null, got {_show(value)}")
            edits.append(((key,), REMOVE))
            removed_hooks.add(key)
            continue
        hook, dot, sub = key.partition(".")
        if dot and hook in WEBHOOK_KEYS:
            kind = WEBHOOK_KEYS[hook].get(sub)
            if kind is None:
                raise SettingsError(f"{where}: not an editable setting (editable: {', '.join(EDITABLE_KEYS)})")
            converted = _convert(where, kind, value, _current_secret(account, hook, sub) if kind == SECRET else "")
            if kind == URL and converted in ("", REMOVE):
                edits.append(((hook,), REMOVE))
                removed_hooks.add(hook)
            elif converted is not None:
                edits.append(((hook, sub), converted))
            continue
        kind = ACCOUNT_KEYS.get(key)
        if kind is None:
            raise SettingsError(f"{where}: not an editable setting (editable: {', '.join(EDITABLE_KEYS)})")
        converted = _convert(where, kind, value, "")
        if converted is not None:
            edits.append(((key,), converted))
    # A webhook removed in the same change wins over edits of its keys.
    return [e for e in edits if len(e[0]) == 1 or e[0][0] not in removed_hooks]


def parse_assignments(assignments: Iterable[str | tuple[str, str]], unset: Iterable[str] = ()) -> dict[str, Any]:
    """``KEY=VALUE`` texts (the command line) or (key, value) pairs (an HTML form) as
    changes for :func:`update_account`.

    Lists (``events``, ``fromid_login_addresses``) are comma-separated; integers are
    decimal; ``KEY=`` is "empty" (removes a webhook when KEY is its url, keeps a secret);
    each key in ``unset`` is removed (its default applies; a webhook name removes the
    webhook).
    """
    changes: dict[str, Any] = {}
    for item in assignments:
        if isinstance(item, tuple):
            key, value = item
        else:
            key, eq, value = item.partition("=")
            if not eq:
                raise SettingsError(f"expected KEY=VALUE, got {item!r}")
        key = key.strip()
        hook, dot, sub = key.partition(".")
        kind = WEBHOOK_KEYS[hook].get(sub) if dot and hook in WEBHOOK_KEYS else ACCOUNT_KEYS.get(key)
        if kind is None:
            raise SettingsError(f"{key}: not an editable setting (editable: {', '.join(EDITABLE_KEYS)})")
        if kind == LIST:
            changes[key] = [v.strip() for v in value.split(",") if v.strip()]
        elif kind == INT:
            try:
                changes[key] = int(value.strip())
            except ValueError:
                raise SettingsError(f"{key}: expected an integer, got {value!r}") from None
        else:
            changes[key] = value.strip() if kind != SECRET else value
    for key in unset:
        key = key.strip()
        if key not in EDITABLE_KEYS:
            raise SettingsError(f"{key}: not an editable setting (editable: {', '.join(EDITABLE_KEYS)})")
        changes[key] = None
    return changes


# --- editing the TOML text ---------------------------------------------------------------------


def _is_table(item: Any) -> bool:
    return isinstance(item, (tomlkit.items.Table, tomlkit.items.AoT))


def _set_key(table: Any, key: str, value: Any) -> None:
    """Set ``key`` in a tomlkit table: in place if present (its comment stays), else
    after the table's last key (before trailing comments and sub-tables)."""
    if key in table:
        table[key] = value
        return
    container: Any = getattr(table, "value", None)
    body = getattr(container, "body", None)
    if isinstance(table, tomlkit.items.Table) and container is not None and body is not None:
        last = None
        for k, item in body:
            if k is not None and not _is_table(item):
                last = k
        if last is not None:
            try:
                container._insert_after(last, key, value)
                return
            except Exception:  # an unusual layout: fall back to tomlkit's own placement
                pass
    table[key] = value


def _apply_plain(doc: dict[str, Any], account: str, edits: Sequence[Edit]) -> dict[str, Any]:
    """The edits applied to the parsed (tomllib) document: what the new text must parse to."""
    table = doc["accounts"][account]
    for path, value in edits:
        if len(path) == 1:
            if value is REMOVE:
                table.pop(path[0], None)
            else:
                table[path[0]] = value
        elif value is REMOVE:
            table.get(path[0], {}).pop(path[1], None)
        else:
            table.setdefault(path[0], {})[path[1]] = value
    return doc


def edit_account_text(text: str, account: str, edits: Sequence[Edit]) -> str:
    """``text`` with ``edits`` applied to ``[accounts.ACCOUNT]``, everything else as it was.

    The result is checked to parse to exactly the old document with the edits applied;
    a layout tomlkit cannot edit faithfully is refused (:class:`SettingsError`).
    """
    try:
        doc = tomlkit.parse(text)
        before = tomllib.loads(text)
    except Exception as e:  # tomlkit and tomllib raise their own parse errors
        raise SettingsError(f"the configuration is not valid TOML: {e}") from None
    accounts = doc.get("accounts")
    if accounts is None or account not in accounts or not isinstance(before["accounts"].get(account), dict):
        raise SettingsError(f"no account {account!r} in the configuration")
    table = accounts[account]
    for path, value in edits:
        if len(path) == 1:
            key = path[0]
            if value is REMOVE:
                if key in table:
                    del table[key]
            else:
                _set_key(table, key, value)
            continue
        hook_name, key = path
        hook = table.get(hook_name)
        if value is REMOVE and hook is None:
            continue
        if hook is None:
            hook = tomlkit.table()
            hook.add(key, value)
            hook.add(tomlkit.nl())
            table.append(hook_name, hook)
            continue
        if not hasattr(hook, "__setitem__") or not hasattr(hook, "__contains__"):
            raise SettingsError(f"accounts.{account}.{hook_name}: expected a table")
        if value is REMOVE:
            if key in hook:
                del hook[key]
        else:
            _set_key(hook, key, value)
    new_text: str = doc.as_string()
    # A webhook table added or removed at the end of the file leaves no extra blank line.
    while new_text.endswith("\n\n") and not text.endswith("\n\n"):
        new_text = new_text[:-1]
    try:
        after = tomllib.loads(new_text)
    except tomllib.TOMLDecodeError:
        after = None
    if after != _apply_plain(before, account, edits):
        raise SettingsError(
            f"cannot edit [accounts.{account}] in this file's layout automatically; edit the file by hand"
        )
    return new_text


# --- update_account -----------------------------------------------------------------------------


@attrs.frozen
class UpdateResult:
    """What :func:`update_account` did."""

    path: Path
    #: The new configuration as the loader read it from the new text.
    config: Config
    #: The account's settings before and after (not redacted).
    before: AccountSettings
    settings: AccountSettings
    #: Dotted keys (below the account) whose value changed; empty: nothing was written.
    changed: tuple[str, ...]

    @property
    def written(self) -> bool:
        return bool(self.changed)


def settings_changes(old: AccountSettings, new: AccountSettings) -> tuple[str, ...]:
    """The dotted keys that differ between two settings of one account."""
    out: list[str] = []
    for f in attrs.fields(AccountSettings):
        if f.name == "account":
            continue
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if isinstance(a, WebhookConfig) and isinstance(b, WebhookConfig):
            out += [f"{f.name}.{g.name}" for g in attrs.fields(WebhookConfig) if getattr(a, g.name) != getattr(b, g.name)]
        else:
            out.append(f.name)
    return tuple(out)


def _load_text(path: Path, text: str) -> Config:
    return parse_config(text, base_dir=path.parent, source=path)


def update_account(
    config_path: str | Path,
    account: str,
    changes: Mapping[str, Any],
    *,
    expect_version: str = "",
    allowed: Collection[str] | None = None,
    lock_timeout: float = LOCK_TIMEOUT,
) -> UpdateResult:
    """Change ``account``'s settings in the configuration file (blocking: the daemon
    calls it in a thread).

    ``changes`` and ``allowed`` as :func:`plan_edits` takes them.  With ``expect_version`` (from
    :meth:`AccountSettings.version` of the settings shown to the user), a change is
    refused with :class:`SettingsConflict` if the file's settings of the account differ.
    The whole new text must pass the loader (else :class:`SettingsError` with its
    problems, file untouched).  Nothing is written when nothing changes.  The running
    daemon is not told: reload it (:meth:`SettingsOps.save` does both).
    """
    path = Path(config_path)
    with config_lock(path, lock_timeout):
        for _ in range(WRITE_ATTEMPTS):
            try:
                raw = path.read_bytes()
            except OSError as e:
                raise SettingsError(f"cannot read {path}: {e.strerror}") from None
            text = raw.decode("utf-8", errors="replace")
            try:
                current = _load_text(path, text)
            except ConfigError as e:
                raise SettingsError(f"the configuration file has problems; fix them first:\n{e}") from None
            acc = current.accounts.get(account)
            if acc is None:
                raise SettingsError(f"no account {account!r} in {path}")
            before = AccountSettings.from_account(acc)
            if expect_version and before.version() != expect_version:
                raise SettingsConflict(
                    f"the settings of account {account} changed since they were read; load them again"
                )
            edits = plan_edits(acc, changes, allowed)
            new_text = edit_account_text(text, account, edits) if edits else text
            try:
                new = _load_text(path, new_text)
            except ConfigError as e:
                raise SettingsError(f"not saved, the change makes the configuration invalid:\n{e}") from None
            after = AccountSettings.from_account(new.accounts[account])
            changed = settings_changes(before, after)
            if not changed or new_text == text:
                return UpdateResult(path, current, before, before, ())
            # Written meanwhile by someone who does not take the lock (an editor)?
            if _digest(path.read_bytes()) != _digest(raw):
                continue
            try:
                write_atomic(path, new_text)
            except OSError as e:
                raise SettingsError(f"cannot write {path}: {e.strerror}{_write_hint(e)}") from None
            return UpdateResult(path, new, before, after, changed)
    raise SettingsConflict(f"{path} kept changing while the change was being made; try again")


# --- applying a configuration to a running process -----------------------------------------


@attrs.frozen
class ReloadResult:
    """What a reload changed: ``applied`` and ``needs_restart`` are dotted keys
    (``accounts.mox.outgoing_webhook.url``, ``listeners``)."""

    applied: tuple[str, ...] = ()
    needs_restart: tuple[str, ...] = ()

    def describe(self) -> str:
        parts = []
        if self.applied:
            parts.append(f"applied: {', '.join(self.applied)}")
        if self.needs_restart:
            parts.append(f"not applied, needs a restart: {', '.join(self.needs_restart)}")
        return "; ".join(parts) or "no changes"

    def to_json(self) -> dict[str, Any]:
        return {"applied": list(self.applied), "needs_restart": list(self.needs_restart)}

    @classmethod
    def from_json(cls, value: Any) -> ReloadResult:
        if not isinstance(value, dict):
            raise ValueError("not an object")
        return cls(
            applied=tuple(str(x) for x in value.get("applied") or ()),
            needs_restart=tuple(str(x) for x in value.get("needs_restart") or ()),
        )


#: Top-level settings that only a restart applies.
_RESTART_FIELDS = tuple(
    f.name for f in attrs.fields(Config) if f.name not in ("accounts", "admin_password_hash", "source")
)


def _account_fields(name: str, old: AccountConfig, new: AccountConfig) -> list[str]:
    out: list[str] = []
    for f in attrs.fields(AccountConfig):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if isinstance(a, WebhookConfig) and isinstance(b, WebhookConfig):
            out += [
                f"accounts.{name}.{f.name}.{g.name}"
                for g in attrs.fields(WebhookConfig)
                if getattr(a, g.name) != getattr(b, g.name)
            ]
        else:
            out.append(f"accounts.{name}.{f.name}")
    return out


def _account_domains(account: AccountConfig) -> set[str]:
    names = {account.domain}
    for address in (*account.addresses, *account.fromid_login_addresses):
        names.add(address.rpartition("@")[2].lower())
    return names


@attrs.frozen
class _Diff:
    result: ReloadResult
    apply_accounts: bool
    admin_password_hash: bool


def _diff(live: Config, live_admin_hash: str, new: Config) -> _Diff:
    restart: list[str] = []
    for name in _RESTART_FIELDS:
        a, b = getattr(live, name), getattr(new, name)
        if a == b:
            continue
        if name == "domains":
            for d in sorted(set(a) | set(b)):
                if a.get(d) != b.get(d):
                    restart.append(f"domains.{d}")
        else:
            restart.append(name)
    account_changes: list[str] = []
    for name in live.accounts.keys() - new.accounts.keys():
        account_changes.append(f"accounts.{name} (removed)")
    for name, acc in new.accounts.items():
        old = live.accounts.get(name)
        if old is None:
            account_changes.append(f"accounts.{name} (added)")
        else:
            account_changes += _account_fields(name, old, acc)
    # Accounts are checked against the domains that run: with domains changed under
    # them they wait for the restart (all of them: an address may move between accounts).
    apply_accounts = bool(account_changes) and all(
        live.domains.get(d) is not None and live.domains.get(d) == new.domains.get(d)
        for acc in new.accounts.values()
        for d in _account_domains(acc)
    )
    if account_changes and not apply_accounts:
        restart += [f"{c} (depends on changed domains)" for c in account_changes]
    admin = live_admin_hash != new.admin_password_hash
    applied = (account_changes if apply_accounts else []) + (["admin_password_hash"] if admin else [])
    return _Diff(ReloadResult(tuple(applied), tuple(restart)), apply_accounts, admin)


def diff_config(live: Config, new: Config) -> ReloadResult:
    """What reloading ``new`` over ``live`` would apply and what would need a restart."""
    return _diff(live, live.admin_password_hash, new).result


def _identity(config: Config) -> Config:
    return config


@attrs.define(eq=False)
class LiveSettings:
    """A process's running configuration: the :class:`Config` every component shares,
    whose ``accounts`` dict :meth:`apply` updates in place, and the address index.

    ``adjust`` is applied to each configuration read before it is compared (localserve's
    command-line flags, which override the file); ``on_applied`` are called with the new
    configuration after anything was applied (the admin API and the web pages take the
    admin password hash from it).
    """

    config: Config
    accounts: Accounts
    adjust: Callable[[Config], Config] = _identity
    on_applied: list[Callable[[Config], object]] = attrs.field(factory=list)
    admin_password_hash: str = attrs.field(default=attrs.Factory(lambda self: self.config.admin_password_hash,
                                                                  takes_self=True))

    @property
    def path(self) -> Path | None:
        return self.config.source

    def settings(self, account: str) -> AccountSettings:
        """The settings of ``account`` in effect (:class:`SettingsError` if none)."""
        return AccountSettings.from_config(self.config, account)

    def apply(self, new: Config) -> ReloadResult:
        """Apply what can be applied of ``new`` (on the reactor thread: no component sees
        a half-applied state); returns what was applied and what needs a restart."""
        new = self.adjust(new)
        diff = _diff(self.config, self.admin_password_hash, new)
        if diff.apply_accounts:
            accounts = self.config.accounts
            if not isinstance(accounts, dict):
                raise TypeError("the running configuration's accounts cannot be changed in place")
            for name in list(accounts):
                if name not in new.accounts:
                    del accounts[name]
            for name, acc in new.accounts.items():
                if accounts.get(name) != acc:
                    accounts[name] = acc
            self.accounts.rebuild()
        if diff.admin_password_hash:
            self.admin_password_hash = new.admin_password_hash
        if diff.apply_accounts or diff.admin_password_hash:
            for callback in self.on_applied:
                try:
                    callback(new)
                except Exception:
                    log.failure("applying the reloaded configuration")
        return diff.result


def _read_config(path: Path) -> tuple[bytes, Config]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError([f"cannot read configuration: {e.strerror}"], str(path)) from None
    return raw, _load_text(path, raw.decode("utf-8", errors="replace"))


class ReloadError(Exception):
    """The configuration file could not be reloaded; ``str()`` says why."""


def _log_result(result: ReloadResult, path: object, how: str) -> None:
    if result.applied:
        log.info(
            "configuration {how} from {path}: applied {changes}",
            how=how, path=str(path), changes=", ".join(result.applied),
        )
    elif not result.needs_restart:
        log.info("configuration {how} from {path}: no changes", how=how, path=str(path))
    if result.needs_restart:
        log.warn(
            "configuration {path}: changes that need a restart were not applied: {changes}",
            path=str(path), changes=", ".join(result.needs_restart),
        )


class ConfigReloader(Service):
    """The daemon's one reload path, and its SIGHUP handler (main process).

    :meth:`request_reload` reads and validates the file in a thread, applies it
    (:meth:`LiveSettings.apply`) and sends its text to the HTTP workers; requests while
    a reload runs are served by one more reload after it (so each caller sees a file
    read after its request).  SIGHUP also reloads the TLS certificate (``tls``).
    """

    name = "config-reloader"

    def __init__(
        self,
        live: LiveSettings,
        reactor: Any,
        *,
        tls: TLSReloader | None = None,
        pool: ThreadPool | None = None,
        install_signal: bool = True,
        signum: int = signal.SIGHUP,
    ) -> None:
        self.live = live
        self.reactor = reactor
        self.tls = tls
        self.pool = pool
        self.install_signal = install_signal
        self.signum = signum
        #: The HTTP worker processes, told about each reload (set by the composition root).
        self.workers: HTTPWorkers | None = None
        self._previous: Any = None
        self._installed = False
        self._running: Deferred[None] | None = None
        self._waiting: list[Deferred[ReloadResult]] = []

    def startService(self) -> None:
        Service.startService(self)
        if self.install_signal:
            try:
                self._previous = signal.signal(self.signum, self._on_signal)
                self._installed = True
            except ValueError:  # not the main thread
                log.warn("cannot install a SIGHUP handler: reload with `moxtw reload` instead")

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self._installed:
            if signal.getsignal(self.signum) == self._on_signal:
                signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
        return self._running

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only hand the work to the reactor (see moxtw.tls).
        self.reactor.callFromThread(self.on_sighup)

    def on_sighup(self) -> None:
        """SIGHUP: reload the configuration file and the TLS certificate."""
        if not self.running:
            return
        if self.tls is not None:
            self.tls.request_reload()
        if self.live.path is None:
            return
        log.info("SIGHUP: reloading configuration {path}", path=str(self.live.path))
        self.request_reload().addErrback(lambda f: None)  # logged by _reload

    def request_reload(self) -> Deferred[ReloadResult]:
        """Reload the file (after any reload in flight); fires with what was applied, or
        fails with :class:`ReloadError`."""
        d: Deferred[ReloadResult] = Deferred()
        self._waiting.append(d)
        if self._running is None:
            self._start()
        return d

    def _start(self) -> None:
        waiters, self._waiting = self._waiting, []
        running = Deferred.fromCoroutine(self._reload_for(waiters))
        if not running.called:
            self._running = running

    async def _reload_for(self, waiters: list[Deferred[ReloadResult]]) -> None:
        outcome: ReloadResult | Failure
        try:
            outcome = await self._reload()
        except Exception:
            outcome = Failure()
        self._running = None
        for w in waiters:
            if isinstance(outcome, Failure):
                w.errback(outcome)
            else:
                w.callback(outcome)
        if self._waiting:
            self._start()

    async def _reload(self) -> ReloadResult:
        path = self.live.path
        if path is None:
            raise ReloadError("this daemon has no configuration file to reload")
        pool = self.pool if self.pool is not None else self.reactor.getThreadPool()
        try:
            raw, new = await deferToThreadPool(self.reactor, pool, _read_config, path)
        except ConfigError as e:
            log.error("configuration not reloaded, the running one stays: {error}", error=str(e))
            raise ReloadError(str(e)) from None
        result = self.live.apply(new)
        _log_result(result, path, "reloaded")
        if self.workers is not None:
            self.workers.broadcast(b"R%d\n" % len(raw) + raw)
        return result

    def worker_request(self, number: int) -> None:
        """An HTTP worker asked for a reload (it changed the file): reload, then answer it
        (after the new text, which :meth:`_reload` sent to every worker)."""

        def answer(value: ReloadResult | Failure) -> None:
            if isinstance(value, Failure):
                reply: dict[str, Any] = {"error": str(value.value) if value.check(ReloadError) else "reload failed"}
                if not value.check(ReloadError):
                    log.failure("reload for HTTP worker {number}", value, number=number)
            else:
                reply = value.to_json()
            if self.workers is not None:
                self.workers.send(number, b"a" + json.dumps(reply).encode() + b"\n")

        self.request_reload().addBoth(answer)


class WorkerSettingsLink:
    """The HTTP worker's end: applies the configuration texts the main process sends
    (``R<length>\\n<text>``), and asks it for reloads (``c``, answered ``a<json>\\n``).

    ``write`` sends bytes to the main process (the worker's standard output).
    """

    def __init__(self, live: LiveSettings, write: Callable[[bytes], object]) -> None:
        self.live = live
        self.write = write
        self._buffer = b""
        self._waiting: list[Deferred[ReloadResult]] = []

    def request_reload(self) -> Deferred[ReloadResult]:
        d: Deferred[ReloadResult] = Deferred()
        self._waiting.append(d)
        self.write(b"c")
        return d

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer:
            kind = self._buffer[:1]
            newline = self._buffer.find(b"\n")
            if newline < 0:
                return
            if kind == b"R":
                try:
                    length = int(self._buffer[1:newline])
                except ValueError:
                    log.error("bad configuration frame from the main process; ignored")
                    self._buffer = b""
                    return
                end = newline + 1 + length
                if len(self._buffer) < end:
                    return
                text, self._buffer = self._buffer[newline + 1 : end], self._buffer[end:]
                self._apply(text)
            elif kind == b"a":
                line, self._buffer = self._buffer[1:newline], self._buffer[newline + 1 :]
                self._answer(line)
            else:  # unknown: skip the line
                self._buffer = self._buffer[newline + 1 :]

    def _apply(self, raw: bytes) -> None:
        path = self.live.path
        if path is None:
            return
        try:
            # Short (the main process has just parsed the same text): on the reactor
            # thread, so that the answer that follows finds it applied.
            new = _load_text(path, raw.decode("utf-8", errors="replace"))
        except ConfigError as e:
            log.error("configuration from the main process not applied: {error}", error=str(e))
            return
        result = self.live.apply(new)
        if result.applied:
            log.info("configuration reloaded: applied {changes}", changes=", ".join(result.applied))

    def _answer(self, line: bytes) -> None:
        if not self._waiting:
            return
        d = self._waiting.pop(0)
        try:
            value = json.loads(line)
            if isinstance(value, dict) and "error" in value:
                d.errback(ReloadError(str(value["error"])))
            else:
                d.callback(ReloadResult.from_json(value))
        except ValueError:
            d.errback(ReloadError("bad answer from the main process"))


# --- the operations the admin API and the web pages call ----------------------------------


@attrs.frozen
class SaveResult:
    update: UpdateResult
    #: What the reload applied (None: nothing was written, or no reloader).
    reload: ReloadResult | None

    @property
    def settings(self) -> AccountSettings:
        return self.update.settings

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.update.settings.account,
            "changed": list(self.update.changed),
            "settings": self.update.settings.redacted().to_json(),
            "version": self.update.settings.version(),
            "reload": None if self.reload is None else self.reload.to_json(),
        }


def settings_json(settings: AccountSettings) -> dict[str, Any]:
    """``AccountSettingsGet``'s answer: the redacted settings and their version."""
    return {"account": settings.account, "settings": settings.redacted().to_json(), "version": settings.version()}


@attrs.define(eq=False)
class SettingsOps:
    """Account settings for the admin API and the web pages (main process and workers).

    ``reload`` applies the file to every process (main: :meth:`ConfigReloader.request_reload`;
    an HTTP worker: :meth:`WorkerSettingsLink.request_reload`); None: saves are written
    but not applied.
    """

    live: LiveSettings
    reactor: Any
    reload: Callable[[], Deferred[ReloadResult]] | None = None
    pool: ThreadPool | None = None

    def get(self, account: str) -> AccountSettings:
        """The settings in effect (not redacted: show ``.redacted()``)."""
        return self.live.settings(account)

    async def save(
        self,
        account: str,
        changes: Mapping[str, Any],
        *,
        version: str = "",
        allowed: Collection[str] | None = None,
    ) -> SaveResult:
        """Write ``changes`` (see :func:`plan_edits`) to the file and apply them.

        ``version``: :meth:`AccountSettings.version` of the settings the user edited ("" to
        skip the check).  ``allowed``: the keys this user may change (the account pages:
        :data:`OWNER_EDITABLE`; None: all, for the admin).  Raises :class:`SettingsError`
        (its message is for the user; :class:`SettingsConflict` for a stale version).
        """
        path = self.live.path
        if path is None:
            raise SettingsError("this daemon was started without a configuration file; settings cannot be saved")
        if account not in self.live.config.accounts:
            raise SettingsError(f"no account {account!r}")
        pool = self.pool if self.pool is not None else self.reactor.getThreadPool()
        update: UpdateResult = await deferToThreadPool(
            self.reactor, pool, update_account, path, account, changes, expect_version=version, allowed=allowed
        )
        reload = None
        if update.written:
            log.info(
                "settings of account {account} saved in {path}: {changed}",
                account=account, path=str(path), changed=", ".join(update.changed),
            )
            if self.reload is not None:
                try:
                    reload = await self.reload()
                except ReloadError as e:
                    raise SettingsError(f"saved in {path}, but not applied: {e}") from None
        return SaveResult(update, reload)

    async def reload_now(self) -> ReloadResult:
        """Reload the file now (``moxtw reload``, after a hand edit)."""
        if self.reload is None:
            raise SettingsError("no reloader in this process")
        try:
            return await self.reload()
        except ReloadError as e:
            raise SettingsError(f"configuration not reloaded: {e}") from None


# --- the command line ----------------------------------------------------------------------


def _print_settings(config_path: Path, settings: AccountSettings) -> None:
    data = settings.redacted().to_json()
    print(f"account {settings.account} ({config_path})")
    for hook in ("outgoing_webhook", "incoming_webhook"):
        value = data[hook]
        if value is None:
            print(f"  {hook}: none")
            continue
        print(f"  {hook}:")
        for key, v in value.items():
            if key == "events":
                v = ", ".join(v) or "(all)"
            print(f"    {key} = {v if v != '' else '(none)'}")
    for key in ACCOUNT_KEYS:
        v = data[key]
        if isinstance(v, list):
            v = ", ".join(v) or "(none)"
        print(f"  {key} = {v if v != '' else '(none)'}")


def cmd_show(args: argparse.Namespace) -> int:
    from .config import load_config

    try:
        config = load_config(args.config)
        settings = AccountSettings.from_config(config, args.account)
    except (ConfigError, SettingsError) as e:
        print(f"moxtw: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(settings_json(settings), indent=2))
    else:
        _print_settings(Path(args.config), settings)
    return 0


def _reload_daemon(args: argparse.Namespace, config: Config) -> int:
    from .admin.client import AdminClientError
    from .cli import admin_client
    from .dnsbl import _admin_url

    if not args.admin_url and not os.environ.get("MOXTW_ADMIN_URL"):
        args.admin_url = _admin_url(config)
    try:
        answer = admin_client(args).call("ConfigReload")
    except AdminClientError as e:
        print(
            f"moxtw: the running daemon was not told: {e}\n"
            "apply the change with: systemctl reload moxtw (or kill -HUP the daemon)",
            file=sys.stderr,
        )
        return 1
    result = ReloadResult.from_json(answer)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"daemon reloaded: {result.describe()}")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    try:
        changes = parse_assignments(args.assignments, args.unset)
        update = update_account(args.config, args.account, changes)
    except SettingsError as e:
        print(f"moxtw: {e}", file=sys.stderr)
        return 1
    if not update.written:
        print(f"account {args.account}: no change in {args.config}")
        return 0
    print(f"account {args.account}: changed {', '.join(update.changed)} in {args.config}")
    if args.no_reload:
        print("apply it with: moxtw reload, or systemctl reload moxtw (kill -HUP)")
        return 0
    return _reload_daemon(args, update.config)


def cmd_reload(args: argparse.Namespace) -> int:
    from .config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"moxtw: not reloading, the configuration has problems:\n{e}", file=sys.stderr)
        return 1
    return _reload_daemon(args, config)


def add_cli(subparsers: Any) -> None:
    """``moxtw account show|set|unset`` and ``moxtw reload``."""
    from .cli import admin_options

    conn = admin_options()
    config_help = "configuration file (default: moxtw.toml); its first http listener is the admin API's address"
    a = subparsers.add_parser("account", help="show and change account settings (applied without a restart)")
    sub = a.add_subparsers(dest="account_command", required=True, metavar="COMMAND")

    p = sub.add_parser("show", help="print an account's settings from the configuration file (secrets redacted)")
    p.add_argument("account", help="account name")
    p.add_argument("--config", "-c", default="moxtw.toml", help="configuration file (default: moxtw.toml)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "set",
        parents=[conn],
        help="change settings in the configuration file, then reload the running daemon",
        description="Edit the account's settings in the configuration file (comments and layout kept, "
        "validated, written atomically), then ask the running daemon to apply them over the admin API "
        "(ConfigReload).  Keys: " + ", ".join(EDITABLE_KEYS) + ".  Lists are comma-separated; keep "
        "periods are durations such as 72h; an empty webhook url removes the webhook; a blank secret "
        "keeps the current one (remove one with: moxtw account unset).",
    )
    p.add_argument("account", help="account name")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE", help="settings to change")
    p.add_argument("--config", "-c", default="moxtw.toml", help=config_help)
    p.add_argument("--no-reload", action="store_true", help="only edit the file")
    p.set_defaults(func=cmd_set, unset=[])

    p = sub.add_parser(
        "unset",
        parents=[conn],
        help="remove settings from the configuration file (defaults apply), then reload the running daemon",
        description="Remove keys from the account's settings: their defaults apply (keep periods 0, "
        "daily limits 1000 and 200, all events, no secret); a webhook's name removes the webhook.  "
        "Keys: " + ", ".join(EDITABLE_KEYS) + ".",
    )
    p.add_argument("account", help="account name")
    p.add_argument("unset", nargs="+", metavar="KEY", help="settings to remove")
    p.add_argument("--config", "-c", default="moxtw.toml", help=config_help)
    p.add_argument("--no-reload", action="store_true", help="only edit the file")
    p.set_defaults(func=cmd_set, assignments=[])

    r = subparsers.add_parser(
        "reload",
        parents=[conn],
        help="make the running daemon re-read its configuration file (as SIGHUP does)",
    )
    r.add_argument("--config", "-c", default="moxtw.toml", help=config_help)
    r.set_defaults(func=cmd_reload)
