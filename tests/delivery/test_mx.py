"""MX resolution against a real twisted.names server on 127.0.0.1."""

from __future__ import annotations

import threading
from typing import Any

from twisted.trial.unittest import TestCase

from moxtw.config import DNSConfig
from moxtw.delivery import DNSError, Host
from moxtw.delivery.mx import make_dns_resolver

from .peers import DNSServer, make_resolver, silent_dns_port


class ResolveTests(TestCase):
    def setUp(self) -> None:
        self.dns = DNSServer(self)
        self.zone = self.dns.zone
        self.resolver = make_resolver(self, self.dns.config())

    async def fails(self, coro: Any, permanent: bool) -> DNSError:
        try:
            await coro
        except DNSError as e:
            self.assertEqual(e.permanent, permanent, str(e))
            return e
        raise AssertionError("no DNSError")

    async def test_mx_by_preference(self) -> None:
        self.zone.mx("example.test", (20, "mx2.example.test"), (10, "MX1.example.test"), (30, "mx3.other.test"))
        hosts = await self.resolver.resolve_hosts("example.test")
        self.assertEqual(
            hosts,
            [Host("mx1.example.test", 10), Host("mx2.example.test", 20), Host("mx3.other.test", 30)],
        )

    async def test_implicit_mx(self) -> None:
        # RFC 5321 §5.1: no MX records, the domain's own addresses.
        self.zone.a("plain.test", "127.0.0.1")
        self.zone.aaaa("plain.test", "::1")
        hosts = await self.resolver.resolve_hosts("plain.test")
        self.assertEqual(hosts, [Host("plain.test", 0, implicit=True)])
        self.assertEqual(await self.resolver.resolve_ips("plain.test"), ["::1", "127.0.0.1"])

    async def test_null_mx(self) -> None:
        self.zone.mx("nomail.test", (0, ""))
        e = await self.fails(self.resolver.resolve_hosts("nomail.test"), permanent=True)
        self.assertIn("does not accept mail", str(e))

    async def test_null_mx_among_others_ignored(self) -> None:
        self.zone.mx("mixed.test", (0, ""), (10, "mx.mixed.test"))
        self.assertEqual(await self.resolver.resolve_hosts("mixed.test"), [Host("mx.mixed.test", 10)])

    async def test_nxdomain(self) -> None:
        self.zone.a("exists.test", "127.0.0.1")
        e = await self.fails(self.resolver.resolve_hosts("missing.test"), permanent=True)
        self.assertIn("NXDOMAIN", str(e))
        await self.fails(self.resolver.resolve_ips("missing.test"), permanent=True)

    async def test_servfail(self) -> None:
        self.zone.servfail.add("broken.test")
        e = await self.fails(self.resolver.resolve_hosts("broken.test"), permanent=False)
        self.assertIn("SERVFAIL", str(e))
        await self.fails(self.resolver.resolve_ips("broken.test"), permanent=False)

    async def test_no_address_records(self) -> None:
        self.zone.mx("mxonly.test", (10, "mx.elsewhere.test"))
        e = await self.fails(self.resolver.resolve_ips("mxonly.test"), permanent=True)
        self.assertIn("no address records", str(e))

    async def test_ip_literals(self) -> None:
        self.assertEqual(await self.resolver.resolve_hosts("[127.0.0.1]"), [Host("[127.0.0.1]", ip="127.0.0.1")])
        self.assertEqual(await self.resolver.resolve_hosts("[IPv6:::1]"), [Host("[IPv6:::1]", ip="::1")])
        await self.fails(self.resolver.resolve_hosts("[IPv6:127.0.0.1]"), permanent=True)
        await self.fails(self.resolver.resolve_hosts("[nonsense]"), permanent=True)
        self.assertEqual(self.zone.queries, [])

    async def test_idna(self) -> None:
        self.zone.mx("xn--caf-dma.test", (10, "mx.xn--caf-dma.test"))
        self.assertEqual(await self.resolver.resolve_hosts("café.test"), [Host("mx.xn--caf-dma.test", 10)])

    async def test_runs_in_pool_not_reactor_thread(self) -> None:
        seen: list[str] = []
        original = self.resolver.dns_resolver.resolve

        def spy(*args, **kwargs):
            seen.append(threading.current_thread().name)
            return original(*args, **kwargs)

        self.resolver.dns_resolver.resolve = spy  # type: ignore[method-assign]
        self.zone.a("plain.test", "127.0.0.1")
        await self.resolver.resolve_hosts("plain.test")
        self.assertTrue(seen)
        self.assertNotIn(threading.main_thread().name, seen)


class CacheTests(TestCase):
    """Answers still in dnspython's cache are read on the calling thread: no query, no
    trip through the pool; what is not cached (or not usable) still goes there."""

    def setUp(self) -> None:
        self.dns = DNSServer(self)
        self.zone = self.dns.zone
        self.resolver = make_resolver(self, self.dns.config())
        self.calls: list[tuple[str, str]] = []
        original = self.resolver.dns_resolver.resolve

        def spy(name: Any, rdtype: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls.append((str(name), str(rdtype)))
            return original(name, rdtype, *args, **kwargs)

        self.resolver.dns_resolver.resolve = spy  # type: ignore[method-assign]

    async def test_cached_answers_need_no_thread(self) -> None:
        self.zone.mx("example.test", (20, "mx2.example.test"), (10, "mx1.example.test"))
        self.zone.a("mx1.example.test", "127.0.0.1")
        self.zone.aaaa("mx1.example.test", "::1")
        hosts = await self.resolver.resolve_hosts("example.test")
        ips = await self.resolver.resolve_ips("mx1.example.test")
        self.assertEqual(self.calls, [("example.test.", "MX"), ("mx1.example.test.", "AAAA"), ("mx1.example.test.", "A")])
        queries = list(self.zone.queries)
        self.calls.clear()
        self.assertEqual(await self.resolver.resolve_hosts("example.test"), hosts)
        self.assertEqual(await self.resolver.resolve_ips("mx1.example.test"), ips)
        self.assertEqual(ips, ["::1", "127.0.0.1"])
        self.assertEqual((self.calls, self.zone.queries), ([], queries))

    async def test_cached_nodata_is_the_same_answer(self) -> None:
        # No MX: implicit MX from the cache too.  Only A records: cached AAAA NODATA.
        self.zone.a("plain.test", "127.0.0.1")
        for _ in range(2):
            self.assertEqual(await self.resolver.resolve_hosts("plain.test"), [Host("plain.test", 0, implicit=True)])
            self.assertEqual(await self.resolver.resolve_ips("plain.test"), ["127.0.0.1"])
        self.assertEqual(len(self.calls), 3)

    async def test_no_addresses_from_the_cache_still_fails(self) -> None:
        self.zone.mx("mxonly.test", (10, "mx.elsewhere.test"))
        for _ in range(2):
            try:
                await self.resolver.resolve_ips("mxonly.test")
            except DNSError as e:
                self.assertTrue(e.permanent)
                self.assertIn("no address records", str(e))
            else:
                raise AssertionError("no DNSError")

    async def test_expired_answer_is_asked_again(self) -> None:
        self.zone.mx("example.test", (10, "mx.example.test"))
        await self.resolver.resolve_hosts("example.test")
        cache = self.resolver.dns_resolver.cache
        for node in cache.data.values():
            node.value.expiration = 0.0
        await self.resolver.resolve_hosts("example.test")
        self.assertEqual(self.calls, [("example.test.", "MX")] * 2)


class TimeoutTests(TestCase):
    async def test_timeout_is_temporary(self) -> None:
        port = silent_dns_port(self)
        resolver = make_resolver(self, DNSConfig(nameservers=(("127.0.0.1", port),), timeout=0.3))
        try:
            await resolver.resolve_hosts("example.test")
        except DNSError as e:
            self.assertFalse(e.permanent)
            self.assertIn("timed out", str(e))
        else:
            raise AssertionError("no timeout")


class ConfigTests(TestCase):
    def test_nameservers_and_timeout_from_config(self) -> None:
        r = make_dns_resolver(DNSConfig(nameservers=(("127.0.0.1", 5353), ("::1", 53)), timeout=1.5))
        self.assertEqual([(n.address, n.port) for n in r.nameservers], [("127.0.0.1", 5353), ("::1", 53)])  # type: ignore[union-attr]
        self.assertEqual(r.lifetime, 1.5)
