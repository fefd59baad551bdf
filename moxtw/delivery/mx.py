"""MX resolution for direct delivery (RFC 5321 §5.1), with dnspython in a dedicated pool.

:class:`Resolver` wraps one ``dns.resolver.Resolver`` built from :class:`DNSConfig` and runs
every (blocking) query through ``deferToThreadPool`` on a small injected ``ThreadPool``,
never on the reactor thread and never on the reactor's default pool (STYLE P7).

* :meth:`Resolver.resolve_hosts` gives the hosts to try for a recipient domain: its MX
  records by preference, or the domain itself (implicit MX) when it has no MX records, or
  the IP of an address literal (``[1.2.3.4]``, ``[IPv6:::1]``).
* :meth:`Resolver.resolve_ips` gives a host's addresses (AAAA, then A).

Failures raise :class:`DNSError` with ``permanent`` set: NXDOMAIN and a null MX
(RFC 7505, ``MX 0 .``) are permanent; SERVFAIL, timeouts and other resolver trouble are
temporary.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import TypeVar

import attrs
import dns.exception
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ..config import DNSConfig

__all__ = ["DNSError", "Host", "Resolver", "make_dns_resolver"]

T = TypeVar("T")

try:  # IDNA 2008 (as mox) when the idna package is there; dnspython's default otherwise.
    _IDNA: dns.name.IDNACodec | None = dns.name.IDNA_2008_Practical
    dns.name.from_unicode("xn--caf-dma.example", idna_codec=_IDNA)
except Exception:  # pragma: no cover - depends on the environment
    _IDNA = None


class DNSError(Exception):
    """A DNS lookup failed; ``permanent`` says whether retrying later can help."""

    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class Host:
    """One host to deliver to, in order of preference.

    ``ip`` is set for an address literal recipient domain (no lookups needed).
    ``implicit`` marks the RFC 5321 §5.1 fallback (the domain itself, no MX records).
    """

    name: str
    preference: int = 0
    ip: str = ""
    implicit: bool = False


def make_dns_resolver(config: DNSConfig) -> dns.resolver.Resolver:
    """A ``dns.resolver.Resolver`` for ``config``: its nameservers (address, port) or, when
    there are none, the system's (resolv.conf); ``timeout`` bounds each whole lookup.

    Answers are cached as their TTLs allow (dnspython's LRU cache, thread-safe): a burst
    of messages to one domain costs one MX lookup, not one per delivery, and
    :class:`Resolver` answers from the cache without going through its thread pool.
    """
    if config.nameservers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [
            dns.nameserver.Do53Nameserver(address, port) for address, port in config.nameservers
        ]
    else:
        resolver = dns.resolver.Resolver(configure=True)
    resolver.lifetime = config.timeout
    resolver.timeout = config.timeout
    resolver.cache = dns.resolver.LRUCache(max_size=10_000)
    return resolver


def _ip_literal(domain: str) -> str | None:
    """The IP of an address literal ``[1.2.3.4]``/``[IPv6:::1]``, else None."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        inner = inner[5:]
        version = 6
    else:
        version = 4
    try:
        ip = ipaddress.ip_address(inner)
    except ValueError as e:
        raise DNSError(f"invalid address literal {domain!r}", permanent=True) from e
    if ip.version != version:
        raise DNSError(f"invalid address literal {domain!r}", permanent=True)
    return str(ip)


@functools.lru_cache(maxsize=4096)
def _name(domain: str) -> dns.name.Name:
    """The absolute DNS name of ``domain`` (IDNA 2008).  Names are immutable, so the
    conversion, costly for every delivery, is kept."""
    try:
        if _IDNA is not None:
            return dns.name.from_unicode(domain.rstrip(".") + ".", idna_codec=_IDNA)
        return dns.name.from_text(domain.rstrip(".") + ".")
    except (dns.exception.DNSException, UnicodeError, ValueError) as e:
        raise DNSError(f"invalid domain {domain!r}: {e}", permanent=True) from e


@functools.lru_cache(maxsize=4096)
def _ip(host: str) -> str | None:
    """``host`` as a normalised IP address if it is one, else None."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _host_text(name: dns.name.Name) -> str:
    return name.to_text(omit_final_dot=True).lower()


@attrs.define
class Resolver:
    """MX and address lookups, run with ``dns_resolver`` on ``pool`` (a small
    ``ThreadPool`` started and stopped by its owner)."""

    dns_resolver: dns.resolver.Resolver
    pool: ThreadPool
    reactor: IReactorFromThreads

    @classmethod
    def from_config(
        cls, config: DNSConfig, pool: ThreadPool, reactor: IReactorFromThreads
    ) -> Resolver:
        return cls(make_dns_resolver(config), pool, reactor)

    async def _in_thread(self, fn: Callable[[], T]) -> T:
        result: T = await deferToThreadPool(self.reactor, self.pool, fn)
        return result

    def _cached(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.resolver.Answer | None:
        """The answer ``resolve`` would take from its cache (unexpired; NODATA included),
        or None.  Reading the cache does not block, so it is done on the calling thread:
        a cache hit costs no trip through the pool."""
        cache = self.dns_resolver.cache
        if cache is None:
            return None
        answer: dns.resolver.Answer | None = cache.get((name, rdtype, dns.rdataclass.IN))
        return answer

    def _query(self, name: dns.name.Name, rdtype: str) -> dns.resolver.Answer:
        """Blocking: runs in the pool.  Raises DNSError; no records → empty answer."""
        try:
            return self.dns_resolver.resolve(
                name, rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN as e:
            raise DNSError(f"{_host_text(name)}: domain does not exist (NXDOMAIN)", permanent=True) from e
        except dns.resolver.NoNameservers as e:
            raise DNSError(f"{_host_text(name)}: {rdtype} lookup failed (SERVFAIL)", permanent=False) from e
        except dns.resolver.LifetimeTimeout as e:
            raise DNSError(f"{_host_text(name)}: {rdtype} lookup timed out", permanent=False) from e
        except dns.exception.DNSException as e:
            raise DNSError(f"{_host_text(name)}: {rdtype} lookup failed: {e}", permanent=False) from e

    async def resolve_hosts(self, domain: str) -> list[Host]:
        """The hosts to try for ``domain``, best preference first (ties keep DNS order)."""
        ip = _ip_literal(domain)
        if ip is not None:
            return [Host(name=domain, ip=ip)]
        name = _name(domain)
        answer = self._cached(name, dns.rdatatype.MX)
        if answer is None:
            answer = await self._in_thread(lambda: self._query(name, "MX"))
        records = [] if answer.rrset is None else list(answer.rrset)
        if not records:
            # RFC 5321 §5.1: no MX records, the domain itself is the host (implicit MX);
            # its address records are looked up when delivering.
            return [Host(name=_host_text(name), preference=0, implicit=True)]
        hosts: list[Host] = []
        null_mx = False
        for rr in records:
            exchange: dns.name.Name = rr.exchange
            if exchange == dns.name.root:
                null_mx = True
                continue
            hosts.append(Host(name=_host_text(exchange), preference=int(rr.preference)))
        if not hosts and null_mx:
            raise DNSError(f"{domain}: domain does not accept mail (null MX)", permanent=True)
        hosts.sort(key=lambda h: h.preference)
        return hosts

    async def resolve_ips(self, hostname: str) -> list[str]:
        """IPv6 then IPv4 addresses of ``hostname`` (an IP address is returned as is).

        Raises DNSError when neither lookup gives an address: permanent when the name does
        not exist or has no address records, temporary if a lookup failed.
        """
        literal = _ip(hostname)
        if literal is not None:
            return [literal]
        name = _name(hostname)
        aaaa, a = self._cached(name, dns.rdatatype.AAAA), self._cached(name, dns.rdatatype.A)
        if aaaa is not None and a is not None:
            ips = [rr.address for answer in (aaaa, a) if answer.rrset is not None for rr in answer.rrset]
            if ips:
                return ips

        def lookup() -> tuple[list[str], DNSError | None]:
            ips: list[str] = []
            error: DNSError | None = None
            for rdtype in ("AAAA", "A"):
                try:
                    answer = self._query(name, rdtype)
                except DNSError as e:
                    if e.permanent:  # NXDOMAIN: the other type will not exist either
                        raise
                    error = e
                    continue
                if answer.rrset is not None:
                    ips += [rr.address for rr in answer.rrset]
            return ips, error

        ips, error = await self._in_thread(lookup)
        if ips:
            return ips
        if error is not None:
            raise error
        raise DNSError(f"{hostname}: no address records", permanent=True)
