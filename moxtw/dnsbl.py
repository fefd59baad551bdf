"""Monitoring-only DNSBL checks of this daemon's outgoing IPs (spec §9), and
``moxtw dnsbl check``.

moxtw never uses a DNSBL to filter incoming mail.  It only watches whether the IPs it
sends from are listed in the zones of ``[dnsbl] zones``, so the operator hears about a
listing (log line, metric, ``moxtw dnsbl check``) before recipients start refusing mail.

* **Lookup** (RFC 5782, as mox's ``dnsbl.Lookup``): an A query for the IP's reversed
  octets (IPv6: reversed nibbles) under the zone.  NXDOMAIN, or no A records, is ``pass``;
  an A answer means listed, ``fail``, with the zone's TXT record as explanation
  (``fail: <TXT>``); any other DNS trouble is ``temperror: dnsbl: dns error: <error>``.
  An A answer outside 127.0.0.0/8, or in 127.255.255.0/24 (Spamhaus' "query refused"
  codes, e.g. for queries through a public resolver), is not a listing: temperror.
* **IPs**: ``[dnsbl] ips`` when set, used as given (loopback or private addresses too: the
  operator chose them, e.g. the public IPs of a NAT).  Otherwise detected: the specific
  addresses of the SMTP listeners, or, when an SMTP listener binds every address or there
  is none (a webapi-only daemon still sends mail), the machine's interface addresses;
  detected addresses that are not globally routable (loopback, private, link-local, ...)
  are skipped.
* **Schedule** (as mox's ``monitorDNSBL``): a check at startup; then the monitor wakes
  every 5 minutes and checks again when 100 or more outgoing SMTP connections were made
  since the last check, or the last check is 3 hours old.  Lookups run one at a time in a
  thread pool, 1 second apart, through the ``[dns]`` resolver (without cache).
* **Results**: kept on the monitor (``results``, for the admin API's ``DNSBLStatus``),
  logged when an (IP, zone) status changes, exported as the gauge
  ``moxtw_dnsbl_ips_success{zone,ip}`` (1 pass, 0 listed or error, -1 for every series when
  the IPs could not be listed) and the histogram ``moxtw_dnsbl_lookup_duration_seconds``,
  and written to ``<data_dir>/dnsbl-status.json`` after each check (with the time of the
  check), from which HTTP worker processes answer ``DNSBLStatus`` and show the web page.
* **A check now** (the web page's "Check now"): :meth:`DNSBLMonitor.request_check` wakes
  the monitor for a check at once (after the one running, if any); an HTTP worker asks
  the main process for it (:class:`DNSBLSource`).

Not run in localserve, nor when no zone is configured.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import dns.exception
import dns.name
import dns.resolver
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .address import domain_to_ascii
from .config import Config, DNSConfig
from .delivery.mx import make_dns_resolver
from .metrics import dnsbl_ips_success, dnsbl_lookup_duration

__all__ = [
    "DNSBLMonitor",
    "DNSBLSource",
    "DNSBLStatus",
    "Lookup",
    "build_monitor",
    "check_now",
    "lookup",
    "monitoring_enabled",
    "outgoing_ips",
    "query_name",
]

PASS = "pass"
FAIL = "fail"
TEMPERROR = "temperror"

#: Where the monitor writes its results for the HTTP worker processes (in data_dir).
STATE_FILE = "dnsbl-status.json"

#: (ip, zone) → status string.
Results = dict[str, dict[str, str]]

log = Logger()


def monitoring_enabled(config: Config) -> bool:
    """Whether the daemon runs the DNSBL monitor: zones configured, not localserve."""
    return bool(config.dnsbl_zones) and not config.localserve


def kind(status: str) -> str:
    """``pass``, ``fail`` or ``temperror`` of a status string."""
    return status.split(":", 1)[0]


def zone_label(zone: str) -> str:
    """A zone as mox's ``dns.Domain.LogString``: the name, or ``unicode/ascii`` for IDNs."""
    ascii_name = domain_to_ascii(zone)
    return zone if ascii_name == zone else f"{zone}/{ascii_name}"


# --- one lookup ---------------------------------------------------------------------------


def query_name(ip: str, zone: str) -> str:
    """The name queried for ``ip`` in ``zone``: ``4.3.2.1.zone.`` for 1.2.3.4; for IPv6
    the 32 nibbles reversed (RFC 5782 §2.1, §2.4)."""
    pointer = ipaddress.ip_address(ip).reverse_pointer  # 4.3.2.1.in-addr.arpa
    reversed_part = pointer.rsplit(".", 2)[0]
    return f"{reversed_part}.{domain_to_ascii(zone).rstrip('.')}."


_LOOPBACK_NET = ipaddress.IPv4Network("127.0.0.0/8")
_REFUSED_NET = ipaddress.IPv4Network("127.255.255.0/24")


def _temperror(error: str) -> str:
    return f"{TEMPERROR}: dnsbl: dns error: {error}"


def lookup(resolver: dns.resolver.Resolver, ip: str, zone: str) -> str:
    """Blocking: the status of ``ip`` in ``zone`` (``pass``, ``fail[: expl]`` or
    ``temperror: ...``), with ``resolver`` (dnspython)."""
    name = dns.name.from_text(query_name(ip, zone))
    try:
        answer = resolver.resolve(name, "A", search=False, raise_on_no_answer=False)
    except dns.resolver.NXDOMAIN:
        return PASS
    except dns.resolver.LifetimeTimeout:
        return _temperror(f"lookup {name} A: timeout")
    except dns.exception.DNSException as e:
        return _temperror(f"lookup {name} A: {e}")
    if answer.rrset is None:  # the name exists without A records: not listed (as mox)
        return PASS
    addresses = [ipaddress.IPv4Address(rr.address) for rr in answer.rrset]
    if not any(a in _LOOPBACK_NET and a not in _REFUSED_NET for a in addresses):
        shown = ", ".join(str(a) for a in addresses)
        return _temperror(
            f"lookup {name} A: answer {shown} is not a listing (listings are in 127.0.0.0/8;"
            " 127.255.255.x means the DNSBL refused the query, e.g. from a public resolver)"
        )
    try:
        txt = resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
    except dns.exception.DNSException:
        return FAIL
    if txt.rrset is None:
        return FAIL
    texts = [b"".join(rr.strings).decode("utf-8", "replace") for rr in txt.rrset]
    explanation = "; ".join(t for t in texts if t)
    return f"{FAIL}: {explanation}" if explanation else FAIL


def dnsbl_resolver(config: DNSConfig) -> dns.resolver.Resolver:
    """The ``[dns]`` resolver without its answer cache: a check must ask the DNSBL, not
    repeat what it said until the TTL ran out."""
    resolver = make_dns_resolver(config)
    resolver.cache = None
    return resolver


@attrs.define(eq=False)
class Lookup:
    """:func:`lookup` on ``pool`` (never the reactor thread); observes
    ``moxtw_dnsbl_lookup_duration_seconds``."""

    resolver: dns.resolver.Resolver
    pool: ThreadPool
    reactor: IReactorFromThreads

    def _timed(self, ip: str, zone: str) -> tuple[str, float]:
        start = time.monotonic()
        status = lookup(self.resolver, ip, zone)
        return status, time.monotonic() - start

    async def __call__(self, ip: str, zone: str) -> str:
        status, duration = await deferToThreadPool(self.reactor, self.pool, self._timed, ip, zone)
        dnsbl_lookup_duration.labels(zone, kind(status)).observe(duration)
        return status


# --- our IPs ------------------------------------------------------------------------------


class _IfAddrs(ctypes.Structure):
    pass


_IfAddrs._fields_ = [
    ("ifa_next", ctypes.POINTER(_IfAddrs)),
    ("ifa_name", ctypes.c_char_p),
    ("ifa_flags", ctypes.c_uint),
    ("ifa_addr", ctypes.c_void_p),
    ("ifa_netmask", ctypes.c_void_p),
    ("ifa_ifu", ctypes.c_void_p),
    ("ifa_data", ctypes.c_void_p),
]


def interface_ips() -> list[str]:
    """Every address of the machine's interfaces (``getifaddrs(3)``); OSError if they
    cannot be listed."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        getifaddrs, freeifaddrs = libc.getifaddrs, libc.freeifaddrs
    except (OSError, AttributeError) as e:
        raise OSError(f"cannot list interface addresses: {e}") from None
    head = ctypes.POINTER(_IfAddrs)()
    if getifaddrs(ctypes.byref(head)) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"getifaddrs: {os.strerror(errno)}")
    # struct sockaddr: Linux has a 16-bit family first; the BSDs a length byte, then an
    # 8-bit family.  The address is at offset 4 (IPv4) or 8 (IPv6) in both.
    bsd = not sys.platform.startswith("linux")
    ips: list[str] = []
    try:
        entry = head
        while entry:
            address = entry.contents.ifa_addr
            if address:
                if bsd:
                    family = ctypes.c_uint8.from_address(address + 1).value
                else:
                    family = ctypes.c_uint16.from_address(address).value
                if family == 2:  # AF_INET is 2 everywhere
                    ips.append(str(ipaddress.IPv4Address(ctypes.string_at(address + 4, 4))))
                elif family == int(socket.AF_INET6):
                    ips.append(str(ipaddress.IPv6Address(ctypes.string_at(address + 8, 16))))
            entry = entry.contents.ifa_next
    finally:
        freeifaddrs(head)
    return list(dict.fromkeys(ips))


def _parse_endpoint(description: str) -> tuple[list[str], dict[str, str]]:
    """An endpoint string's positional and keyword arguments (``["tcp", "25"]``,
    ``{"interface": "::1"}``), without building anything."""
    from twisted.internet.endpoints import _parse

    args, kw = _parse(description)
    return [str(a) for a in args] or [""], {str(k): str(v) for k, v in kw.items()}


def _listener_addresses(config: Config) -> tuple[list[str], bool]:
    """The specific addresses of the SMTP listeners, and whether any listener binds every
    address (or there is no SMTP listener)."""
    descriptions = (*config.listeners.smtp, *config.listeners.submission, *config.listeners.submissions)
    specific: list[str] = []
    everything = not descriptions
    for description in descriptions:
        args, kw = _parse_endpoint(description)
        if args[0].lower() not in ("tcp", "tcp6", "ssl"):
            continue
        interface = str(kw.get("interface") or "")
        try:
            ip = ipaddress.ip_address(interface)
        except ValueError:
            everything = True
            continue
        if ip.is_unspecified:
            everything = True
        else:
            specific.append(str(ip))
    return specific, everything


def outgoing_ips(config: Config, interfaces: Callable[[], list[str]] = interface_ips) -> list[str]:
    """The IPs to check: ``[dnsbl] ips`` as given, else the detected public addresses
    (see the module docstring).  OSError when interface addresses cannot be listed."""
    if config.dnsbl_ips:
        return list(config.dnsbl_ips)
    specific, everything = _listener_addresses(config)
    candidates = specific + (interfaces() if everything else [])
    return [ip for ip in dict.fromkeys(candidates) if ipaddress.ip_address(ip).is_global]


# --- state shared with the HTTP workers ---------------------------------------------------------


def state_path(config: Config) -> Path:
    return config.data_dir / STATE_FILE


def write_state(
    path: Path, zones: Sequence[str], results: Mapping[str, Mapping[str, str]], checked: float | None = None
) -> None:
    """Blocking: replace ``path`` with the results and the time of the check that gave
    them (temporary file and rename)."""
    state: dict[str, Any] = {"zones": list(zones), "results": results}
    if checked is not None:
        state["checked"] = checked
    data = json.dumps(state, sort_keys=True).encode("utf-8")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_state(path: Path, zones: Sequence[str]) -> Results:
    """The results the monitor last wrote, for ``zones`` only ({} without a file)."""
    return read_status(path, zones)[0]


def read_status(path: Path, zones: Sequence[str]) -> tuple[Results, float | None]:
    """The results the monitor last wrote, for ``zones`` only, and when that check
    started (({}, None) without a file)."""
    try:
        state = json.loads(path.read_bytes())
        stored = state["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}, None
    wanted = set(zones)
    results: Results = {}
    if isinstance(stored, dict):
        for ip, by_zone in stored.items():
            if isinstance(by_zone, dict):
                results[ip] = {z: s for z, s in by_zone.items() if z in wanted and isinstance(s, str)}
    checked = state.get("checked") if isinstance(state, dict) else None
    if not isinstance(checked, (int, float)) or isinstance(checked, bool):
        return results, None
    return results, float(checked)


def file_results(config: Config) -> Callable[[], Results]:
    """``DNSBLStatus``'s results in a process without the monitor (an HTTP worker)."""
    zones = [zone_label(z) for z in config.dnsbl_zones]
    path = state_path(config)

    def results() -> Results:
        if not monitoring_enabled(config):
            return {}
        return read_state(path, zones)

    return results


@attrs.frozen
class DNSBLStatus:
    """What the web pages show: the monitored zones (labels; empty: nothing monitored),
    the latest result of every (IP, zone) pair, and when the last check started."""

    #: Zones of ``[dnsbl] zones`` (labels), monitored or not.
    zones: tuple[str, ...]
    #: Whether the daemon checks them (zones configured, not localserve).
    monitoring: bool
    results: Results
    checked: float | None


@attrs.define(eq=False)
class DNSBLSource:
    """The DNSBL monitor's latest results as one process sees them: the main process
    from the monitor itself (:meth:`for_monitor`), an HTTP worker from the state file
    (:meth:`from_file`, the default of :func:`moxtw.app.build_parts`).

    ``request_check`` asks for a check now (:meth:`DNSBLMonitor.request_check`, or in a
    worker a message to the main process); None: not possible in this process.
    """

    zones: tuple[str, ...]
    monitoring: bool
    read: Callable[[], tuple[Results, float | None]]
    request_check: Callable[[], object] | None = None

    @classmethod
    def from_file(cls, config: Config) -> DNSBLSource:
        zones = tuple(zone_label(z) for z in config.dnsbl_zones)
        path = state_path(config)
        enabled = monitoring_enabled(config)

        def read() -> tuple[Results, float | None]:
            # A small file, read on the reactor thread as DNSBLStatus does.
            return read_status(path, zones) if enabled else ({}, None)

        return cls(zones, enabled, read)

    @classmethod
    def for_monitor(cls, monitor: DNSBLMonitor) -> DNSBLSource:
        return cls(
            tuple(zone_label(z) for z in monitor.zones),
            True,
            lambda: (monitor.snapshot(), monitor.last_check),
            monitor.request_check,
        )

    def status(self) -> DNSBLStatus:
        results, checked = self.read()
        return DNSBLStatus(self.zones, self.monitoring, results, checked)


# --- the monitor ----------------------------------------------------------------------------


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


@attrs.define(slots=False, eq=False)
class DNSBLMonitor(Service):
    """Checks ``ips()`` against ``zones`` on ``clock``'s schedule (module docstring).

    ``lookup(ip, zone)`` gives a status string; ``save(zones, results, checked)``, if
    set, is awaited after each check (``checked``: when it started).  Outgoing
    connections are counted with :meth:`count_connections` (the SMTP transport's
    ``on_connections``); :meth:`request_check` asks for a check now.
    """

    zones: tuple[str, ...]
    ips: Callable[[], list[str]]
    lookup: Callable[[str, str], Awaitable[str]]
    clock: IReactorTime
    #: Pause between two lookups (mox: 1 s), so a check is gentle on the DNSBLs.
    pause: float = 1.0
    interval: float = 300.0
    max_age: float = 3 * 3600.0
    connections_per_check: int = 100
    save: Callable[[Sequence[str], Results, float], Awaitable[None]] | None = None
    #: A pool the monitor starts and stops (the one ``lookup`` uses), if any.
    pool: ThreadPool | None = None
    name: str = "dnsbl"

    #: ip → zone label → status: the latest result of every monitored pair.
    results: Results = attrs.field(init=False, factory=dict)
    #: Outgoing connections counted so far, and the count at the last check.
    connections: int = attrs.field(init=False, default=0)
    checks: int = attrs.field(init=False, default=0)
    last_check: float | None = attrs.field(init=False, default=None)
    _connections_at_check: int = attrs.field(init=False, default=0)
    #: (zone label, ip) pairs that have a gauge series.
    _series: set[tuple[str, str]] = attrs.field(init=False, factory=set)
    _loop: Deferred[None] | None = attrs.field(init=False, default=None)
    _waiting: Deferred[Any] | None = attrs.field(init=False, default=None)
    _no_ips: bool = attrs.field(init=False, default=False)
    #: A check was asked for (:meth:`request_check`); the sleep between wake-ups.
    _requested: bool = attrs.field(init=False, default=False)
    _sleep: Deferred[None] | None = attrs.field(init=False, default=None)

    log = Logger()

    # --- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        if self.pool is not None:
            self.pool.start()
        self._loop = Deferred.fromCoroutine(self._run())

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        loop, self._loop = self._loop, None
        if self._waiting is not None:
            self._waiting.cancel()
        if self.pool is not None:
            # A lookup still in its thread ends within the [dns] timeout.
            self.pool.stop()
        return loop

    def count_connections(self, n: int = 1) -> None:
        """``n`` outgoing SMTP connections were made."""
        self.connections += n

    def snapshot(self) -> Results:
        """A copy of the latest results."""
        return {ip: dict(by_zone) for ip, by_zone in self.results.items()}

    def request_check(self) -> bool:
        """Check at once (after the check running, if any: requests meanwhile make one
        more); False when the monitor does not run."""
        if not self.running:
            return False
        self._requested = True
        sleep, self._sleep = self._sleep, None
        if sleep is not None:
            sleep.cancel()  # wakes _run (see _pause)
        return True

    def due(self) -> bool:
        """Whether the next wake-up checks: asked for, never checked,
        ``connections_per_check`` new outgoing connections, or the last check
        ``max_age`` old."""
        if self._requested or self.last_check is None:
            return True
        if self.connections - self._connections_at_check >= self.connections_per_check:
            return True
        return self.clock.seconds() - self.last_check >= self.max_age

    async def _wait(self, d: Deferred[Any] | Awaitable[Any]) -> Any:
        waiting = d if isinstance(d, Deferred) else Deferred.fromCoroutine(_awaited(d))
        self._waiting = waiting
        try:
            return await waiting
        finally:
            self._waiting = None

    async def _run(self) -> None:
        try:
            while self.running:
                if self.due():
                    try:
                        await self.check()
                    except CancelledError:
                        raise
                    except Exception:
                        self.log.failure("dnsbl check")
                if not self.running:
                    break
                if not self._requested:
                    await self._pause()
        except CancelledError:
            pass

    async def _pause(self) -> None:
        """Sleep ``interval`` seconds, or until :meth:`request_check` (which cancels the
        sleep; stopping cancels it through ``_waiting`` and ends the loop)."""
        sleep = deferLater(self.clock, self.interval, lambda: None)
        self._sleep = sleep
        try:
            await self._wait(sleep)
        except CancelledError:
            if self._sleep is sleep or not self.running:  # stopped, not woken
                raise
        finally:
            if self._sleep is sleep:
                self._sleep = None

    # --- a check ---------------------------------------------------------------------------

    def _set(self, zone: str, ip: str, value: float) -> None:
        dnsbl_ips_success.labels(zone, ip).set(value)
        self._series.add((zone, ip))

    async def check(self) -> None:
        """Look up every (IP, zone) pair once (``pause`` apart)."""
        self.last_check = checked = self.clock.seconds()
        self._requested = False
        self._connections_at_check = self.connections
        self.checks += 1
        labels = [zone_label(z) for z in self.zones]
        try:
            ips = self.ips()
        except OSError as e:
            self.log.error("dnsbl: cannot list our IPs, nothing checked: {error}", error=str(e))
            for zone, ip in self._series:
                dnsbl_ips_success.labels(zone, ip).set(-1)
            return
        if not ips and not self._no_ips:
            self.log.warn("dnsbl: no public IPs found to check; set [dnsbl] ips")
        self._no_ips = not ips
        self._prune(ips, labels)
        first = True
        for ip in ips:
            for zone, label in zip(self.zones, labels, strict=True):
                if not first and self.pause > 0:
                    await self._wait(deferLater(self.clock, self.pause, lambda: None))
                first = False
                status = await self._wait(self.lookup(ip, zone))
                self._set(label, ip, 1.0 if status == PASS else 0.0)
                previous = self.results.setdefault(ip, {}).get(label)
                self.results[ip][label] = status
                if previous != status:
                    self._log_change(ip, label, previous, status)
        # Saved after every check (the time of the check changes; the first check also
        # replaces what an earlier run left).
        if self.save is not None:
            try:
                await self._wait(self.save(labels, self.snapshot(), checked))
            except CancelledError:
                raise
            except Exception:
                self.log.failure("dnsbl: saving the results")

    def _prune(self, ips: Sequence[str], labels: Sequence[str]) -> None:
        """Forget results and gauge series of pairs no longer monitored."""
        for zone, ip in list(self._series):
            if ip not in ips or zone not in labels:
                dnsbl_ips_success.remove(zone, ip)
                self._series.discard((zone, ip))
        for ip in list(self.results):
            if ip not in ips:
                del self.results[ip]
                continue
            for zone in list(self.results[ip]):
                if zone not in labels:
                    del self.results[ip][zone]

    def _log_change(self, ip: str, zone: str, previous: str | None, status: str) -> None:
        was = previous if previous is not None else "unknown"
        if status == PASS:
            self.log.info("dnsbl: {ip} is not listed in {zone}: {status} (was {was})", ip=ip, zone=zone, status=status, was=was)
        elif kind(status) == FAIL:
            self.log.warn("dnsbl: {ip} is listed in {zone}: {status} (was {was})", ip=ip, zone=zone, status=status, was=was)
        else:
            self.log.warn("dnsbl: {ip} in {zone}: lookup failed: {status} (was {was})", ip=ip, zone=zone, status=status, was=was)


def build_monitor(config: Config, reactor: Any) -> DNSBLMonitor | None:
    """The daemon's monitor (None when :func:`monitoring_enabled` is false), with its own
    one-thread pool for lookups and the state file for the HTTP workers."""
    if not monitoring_enabled(config):
        return None
    pool = ThreadPool(minthreads=0, maxthreads=1, name="moxtw-dnsbl")
    path = state_path(config)

    async def save(zones: Sequence[str], results: Results, checked: float) -> None:
        await deferToThreadPool(reactor, pool, write_state, path, zones, results, checked)

    return DNSBLMonitor(
        zones=config.dnsbl_zones,
        ips=lambda: outgoing_ips(config),
        lookup=Lookup(dnsbl_resolver(config.dns), pool, reactor),
        clock=reactor,
        save=save,
        pool=pool,
    )


# --- moxtw dnsbl check --------------------------------------------------------------------------


def check_now(config: Config, pause: float = 0.0) -> list[Any]:
    """Blocking: check every (IP, zone) now with the configured resolver; the admin API's
    ``DNSBLStatus`` shape, ``[results, using, monitoring]``."""
    from .admin.types import domain

    results: Results = {}
    if config.dnsbl_zones:
        resolver = dnsbl_resolver(config.dns)
        for i, ip in enumerate(outgoing_ips(config)):
            results[ip] = {}
            for j, zone in enumerate(config.dnsbl_zones):
                if (i or j) and pause:
                    time.sleep(pause)
                results[ip][zone_label(zone)] = lookup(resolver, ip, zone)
    monitoring = [{"ASCII": d.ASCII, "Unicode": d.Unicode} for d in map(domain, config.dnsbl_zones)] or None
    return [results, None, monitoring]


def _admin_url(config: Config) -> str | None:
    """The admin API URL of ``config``'s first HTTP listener."""
    from .web import ADMIN_PATH

    for description in config.listeners.http:
        args, kw = _parse_endpoint(description)
        port = args[1] if len(args) > 1 else kw.get("port", "")
        if args[0].lower() not in ("tcp", "tcp6") or not port:
            continue
        host = kw.get("interface", "")
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}{ADMIN_PATH}"
    return None


def _zone_names(monitoring: Any) -> list[str]:
    names = []
    for d in monitoring or []:
        if isinstance(d, dict):
            ascii_name, unicode_name = d.get("ASCII", ""), d.get("Unicode", "")
            names.append(f"{unicode_name}/{ascii_name}" if unicode_name else ascii_name)
    return names


def format_status(status: Any) -> tuple[str, bool]:
    """``DNSBLStatus``'s answer as text, and whether every lookup passed."""
    results, _, monitoring = status
    zones = _zone_names(monitoring)
    if not zones:
        return "no DNSBL zones are monitored (set [dnsbl] zones; not in localserve)", True
    rows = [(ip, zone, by_zone[zone]) for ip, by_zone in sorted((results or {}).items()) for zone in sorted(by_zone)]
    lines = [f"zones: {', '.join(zones)} (monitoring only: incoming mail is never filtered by DNSBL)"]
    if not rows:
        lines.append("no results yet (the daemon checks at startup, one lookup a second), or no IPs to check")
    else:
        width_ip = max(len("IP"), *(len(r[0]) for r in rows))
        width_zone = max(len("ZONE"), *(len(r[1]) for r in rows))
        lines.append(f"{'IP':<{width_ip}}  {'ZONE':<{width_zone}}  STATUS")
        lines += [f"{ip:<{width_ip}}  {zone:<{width_zone}}  {s}" for ip, zone, s in rows]
    return "\n".join(lines), all(r[2] == PASS for r in rows)


def cmd_check(args: argparse.Namespace) -> int:
    from .admin.client import AdminClientError
    from .cli import admin_client
    from .config import ConfigError, load_config

    config: Config | None = None
    if args.now or args.config:
        try:
            config = load_config(args.config or "moxtw.toml")
        except ConfigError as e:
            print(str(e), file=sys.stderr)
            return 1
    if args.now:
        assert config is not None
        try:
            status = check_now(config)
        except OSError as e:
            print(f"moxtw: {e}", file=sys.stderr)
            return 1
    else:
        if config is not None and not args.admin_url and not os.environ.get("MOXTW_ADMIN_URL"):
            args.admin_url = _admin_url(config)
        try:
            status = admin_client(args).call("DNSBLStatus")
        except AdminClientError as e:
            print(f"moxtw: {e}", file=sys.stderr)
            return 1
    text, all_pass = format_status(status)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(text)
    return 0 if all_pass else 3


def add_cli(subparsers: Any) -> None:
    """Register ``moxtw dnsbl check`` on the ``moxtw`` command's subparsers."""
    from .cli import admin_options

    dnsbl = subparsers.add_parser("dnsbl", help="monitoring-only DNSBL checks of our outgoing IPs")
    sub = dnsbl.add_subparsers(dest="dnsbl_command", required=True, metavar="COMMAND")
    check = sub.add_parser(
        "check",
        parents=[admin_options()],
        help="print whether our IPs are listed in the [dnsbl] zones",
        description="Print the running daemon's latest DNSBL results per IP and zone (admin API "
        "DNSBLStatus), or with --now look them up at once from the configuration, without a "
        "daemon.  Exit status: 0 all pass (or nothing monitored), 3 an IP is listed or a "
        "lookup failed, 1 error.",
    )
    check.add_argument(
        "--config", "-c",
        help="configuration file: read by --now (default: moxtw.toml); without --now it gives "
        "the admin API address (its first http listener) unless --admin-url is set",
    )
    check.add_argument(
        "--now", action="store_true",
        help="look up now with the configured zones, IPs and [dns] resolver instead of asking the daemon",
    )
    check.set_defaults(func=cmd_check)
