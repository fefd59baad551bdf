"""Configuration: a TOML file parsed into frozen attrs records.

Parsing is strict: unknown keys are errors, every value is checked, and all problems are
collected and reported together, each with its key path (``accounts.mox.keep_retired_messages:
expected a duration such as "72h", got "soon"``).  Nothing in here touches the network or
starts anything; ``moxtw.tap.Options.postOptions`` calls :func:`load_config` so a bad file
stops ``twistd`` with exit status 1 before the reactor runs.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import attrs

T = TypeVar("T")

#: Outgoing webhook event names (mox's webhook.OutgoingEvent values, and moxtw's
#: "complaint" for ARF feedback reports about our messages).
OUTGOING_EVENTS = (
    "delivered",
    "suppressed",
    "delayed",
    "failed",
    "relayed",
    "expanded",
    "canceled",
    "unrecognized",
    "complaint",
)

KIB = 1024
MIB = 1024 * 1024


class ConfigError(Exception):
    """One or more problems in a configuration file.

    ``problems`` holds ``"key.path: message"`` strings, in file order.
    """

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(
            f"{where}{len(problems)} problem(s) in configuration:\n"
            + "\n".join(f"  {p}" for p in problems)
        )


# --- DKIM names (moxtw.dkim does the signing) ---------------------------------------------

#: Headers that must not be signed: added or changed in transit (RFC 6376 §5.4).  dkimpy
#: refuses these too, except Bcc, which mox signs (an absent Bcc, so none can be added).
DKIM_UNSIGNABLE_HEADERS = frozenset(
    {"received", "return-path", "dkim-signature", "comments", "keywords", "resent-bcc"}
)

_DKIM_SELECTOR_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_FIELD_NAME_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")


def is_dkim_selector(name: str) -> bool:
    """Whether ``name`` can be a DKIM selector: one or more DNS labels."""
    return len(name) <= 253 and bool(_DKIM_SELECTOR_RE.match(name))


def dkim_header_problem(name: str) -> str | None:
    """Why ``name`` cannot be in a selector's ``headers`` list, or None."""
    if not _FIELD_NAME_RE.match(name):
        return f"not a header field name: {_show(name)}"
    if name.lower() in DKIM_UNSIGNABLE_HEADERS:
        return f"header {name} must not be signed: it is added or changed in transit"
    return None


# --- records ---------------------------------------------------------------------------


@attrs.frozen
class Listeners:
    """Endpoint strings (``twisted.internet.endpoints.serverFromString`` syntax) per service.

    Each is a tuple: one daemon may listen on several addresses (127.0.0.1 and ::1).
    Implicit TLS for ``submissions`` is applied by moxtw from ``[tls]``, so these are
    plain ``tcp:``/``tcp6:`` descriptions.
    """

    smtp: tuple[str, ...] = ()
    submission: tuple[str, ...] = ()
    submissions: tuple[str, ...] = ()
    http: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()


@attrs.frozen
class TLSConfig:
    cert_file: Path | None = None
    key_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None and self.key_file is not None


@attrs.frozen
class DKIMSelector:
    name: str
    key_file: Path
    headers: tuple[str, ...] = ()


@attrs.frozen
class DomainConfig:
    name: str
    catchall_separators: tuple[str, ...] = ()
    localpart_case_sensitive: bool = False
    disabled: bool = False
    dkim_selectors: Mapping[str, DKIMSelector] = attrs.field(factory=dict)
    dkim_sign: tuple[str, ...] = ()


@attrs.frozen
class WebhookConfig:
    url: str
    authorization: str = ""
    events: tuple[str, ...] = ()  # outgoing only; empty means all
    signing_secret: str = ""
    max_in_flight: int = 4


@attrs.frozen
class AccountConfig:
    name: str
    domain: str
    addresses: tuple[str, ...]
    password_hash: str
    full_name: str = ""
    fromid_login_addresses: tuple[str, ...] = ()
    keep_retired_messages: float = 0.0  # seconds; 0 = not kept
    keep_retired_webhooks: float = 0.0
    outgoing_webhook: WebhookConfig | None = None
    incoming_webhook: WebhookConfig | None = None
    max_outgoing_messages_per_day: int = 1000
    max_first_time_recipients_per_day: int = 200
    login_disabled: str = ""


@attrs.frozen
class HoldRule:
    account: str = ""
    sender_domain: str = ""
    recipient_domain: str = ""


@attrs.frozen
class DNSConfig:
    nameservers: tuple[tuple[str, int], ...] = ()  # empty: the system's resolv.conf
    timeout: float = 5.0


@attrs.frozen
class QueueConfig:
    port: int = 25  # port dialled on MX hosts
    max_concurrent: int = 100
    max_per_domain: int = 10
    retry_scale: float = 1.0  # divides every retry interval (localserve --retry-scale)


@attrs.frozen
class WebhooksConfig:
    #: Time allowed for one webhook request (connect, send, response body).
    timeout: float = 60.0


@attrs.frozen
class WebAPIConfig:
    path: str = "/webapi/"
    max_request_size: int = 10 * MIB
    #: Extra processes serving the webapi on the same sockets (0: the main process only).
    workers: int = 0


@attrs.frozen
class Config:
    hostname: str
    data_dir: Path
    listeners: Listeners
    tls: TLSConfig
    admin_password_hash: str
    domains: Mapping[str, DomainConfig]
    accounts: Mapping[str, AccountConfig]
    hold_rules: tuple[HoldRule, ...] = ()
    dns: DNSConfig = DNSConfig()
    queue: QueueConfig = QueueConfig()
    webapi: WebAPIConfig = WebAPIConfig()
    webhooks: WebhooksConfig = WebhooksConfig()
    dnsbl_zones: tuple[str, ...] = ()
    dnsbl_ips: tuple[str, ...] = ()
    max_message_size: int = 100 * MIB
    localserve: bool = False
    source: Path | None = None


# --- value parsers -------------------------------------------------------------------

_NO_STRINGS: tuple[str, ...] = ()

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(text: str) -> float:
    """Parse a Go-style duration (``"72h"``, ``"1h30m"``, ``"90s"``, ``"0"``) into seconds."""
    s = text.strip()
    if s == "0":
        return 0.0
    pos = 0
    total = 0.0
    if not s:
        raise ValueError("empty duration")
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None:
            raise ValueError(f"bad duration {text!r}")
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    if not math.isfinite(total):
        raise ValueError("duration too large")
    return total


def format_duration(seconds: float) -> str:
    """Inverse of :func:`parse_duration` for whole seconds (``259200`` → ``"72h"``)."""
    s = int(seconds)
    if s == 0:
        return "0"
    out = []
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out.append(f"{s // size}{unit}")
            s %= size
    return "".join(out)


_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?|B)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": KIB, "M": MIB, "G": 1024 * MIB}


def parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("negative size")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value.strip())
        if m:
            unit = (m.group(2) or "").upper()[:1]
            return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("bad size")


_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def _is_hostname(name: str) -> bool:
    try:
        ascii_name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return bool(_HOSTNAME_RE.match(ascii_name))


def _split_address(text: str) -> tuple[str, str] | None:
    """``local@domain`` → (local, domain lower-cased); ``@domain`` is a catch-all."""
    if text.count("@") < 1:
        return None
    local, _, domain = text.rpartition("@")
    if not domain or not _is_hostname(domain) or any(ord(c) < 0x21 for c in local):
        return None
    return local, domain.lower()


# --- the checker ----------------------------------------------------------------------


class _Checker:
    """Walks a TOML document, collecting problems with their key paths."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self._path: list[str] = []

    def problem(self, message: str, key: str | None = None) -> None:
        path = ".".join(self._path + ([key] if key is not None else []))
        self.problems.append(f"{path}: {message}" if path else message)

    @contextmanager
    def at(self, key: str) -> Iterator[None]:
        self._path.append(key)
        try:
            yield
        finally:
            self._path.pop()

    def table(self, doc: Mapping[str, Any], allowed: set[str]) -> None:
        for key in doc:
            if key not in allowed:
                self.problem(f"unknown key (expected one of: {', '.join(sorted(allowed))})", key)

    def get(
        self,
        doc: Mapping[str, Any],
        key: str,
        kind: str,
        convert: Callable[[Any], T],
        default: T,
        required: bool = False,
    ) -> T:
        if key not in doc:
            if required:
                self.problem(f"missing required {kind}", key)
            return default
        value = doc[key]
        try:
            return convert(value)
        except (ValueError, TypeError) as e:
            detail = f" ({e})" if str(e) and not str(e).startswith("bad") else ""
            self.problem(f"expected {kind}, got {_show(value)}{detail}", key)
            return default

    def sub(self, doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            self.problem(f"expected a table, got {_show(value)}", key)
            return {}
        return value


def _show(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError("")
    return v


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError("")
    return v


def _int(v: object) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError("")
    return v


def _positive_int(v: object) -> int:
    n = _int(v)
    if n <= 0:
        raise ValueError("")
    return n


def _non_negative_int(v: object) -> int:
    n = _int(v)
    if n < 0:
        raise ValueError("")
    return n


def _port(v: object) -> int:
    n = _int(v)
    if not 0 < n < 65536:
        raise ValueError("")
    return n


def _duration(v: object) -> float:
    return parse_duration(_str(v))


def _str_list(v: object) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise TypeError("")
    return tuple(v)


def _endpoint(v: str) -> str:
    from twisted.internet.endpoints import _parseServer

    try:
        _parseServer(v, None)
    except Exception as e:  # noqa: BLE001  (any parse problem is a config problem)
        raise ValueError(str(e)) from None
    return v


# --- the loader ---------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read and validate a configuration file, raising :class:`ConfigError`."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError([f"cannot read configuration: {e.strerror}"], str(p)) from None
    return parse_config(raw.decode("utf-8", errors="replace"), base_dir=p.parent, source=p)


def parse_config(text: str, *, base_dir: Path, source: Path | None = None) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"not valid TOML: {e}"], str(source or "")) from None
    c = _Checker()
    config = _build(c, doc, base_dir, source)
    if c.problems or config is None:
        raise ConfigError(c.problems, str(source or ""))
    return config


def _path(base_dir: Path) -> Callable[[object], Path]:
    def convert(v: object) -> Path:
        s = _str(v)
        if not s:
            raise ValueError("")
        if "\0" in s:
            raise ValueError("a path cannot contain a NUL character")
        try:
            p = Path(s).expanduser()
        except RuntimeError as e:  # "~user" for an unknown user
            raise ValueError(str(e)) from None
        return p if p.is_absolute() else base_dir / p

    return convert


_TOP_KEYS = {
    "hostname",
    "data_dir",
    "admin_password_hash",
    "max_message_size",
    "localserve",
    "listeners",
    "tls",
    "dns",
    "queue",
    "webapi",
    "webhooks",
    "dnsbl",
    "domains",
    "accounts",
    "hold_rules",
}


def _build(c: _Checker, doc: Mapping[str, Any], base_dir: Path, source: Path | None) -> Config | None:
    c.table(doc, _TOP_KEYS)
    hostname = c.get(doc, "hostname", "a host name", _str, "", required=True)
    if hostname and not _is_hostname(hostname):
        c.problem(f"expected a host name, got {_show(hostname)}", "hostname")
    data_dir = c.get(doc, "data_dir", "a directory path", _path(base_dir), base_dir / "data", required=True)
    admin_hash = c.get(doc, "admin_password_hash", "a password hash (see `moxtw setpassword`)", _str, "")
    max_size = c.get(doc, "max_message_size", 'a size such as "100MiB"', parse_size, 100 * MIB)
    localserve = c.get(doc, "localserve", "true or false", _bool, False)

    listeners = _listeners(c, c.sub(doc, "listeners"))
    tls = _tls(c, c.sub(doc, "tls"), base_dir)
    if listeners.submissions and not tls.enabled:
        c.problem("implicit TLS needs [tls] cert_file and key_file", "listeners.submissions")
    dns = _dns(c, c.sub(doc, "dns"))
    queue = _queue(c, c.sub(doc, "queue"))
    webapi = _webapi(c, c.sub(doc, "webapi"))
    webhooks = _webhooks(c, c.sub(doc, "webhooks"))
    zones, ips = _dnsbl(c, c.sub(doc, "dnsbl"))

    domains: dict[str, DomainConfig] = {}
    with c.at("domains"):
        for name, sub in c.sub(doc, "domains").items():
            with c.at(name):
                if not isinstance(sub, dict):
                    c.problem(f"expected a table, got {_show(sub)}")
                    continue
                d = _domain(c, name, sub, base_dir)
                if d is not None:
                    domains[d.name] = d

    accounts: dict[str, AccountConfig] = {}
    with c.at("accounts"):
        for name, sub in c.sub(doc, "accounts").items():
            with c.at(name):
                if not isinstance(sub, dict):
                    c.problem(f"expected a table, got {_show(sub)}")
                    continue
                a = _account(c, name, sub, domains)
                if a is not None:
                    accounts[name] = a
    _check_address_owners(c, accounts)

    rules: list[HoldRule] = []
    raw_rules = doc.get("hold_rules", [])
    if not isinstance(raw_rules, list):
        c.problem("expected an array of tables ([[hold_rules]])", "hold_rules")
        raw_rules = []
    for i, r in enumerate(raw_rules):
        with c.at(f"hold_rules[{i}]"):
            if not isinstance(r, dict):
                c.problem("expected a table")
                continue
            c.table(r, {"account", "sender_domain", "recipient_domain"})
            account = c.get(r, "account", "an account name", _str, "")
            if account and account not in accounts:
                c.problem(f"unknown account {_show(account)}", "account")
            rules.append(
                HoldRule(
                    account=account,
                    sender_domain=c.get(r, "sender_domain", "a domain", _str, "").lower(),
                    recipient_domain=c.get(r, "recipient_domain", "a domain", _str, "").lower(),
                )
            )

    if c.problems:
        return None
    return Config(
        hostname=hostname.lower(),
        data_dir=data_dir,
        listeners=listeners,
        tls=tls,
        admin_password_hash=admin_hash,
        domains=domains,
        accounts=accounts,
        hold_rules=tuple(rules),
        dns=dns,
        queue=queue,
        webapi=webapi,
        webhooks=webhooks,
        dnsbl_zones=zones,
        dnsbl_ips=ips,
        max_message_size=max_size,
        localserve=localserve,
        source=source,
    )


def _listeners(c: _Checker, doc: Mapping[str, Any]) -> Listeners:
    names = ("smtp", "submission", "submissions", "http", "metrics")
    with c.at("listeners"):
        c.table(doc, set(names))
        values: dict[str, tuple[str, ...]] = {}
        for name in names:
            eps = c.get(doc, name, 'a list of endpoint strings such as ["tcp:25"]', _str_list, _NO_STRINGS)
            checked = []
            for i, ep in enumerate(eps):
                try:
                    checked.append(_endpoint(ep))
                except ValueError as e:
                    c.problem(f"bad endpoint {_show(ep)}: {e}", f"{name}[{i}]")
            values[name] = tuple(checked)
    return Listeners(**values)


def _tls(c: _Checker, doc: Mapping[str, Any], base_dir: Path) -> TLSConfig:
    with c.at("tls"):
        c.table(doc, {"cert_file", "key_file"})
        cert = c.get(doc, "cert_file", "a file path", _path(base_dir), None)
        key = c.get(doc, "key_file", "a file path", _path(base_dir), None)
        if (cert is None) != (key is None):
            c.problem("cert_file and key_file go together")
        for label, p in (("cert_file", cert), ("key_file", key)):
            if p is not None and not p.is_file():
                c.problem(f"no such file: {p}", label)
    return TLSConfig(cert_file=cert, key_file=key)


def _nameserver(v: object) -> tuple[str, int]:
    s = _str(v)
    if s.startswith("["):  # [::1]:53
        host, _, port = s[1:].partition("]")
        port = port.removeprefix(":")
    elif s.count(":") == 1:
        host, _, port = s.partition(":")
    else:
        host, port = s, ""
    import ipaddress

    ipaddress.ip_address(host)
    number = int(port) if port else 53
    if not 0 < number < 65536:
        raise ValueError("port out of range")
    return host, number


def _dns(c: _Checker, doc: Mapping[str, Any]) -> DNSConfig:
    with c.at("dns"):
        c.table(doc, {"nameservers", "timeout"})
        servers = []
        for i, s in enumerate(c.get(doc, "nameservers", "a list of IP[:port] strings", _str_list, _NO_STRINGS)):
            try:
                servers.append(_nameserver(s))
            except ValueError:
                c.problem(f'expected an IP address with optional port such as "127.0.0.1:5353", got {_show(s)}', f"nameservers[{i}]")
        timeout = c.get(doc, "timeout", 'a duration such as "5s"', _duration, 5.0)
    return DNSConfig(nameservers=tuple(servers), timeout=timeout)


def _queue(c: _Checker, doc: Mapping[str, Any]) -> QueueConfig:
    with c.at("queue"):
        c.table(doc, {"port", "max_concurrent", "max_per_domain", "retry_scale"})
        return QueueConfig(
            port=c.get(doc, "port", "a port number", _port, 25),
            max_concurrent=c.get(doc, "max_concurrent", "a positive integer", _positive_int, 100),
            max_per_domain=c.get(doc, "max_per_domain", "a positive integer", _positive_int, 10),
            retry_scale=float(c.get(doc, "retry_scale", "a positive integer", _positive_int, 1)),
        )


def _webapi(c: _Checker, doc: Mapping[str, Any]) -> WebAPIConfig:
    with c.at("webapi"):
        c.table(doc, {"path", "max_request_size", "workers"})
        path = c.get(doc, "path", 'a URL path such as "/webapi/"', _str, "/webapi/")
        if not (path.startswith("/") and path.endswith("/")):
            c.problem(f"expected a URL path starting and ending with /, got {_show(path)}", "path")
        size = c.get(doc, "max_request_size", 'a size such as "10MiB"', parse_size, 10 * MIB)
        workers = c.get(doc, "workers", "a number of processes (0 or more)", _non_negative_int, 0)
    return WebAPIConfig(path=path, max_request_size=size, workers=workers)


def _webhooks(c: _Checker, doc: Mapping[str, Any]) -> WebhooksConfig:
    with c.at("webhooks"):
        c.table(doc, {"timeout"})
        timeout = c.get(doc, "timeout", 'a duration such as "60s"', _duration, 60.0)
        if timeout <= 0:
            c.problem(f"expected a positive duration, got {_show(doc['timeout'])}", "timeout")
            timeout = 60.0
    return WebhooksConfig(timeout=timeout)


def _dnsbl(c: _Checker, doc: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``[dnsbl]``: zones as lower-case names without the final dot, IPs normalised; each
    valid and listed once."""
    import ipaddress

    with c.at("dnsbl"):
        c.table(doc, {"zones", "ips"})
        zones: list[str] = []
        for i, z in enumerate(c.get(doc, "zones", "a list of DNS zone names", _str_list, _NO_STRINGS)):
            name = z.strip().rstrip(".").lower()
            if not name or not _is_hostname(name):
                c.problem(f'expected a DNS zone name such as "bl.example.org", got {_show(z)}', f"zones[{i}]")
            elif name in zones:
                c.problem(f"zone {_show(z)} is listed twice", f"zones[{i}]")
            else:
                zones.append(name)
        ips: list[str] = []
        for i, text in enumerate(c.get(doc, "ips", "a list of IP addresses", _str_list, _NO_STRINGS)):
            try:
                ip = str(ipaddress.ip_address(text.strip()))
            except ValueError:
                c.problem(f"expected an IP address, got {_show(text)}", f"ips[{i}]")
                continue
            if ip in ips:
                c.problem(f"IP {_show(text)} is listed twice", f"ips[{i}]")
            else:
                ips.append(ip)
    return tuple(zones), tuple(ips)


def _secret_problem(secret: str) -> str | None:
    """Why a webhook signing secret is unusable (None: it is fine).  The secret itself
    is never part of the message."""
    if not secret.startswith("whsec_"):
        return 'expected a secret starting with "whsec_" (see `moxtw hooks secret`)'
    try:
        key = base64.b64decode(secret[len("whsec_") :], validate=True)
    except binascii.Error:
        return 'expected base64 after "whsec_" (see `moxtw hooks secret`)'
    if len(key) < 16:
        return "expected a secret of at least 16 bytes (see `moxtw hooks secret`)"
    return None


def _domain(c: _Checker, name: str, doc: Mapping[str, Any], base_dir: Path) -> DomainConfig | None:
    if not _is_hostname(name):
        c.problem("domain name is not a valid host name")
        return None
    c.table(doc, {"catchall_separators", "localpart_case_sensitive", "disabled", "dkim"})
    seps = c.get(doc, "catchall_separators", 'a list of separators such as ["+"]', _str_list, _NO_STRINGS)
    for i, s in enumerate(seps):
        if len(s) != 1 or s in '@"\\ ' or ord(s) < 0x21:
            c.problem(f"expected a single character, got {_show(s)}", f"catchall_separators[{i}]")
    selectors: dict[str, DKIMSelector] = {}
    sign: tuple[str, ...] = ()
    dkim = c.sub(doc, "dkim")
    with c.at("dkim"):
        c.table(dkim, {"selectors", "sign"})
        sels = c.sub(dkim, "selectors")
        with c.at("selectors"):
            for sel_name, sel in sels.items():
                with c.at(sel_name):
                    if not isinstance(sel, dict):
                        c.problem(f"expected a table, got {_show(sel)}")
                        continue
                    if not is_dkim_selector(sel_name):
                        c.problem("selector name is not a DNS label (letters, digits, hyphens)")
                    c.table(sel, {"key_file", "headers"})
                    key_file = c.get(sel, "key_file", "a file path", _path(base_dir), base_dir, required=True)
                    if "key_file" in sel:
                        if not key_file.is_file():
                            c.problem(f"no such file: {key_file}", "key_file")
                        else:
                            _check_dkim_key(c, key_file)
                    headers = c.get(sel, "headers", "a list of header names", _str_list, _NO_STRINGS)
                    for i, h in enumerate(headers):
                        bad = dkim_header_problem(h)
                        if bad is not None:
                            c.problem(bad, f"headers[{i}]")
                    if headers and "from" not in (h.lower() for h in headers):
                        c.problem("must include From (RFC 6376 requires signing it)", "headers")
                    selectors[sel_name] = DKIMSelector(name=sel_name, key_file=key_file, headers=headers)
        sign = c.get(dkim, "sign", "a list of selector names", _str_list, _NO_STRINGS)
        for i, s in enumerate(sign):
            if s not in selectors:
                c.problem(f"unknown selector {_show(s)}", f"sign[{i}]")
    return DomainConfig(
        name=name.lower(),
        catchall_separators=seps,
        localpart_case_sensitive=c.get(doc, "localpart_case_sensitive", "true or false", _bool, False),
        disabled=c.get(doc, "disabled", "true or false", _bool, False),
        dkim_selectors=selectors,
        dkim_sign=sign,
    )


def _check_dkim_key(c: _Checker, path: Path) -> None:
    from .dkim import DKIMKeyError, parse_private_key

    try:
        pem = path.read_bytes()
    except OSError as e:
        c.problem(f"cannot read {path}: {e.strerror}", "key_file")
        return
    try:
        parse_private_key(pem)
    except DKIMKeyError as e:
        c.problem(f"{path}: {e}", "key_file")


def _webhook(c: _Checker, doc: Mapping[str, Any], key: str, outgoing: bool) -> WebhookConfig | None:
    if key not in doc:
        return None
    sub = c.sub(doc, key)
    with c.at(key):
        allowed = {"url", "authorization", "signing_secret", "max_in_flight"}
        if outgoing:
            allowed.add("events")
        c.table(sub, allowed)
        url = c.get(sub, "url", "an http(s) URL", _str, "", required=True)
        if url and not re.match(r"^https?://[^/\s]+", url):
            c.problem(f"expected an http or https URL, got {_show(url)}", "url")
        events = c.get(sub, "events", "a list of event names", _str_list, _NO_STRINGS)
        for i, e in enumerate(events):
            if e not in OUTGOING_EVENTS:
                c.problem(f"unknown event {_show(e)} (known: {', '.join(OUTGOING_EVENTS)})", f"events[{i}]")
        secret = c.get(sub, "signing_secret", 'a secret such as "whsec_..." (see `moxtw hooks secret`)', _str, "")
        problem = _secret_problem(secret) if secret else None
        if problem is not None:
            c.problem(problem, "signing_secret")
        return WebhookConfig(
            url=url,
            authorization=c.get(sub, "authorization", "a header value", _str, ""),
            events=events,
            signing_secret=secret,
            max_in_flight=c.get(sub, "max_in_flight", "a positive integer", _positive_int, 4),
        )


_ACCOUNT_KEYS = {
    "domain",
    "addresses",
    "password_hash",
    "full_name",
    "fromid_login_addresses",
    "keep_retired_messages",
    "keep_retired_webhooks",
    "outgoing_webhook",
    "incoming_webhook",
    "max_outgoing_messages_per_day",
    "max_first_time_recipients_per_day",
    "login_disabled",
}


def _account(
    c: _Checker, name: str, doc: Mapping[str, Any], domains: Mapping[str, DomainConfig]
) -> AccountConfig | None:
    c.table(doc, _ACCOUNT_KEYS)
    domain = c.get(doc, "domain", "a configured domain name", _str, "", required=True).lower()
    if domain and domain not in domains:
        c.problem(f"unknown domain {_show(domain)}", "domain")
    addresses = c.get(doc, "addresses", 'a list of addresses such as ["you@example.org"]', _str_list, _NO_STRINGS, required=True)
    for i, a in enumerate(addresses):
        parts = _split_address(a)
        if parts is None:
            c.problem(f"expected an address such as you@example.org (or @example.org for catch-all), got {_show(a)}", f"addresses[{i}]")
        elif parts[1] not in domains:
            c.problem(f"address domain {_show(parts[1])} is not a configured domain", f"addresses[{i}]")
        else:
            # As mox: "x+y@d" would be canonicalised to "x@d", possibly another account's
            # address, which would then receive that account's mail and could log in as it.
            for sep in domains[parts[1]].catchall_separators:
                if sep in parts[0]:
                    c.problem(
                        f"localpart of address {_show(a)} includes the domain's catchall separator {_show(sep)}",
                        f"addresses[{i}]",
                    )
    fromid = c.get(doc, "fromid_login_addresses", "a list of login addresses", _str_list, _NO_STRINGS)
    for i, a in enumerate(fromid):
        parts = _split_address(a)
        if parts is None or not parts[0]:
            c.problem(f"expected an address, got {_show(a)}", f"fromid_login_addresses[{i}]")
        elif parts[1] not in domains:
            c.problem(f"address domain {_show(parts[1])} is not a configured domain", f"fromid_login_addresses[{i}]")
        elif not domains[parts[1]].catchall_separators:
            c.problem(
                f"domain {_show(parts[1])} has no catchall_separators, which FromIDs need",
                f"fromid_login_addresses[{i}]",
            )
    return AccountConfig(
        name=name,
        domain=domain,
        addresses=addresses,
        password_hash=c.get(doc, "password_hash", "a password hash (see `moxtw setpassword`)", _str, ""),
        full_name=c.get(doc, "full_name", "a name", _str, ""),
        fromid_login_addresses=fromid,
        keep_retired_messages=c.get(doc, "keep_retired_messages", 'a duration such as "72h"', _duration, 0.0),
        keep_retired_webhooks=c.get(doc, "keep_retired_webhooks", 'a duration such as "72h"', _duration, 0.0),
        outgoing_webhook=_webhook(c, doc, "outgoing_webhook", True),
        incoming_webhook=_webhook(c, doc, "incoming_webhook", False),
        max_outgoing_messages_per_day=c.get(doc, "max_outgoing_messages_per_day", "a positive integer", _positive_int, 1000),
        max_first_time_recipients_per_day=c.get(doc, "max_first_time_recipients_per_day", "a positive integer", _positive_int, 200),
        login_disabled=c.get(doc, "login_disabled", "a message", _str, ""),
    )


def _check_address_owners(c: _Checker, accounts: Mapping[str, AccountConfig]) -> None:
    owner: dict[str, str] = {}
    for name, account in accounts.items():
        for i, address in enumerate(account.addresses):
            key = address.lower()
            if key in owner and owner[key] != name:
                with c.at("accounts"), c.at(name):
                    c.problem(f"address {_show(address)} already belongs to account {_show(owner[key])}", f"addresses[{i}]")
            owner[key] = name


def replace(config: Config, **changes: Any) -> Config:
    """A copy of ``config`` with top-level fields changed (localserve flags use this)."""
    return attrs.evolve(config, **changes)
