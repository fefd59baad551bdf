"""Monitoring-only DNSBL checks (moxtw.dnsbl): the schedule on a test clock, logging and
metrics, lookups against a real twisted.names server on 127.0.0.1, the admin API's
DNSBLStatus, and ``moxtw dnsbl check`` against a real daemon."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import attrs
from prometheus_client import REGISTRY
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import capturedLogs
from twisted.names import dns
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw import dnsbl
from moxtw.app import build_service
from moxtw.config import Config, ConfigError, DNSConfig, load_config, parse_config
from moxtw.dnsbl import DNSBLMonitor, Lookup, dnsbl_resolver, outgoing_ips, query_name
from moxtw.localserve import ensure_config
from moxtw.store import sqlite_store
from tests.admin.fixture import AdminFixture
from tests.delivery.peers import DNSServer, silent_dns_port
from tests.helpers import ROOT, Daemon, free_port, http_client

reactor: Any = _reactor
LISTED_NAME = "2.0.0.127.bl.test"


def gauge(zone: str, ip: str) -> float | None:
    value: float | None = REGISTRY.get_sample_value("moxtw_dnsbl_ips_success", {"zone": zone, "ip": ip})
    return value


def durations(zone: str, status: str) -> float:
    value = REGISTRY.get_sample_value("moxtw_dnsbl_lookup_duration_seconds_count", {"zone": zone, "status": status})
    return value or 0.0


def minimal_config(extra: str, base_dir: Path | None = None) -> Config:
    text = 'hostname = "mail.example.org"\ndata_dir = "data"\n' + extra
    return parse_config(text, base_dir=base_dir or Path("/nonexistent"))


# --- names, configuration, IPs ------------------------------------------------------------------


class NamesTests(SynchronousTestCase):
    def test_query_names(self) -> None:
        self.assertEqual(query_name("127.0.0.2", "bl.test"), "2.0.0.127.bl.test.")
        self.assertEqual(query_name("192.0.2.10", "Zen.Example."), "10.2.0.192.Zen.Example.")
        # RFC 5782 §2.4: 32 nibbles, least significant first.
        self.assertEqual(
            query_name("2001:db8::1", "bl.test"),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test.",
        )
        self.assertEqual(query_name("127.0.0.2", "bücher.test"), "2.0.0.127.xn--bcher-kva.test.")
        self.assertRaises(ValueError, query_name, "not-an-ip", "bl.test")

    def test_zone_labels_and_kinds(self) -> None:
        self.assertEqual(dnsbl.zone_label("bl.test"), "bl.test")
        self.assertEqual(dnsbl.zone_label("bücher.test"), "bücher.test/xn--bcher-kva.test")
        self.assertEqual(dnsbl.kind("fail: listed"), "fail")
        self.assertEqual(dnsbl.kind("temperror: dnsbl: dns error: x"), "temperror")
        self.assertEqual(dnsbl.kind("pass"), "pass")


class ConfigTests(SynchronousTestCase):
    def test_zones_and_ips_normalised(self) -> None:
        config = minimal_config('[dnsbl]\nzones = ["BL.Example.org.", "zen.test"]\nips = ["2001:DB8::0:1", "192.0.2.1"]\n')
        self.assertEqual(config.dnsbl_zones, ("bl.example.org", "zen.test"))
        self.assertEqual(config.dnsbl_ips, ("2001:db8::1", "192.0.2.1"))

    def test_bad_and_duplicate_entries(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            minimal_config(
                '[dnsbl]\nzones = ["bl.test", "bad zone", "BL.test.", ""]\n'
                'ips = ["192.0.2.1", "192.0.2.300", "192.0.2.1"]\n'
            )
        problems = caught.exception.problems
        self.assertEqual(
            problems,
            [
                'dnsbl.zones[1]: expected a DNS zone name such as "bl.example.org", got "bad zone"',
                'dnsbl.zones[2]: zone "BL.test." is listed twice',
                'dnsbl.zones[3]: expected a DNS zone name such as "bl.example.org", got ""',
                'dnsbl.ips[1]: expected an IP address, got "192.0.2.300"',
                'dnsbl.ips[2]: IP "192.0.2.1" is listed twice',
            ],
        )

    def test_monitoring_enabled(self) -> None:
        self.assertFalse(dnsbl.monitoring_enabled(minimal_config("")))
        self.assertTrue(dnsbl.monitoring_enabled(minimal_config('[dnsbl]\nzones = ["bl.test"]\n')))
        self.assertFalse(dnsbl.monitoring_enabled(minimal_config('localserve = true\n[dnsbl]\nzones = ["bl.test"]\n')))


class OutgoingIPsTests(SynchronousTestCase):
    def interfaces(self) -> list[str]:
        self.asked += 1
        return ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.1", "fe80::1", "8.8.4.4", "2a00:1450::5"]

    def setUp(self) -> None:
        self.asked = 0

    def test_configured_ips_are_used_as_given(self) -> None:
        # Even loopback: the operator chose them (tests, or the public IPs of a NAT).
        config = minimal_config('[dnsbl]\nzones = ["bl.test"]\nips = ["127.0.0.2", "10.0.0.1"]\n')
        self.assertEqual(outgoing_ips(config, self.interfaces), ["127.0.0.2", "10.0.0.1"])
        self.assertEqual(self.asked, 0)

    def test_specific_listener_addresses(self) -> None:
        config = minimal_config(
            '[listeners]\nsmtp = ["tcp:25:interface=8.8.8.8", "tcp6:25:interface=\\\\:\\\\:1"]\n'
            'submission = ["tcp:587:interface=10.0.0.5"]\nhttp = ["tcp:1080"]\n'
        )
        # Private and loopback addresses are skipped; the http listener does not count.
        self.assertEqual(outgoing_ips(config, self.interfaces), ["8.8.8.8"])
        self.assertEqual(self.asked, 0)

    def test_unspecified_listener_uses_interfaces(self) -> None:
        config = minimal_config('[listeners]\nsmtp = ["tcp:25:interface=8.8.8.8", "tcp6:25"]\n')
        self.assertEqual(outgoing_ips(config, self.interfaces), ["8.8.8.8", "8.8.4.4", "2a00:1450::5"])
        self.assertEqual(self.asked, 1)

    def test_no_smtp_listener_uses_interfaces(self) -> None:
        # A webapi-only daemon still sends mail.
        config = minimal_config('[listeners]\nhttp = ["tcp:1080:interface=127.0.0.1"]\n')
        self.assertEqual(outgoing_ips(config, self.interfaces), ["8.8.4.4", "2a00:1450::5"])

    def test_interface_addresses(self) -> None:
        ips = dnsbl.interface_ips()
        self.assertIn("127.0.0.1", ips)
        self.assertEqual(len(ips), len(set(ips)))


# --- the schedule, logging and metrics, on a test clock -----------------------------------------------


class FakeLookup:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.status: dict[tuple[str, str], str] = {}
        self.calls: list[tuple[float, str, str]] = []

    def __call__(self, ip: str, zone: str) -> defer.Deferred[str]:
        self.calls.append((self.clock.seconds(), ip, zone))
        return defer.succeed(self.status.get((ip, zone), "pass"))


class ScheduleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.lookup = FakeLookup(self.clock)
        self.ips = ["192.0.2.1", "192.0.2.2"]
        self.saved: list[Any] = []
        self.checked: list[float] = []

    def monitor(self, zones: tuple[str, ...] = ("a.sched.test", "b.sched.test"), **kw: Any) -> DNSBLMonitor:
        async def save(zones: Any, results: Any, checked: float) -> None:
            self.saved.append((list(zones), results))
            self.checked.append(checked)

        m = DNSBLMonitor(zones=zones, ips=lambda: list(self.ips), lookup=self.lookup, clock=self.clock, save=save, **kw)
        m.startService()
        self.addCleanup(m.stopService)
        return m

    def test_first_check_at_start_one_lookup_a_second(self) -> None:
        m = self.monitor()
        self.assertEqual(self.lookup.calls, [(0.0, "192.0.2.1", "a.sched.test")])
        self.clock.advance(1)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(
            self.lookup.calls,
            [
                (0.0, "192.0.2.1", "a.sched.test"),
                (1.0, "192.0.2.1", "b.sched.test"),
                (2.0, "192.0.2.2", "a.sched.test"),
                (3.0, "192.0.2.2", "b.sched.test"),
            ],
        )
        self.assertEqual(m.results, {ip: {"a.sched.test": "pass", "b.sched.test": "pass"} for ip in self.ips})
        self.assertEqual((m.checks, m.last_check), (1, 0.0))

    def test_wakes_every_five_minutes_but_checks_only_when_due(self) -> None:
        m = self.monitor(zones=("c.sched.test",), pause=0.0)
        self.assertEqual(len(self.lookup.calls), 2)
        # Five-minute wakes with fewer than 100 connections: no lookups.
        m.count_connections(60)
        self.clock.advance(300)
        m.count_connections(39)
        self.clock.advance(300)
        self.assertEqual((m.checks, len(self.lookup.calls)), (1, 2))
        # The 100th connection: the next wake checks (not at once).
        m.count_connections()
        self.assertEqual(m.checks, 1)
        self.clock.advance(299)
        self.assertEqual(m.checks, 1)
        self.clock.advance(1)
        self.assertEqual((m.checks, m.last_check, len(self.lookup.calls)), (2, 900.0, 4))
        # Counting starts over at each check.
        m.count_connections(99)
        self.clock.advance(300)
        self.assertEqual(m.checks, 2)

    def test_three_hours_at_most_without_connections(self) -> None:
        m = self.monitor(zones=("d.sched.test",), pause=0.0)
        checks = [self.clock.seconds()]
        for _ in range(80):
            before = m.checks
            self.clock.advance(300)
            if m.checks > before:
                checks.append(self.clock.seconds())
        # Wakes at 300 s steps; the first one at least 3 h after a check checks.
        self.assertEqual(checks, [0.0, 10800.0, 21600.0])

    def test_pause_and_sleep_count_from_the_end_of_a_check(self) -> None:
        m = self.monitor(pause=1.0)
        for _ in range(3):  # the first check ends at t=3
            self.clock.advance(1)
        m.count_connections(100)
        self.clock.advance(299)
        self.assertEqual(m.checks, 1)
        self.clock.advance(1)
        self.assertEqual((m.checks, m.last_check), (2, 303.0))

    def test_stop_during_a_check_and_during_the_sleep(self) -> None:
        m = self.monitor()
        self.clock.advance(1)
        d = m.stopService()
        self.assertIsNotNone(d)
        self.successResultOf(defer.maybeDeferred(lambda: d))
        self.clock.advance(3600 * 10)
        self.assertEqual(len(self.lookup.calls), 2)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # Restarted: a new first check; stopped while sleeping.
        m.startService()
        self.clock.advance(3)
        self.assertEqual(m.checks, 2)
        self.successResultOf(defer.maybeDeferred(m.stopService))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_changes_logged_metrics_set_and_removed(self) -> None:
        zones = ("a.metrics.test", "b.metrics.test")
        self.lookup.status[("192.0.2.2", "b.metrics.test")] = "fail: listed for testing"
        with capturedLogs() as events:
            m = self.monitor(zones=zones, pause=0.0)
        # The first results are changes (from unknown): one event per pair.
        texts = [e["log_format"].format(**e) for e in events if "dnsbl" in e.get("log_format", "")]
        self.assertEqual(len(texts), 4, texts)
        self.assertIn("dnsbl: 192.0.2.2 is listed in b.metrics.test: fail: listed for testing (was unknown)", texts)
        self.assertIn("dnsbl: 192.0.2.1 is not listed in a.metrics.test: pass (was unknown)", texts)
        self.assertEqual(gauge("a.metrics.test", "192.0.2.1"), 1.0)
        self.assertEqual(gauge("b.metrics.test", "192.0.2.2"), 0.0)
        self.assertEqual(len(self.saved), 1)

        # The same results again: nothing logged; saved with the time of the check.
        with capturedLogs() as events:
            self.clock.advance(3 * 3600 + 300)
        self.assertEqual(m.checks, 2)
        self.assertEqual([e for e in events if "dnsbl" in e.get("log_format", "")], [])
        self.assertEqual(len(self.saved), 2)
        self.assertEqual(self.saved[1], self.saved[0])
        self.assertEqual(self.checked, [0.0, m.last_check])

        # Delisted, and a lookup failing: two changes.
        del self.lookup.status[("192.0.2.2", "b.metrics.test")]
        self.lookup.status[("192.0.2.1", "a.metrics.test")] = "temperror: dnsbl: dns error: timeout"
        with capturedLogs() as events:
            m.count_connections(100)
            self.clock.advance(300)
        texts = [e["log_format"].format(**e) for e in events if "dnsbl" in e.get("log_format", "")]
        self.assertEqual(
            sorted(texts),
            [
                "dnsbl: 192.0.2.1 in a.metrics.test: lookup failed: temperror: dnsbl: dns error: timeout (was pass)",
                "dnsbl: 192.0.2.2 is not listed in b.metrics.test: pass (was fail: listed for testing)",
            ],
        )
        self.assertEqual(gauge("a.metrics.test", "192.0.2.1"), 0.0)
        self.assertEqual(gauge("b.metrics.test", "192.0.2.2"), 1.0)
        self.assertEqual(self.saved[-1][1]["192.0.2.2"], {"a.metrics.test": "pass", "b.metrics.test": "pass"})

        # An IP no longer used: its results and series go.
        self.ips = ["192.0.2.1"]
        m.count_connections(100)
        self.clock.advance(300)
        self.assertEqual(list(m.results), ["192.0.2.1"])
        self.assertIsNone(gauge("a.metrics.test", "192.0.2.2"))
        self.assertIsNone(gauge("b.metrics.test", "192.0.2.2"))
        self.assertEqual(gauge("b.metrics.test", "192.0.2.1"), 1.0)
        self.assertEqual(list(self.saved[-1][1]), ["192.0.2.1"])

        # Our IPs cannot be listed: every series says -1, results stay.
        def broken() -> list[str]:
            raise OSError("getifaddrs: no")

        m.ips = broken
        m.count_connections(100)
        with capturedLogs() as events:
            self.clock.advance(300)
        self.assertEqual(gauge("a.metrics.test", "192.0.2.1"), -1.0)
        self.assertEqual(gauge("b.metrics.test", "192.0.2.1"), -1.0)
        self.assertTrue(any("cannot list our IPs" in e.get("log_format", "") for e in events))

    def test_request_check_wakes_the_monitor(self) -> None:
        m = self.monitor(zones=("g.sched.test",), pause=0.0)
        self.assertEqual((m.checks, len(self.saved)), (1, 1))
        self.clock.advance(100)
        # Asked for while sleeping: a check at once, then the usual sleep.
        self.assertTrue(m.request_check())
        self.assertEqual((m.checks, m.last_check, self.checked), (2, 100.0, [0.0, 100.0]))
        self.clock.advance(299)
        self.assertEqual(m.checks, 2)
        self.clock.advance(1)
        self.assertEqual(m.checks, 2)  # woke 300 s after the check, nothing due
        # Asked for during a check (lookups a second apart): one more check after it.
        m.pause = 1.0
        self.assertTrue(m.request_check())
        self.assertEqual(m.checks, 3)
        m.request_check()
        m.request_check()
        self.clock.advance(1)  # the end of check 3, then check 4
        self.assertEqual(m.checks, 4)
        self.clock.advance(1)
        self.clock.advance(299)
        self.assertEqual(m.checks, 4)
        # Stopped: refused, and the loop stays stopped.
        self.successResultOf(defer.maybeDeferred(m.stopService))
        self.assertFalse(m.request_check())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_ips(self) -> None:
        self.ips = []
        with capturedLogs() as events:
            m = self.monitor(zones=("f.sched.test",))
            self.clock.advance(3 * 3600 + 300)
        self.assertEqual((m.checks, self.lookup.calls), (2, []))
        warnings = [e for e in events if "no public IPs" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        # The first check replaces what an earlier run left for the workers; each check saves.
        self.assertEqual(self.saved, [(["f.sched.test"], {})] * 2)

    def test_failing_lookup_does_not_stop_the_loop(self) -> None:
        calls: list[str] = []

        def lookup(ip: str, zone: str) -> defer.Deferred[str]:
            calls.append(ip)
            if len(calls) == 1:
                return defer.fail(RuntimeError("boom"))
            return defer.succeed("pass")

        self.lookup = lookup  # type: ignore[assignment]
        with capturedLogs() as events:
            m = self.monitor(zones=("e.sched.test",), pause=0.0)
        self.assertTrue(any(e.get("log_failure") is not None for e in events))
        self.flushLoggedErrors(RuntimeError)
        self.clock.advance(3 * 3600 + 300)
        self.assertEqual(m.checks, 2)
        self.assertEqual(m.results["192.0.2.1"], {"e.sched.test": "pass"})


# --- real lookups against twisted.names -------------------------------------------------------------


class LookupTests(TestCase):
    def setUp(self) -> None:
        self.dns = DNSServer(self)
        self.zone = self.dns.zone
        self.zone.a(LISTED_NAME, "127.0.0.2")
        self.zone.add(LISTED_NAME, dns.TXT, dns.Record_TXT(b"listed for testing"))
        self.pool = ThreadPool(minthreads=0, maxthreads=1, name="test-dnsbl")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.lookup = Lookup(dnsbl_resolver(self.dns.config()), self.pool, reactor)

    async def test_listed_with_explanation_and_not_listed(self) -> None:
        before = durations("bl.test", "fail"), durations("bl.test", "pass")
        self.assertEqual(await self.lookup("127.0.0.2", "bl.test"), "fail: listed for testing")
        self.assertEqual(await self.lookup("127.0.0.3", "bl.test"), "pass")  # NXDOMAIN
        self.assertEqual((durations("bl.test", "fail"), durations("bl.test", "pass")), (before[0] + 1, before[1] + 1))
        self.assertEqual(
            self.zone.queries,
            [(LISTED_NAME, dns.A), (LISTED_NAME, dns.TXT), ("3.0.0.127.bl.test", dns.A)],
        )

    async def test_several_txt_records_and_none(self) -> None:
        self.zone.a("4.0.0.127.bl.test", "127.0.0.4")
        self.zone.add("4.0.0.127.bl.test", dns.TXT, dns.Record_TXT(b"first", b" part"), dns.Record_TXT(b"second"))
        status = await self.lookup("127.0.0.4", "bl.test")
        self.assertIn(status, ("fail: first part; second", "fail: second; first part"))
        self.zone.a("5.0.0.127.bl.test", "127.0.0.2")
        self.assertEqual(await self.lookup("127.0.0.5", "bl.test"), "fail")

    async def test_ipv6_nibbles(self) -> None:
        name = query_name("2001:db8::2", "bl.test").rstrip(".")
        self.zone.a(name, "127.0.0.2")
        self.assertEqual(await self.lookup("2001:db8::2", "bl.test"), "fail")
        self.assertEqual(await self.lookup("2001:db8::3", "bl.test"), "pass")

    async def test_name_without_a_records_passes(self) -> None:
        self.zone.add("6.0.0.127.bl.test", dns.TXT, dns.Record_TXT(b"stale text"))
        self.assertEqual(await self.lookup("127.0.0.6", "bl.test"), "pass")

    async def test_servfail_is_temperror(self) -> None:
        self.zone.servfail.add("7.0.0.127.bl.test")
        before = durations("bl.test", "temperror")
        status = await self.lookup("127.0.0.7", "bl.test")
        self.assertTrue(status.startswith("temperror: dnsbl: dns error: lookup 7.0.0.127.bl.test. A: "), status)
        self.assertIn("SERVFAIL", status)
        self.assertEqual(durations("bl.test", "temperror"), before + 1)

    async def test_timeout_is_temperror(self) -> None:
        port = silent_dns_port(self)
        lookup = Lookup(dnsbl_resolver(DNSConfig(nameservers=(("127.0.0.1", port),), timeout=0.3)), self.pool, reactor)
        self.assertEqual(await lookup("127.0.0.2", "bl.test"), "temperror: dnsbl: dns error: lookup 2.0.0.127.bl.test. A: timeout")

    async def test_answers_that_are_not_listings(self) -> None:
        # Outside 127.0.0.0/8 (e.g. a resolver rewriting NXDOMAIN), and Spamhaus-style
        # "query refused" codes: not a listing, the lookup failed.
        self.zone.a("8.0.0.127.bl.test", "192.0.2.80")
        self.zone.a("9.0.0.127.bl.test", "127.255.255.254")
        for ip, answer in (("127.0.0.8", "192.0.2.80"), ("127.0.0.9", "127.255.255.254")):
            status = await self.lookup(ip, "bl.test")
            self.assertTrue(status.startswith("temperror: "), status)
            self.assertIn(f"answer {answer} is not a listing", status)

    async def test_no_cache_between_checks(self) -> None:
        self.assertEqual(await self.lookup("127.0.0.10", "bl.test"), "pass")
        self.zone.a("10.0.0.127.bl.test", "127.0.0.2")
        self.assertEqual(await self.lookup("127.0.0.10", "bl.test"), "fail")

    async def test_monitor_check_saves_state_for_workers(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        path = directory / dnsbl.STATE_FILE

        async def save(zones: Any, results: Any, checked: float) -> None:
            dnsbl.write_state(path, zones, results, checked)

        m = DNSBLMonitor(
            zones=("bl.test",), ips=lambda: ["127.0.0.2", "127.0.0.3"], lookup=self.lookup, clock=reactor,
            pause=0.0, save=save,
        )
        await m.check()
        expected = {"127.0.0.2": {"bl.test": "fail: listed for testing"}, "127.0.0.3": {"bl.test": "pass"}}
        self.assertEqual(m.snapshot(), expected)
        self.assertEqual(gauge("bl.test", "127.0.0.2"), 0.0)
        self.assertEqual(gauge("bl.test", "127.0.0.3"), 1.0)
        self.assertEqual(dnsbl.read_state(path, ["bl.test"]), expected)
        self.assertEqual(dnsbl.read_status(path, ["bl.test"]), (expected, m.last_check))
        # Zones no longer configured are left out; a broken file is no results.
        self.assertEqual(dnsbl.read_state(path, ["other.test"]), {"127.0.0.2": {}, "127.0.0.3": {}})
        path.write_text("{not json")
        self.assertEqual(dnsbl.read_state(path, ["bl.test"]), {})

    async def test_check_now_from_a_config(self) -> None:
        config = minimal_config(
            f'[dns]\nnameservers = ["127.0.0.1:{self.dns.port}"]\ntimeout = "2s"\n'
            '[dnsbl]\nzones = ["bl.test"]\nips = ["127.0.0.2", "127.0.0.3"]\n'
        )
        from twisted.internet.threads import deferToThread

        status = await deferToThread(dnsbl.check_now, config)
        self.assertEqual(
            status,
            [
                {"127.0.0.2": {"bl.test": "fail: listed for testing"}, "127.0.0.3": {"bl.test": "pass"}},
                None,
                [{"ASCII": "bl.test", "Unicode": ""}],
            ],
        )
        text, all_pass = dnsbl.format_status(status)
        self.assertFalse(all_pass)
        self.assertIn("127.0.0.2  bl.test  fail: listed for testing", text)


# --- the daemon: service tree, admin API --------------------------------------------------------------


class ServiceTests(TestCase):
    def config(self, **changes: Any) -> Config:
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        return attrs.evolve(load_config(path), **changes)

    def test_monitor_in_the_tree_with_connections_counted(self) -> None:
        config = self.config(localserve=False, dnsbl_zones=("bl.test",))
        service: Any = build_service(config, MemoryReactorClock(), store=sqlite_store(config.data_dir, reactor))
        monitor = service.getServiceNamed("dnsbl")
        self.assertIsInstance(monitor, DNSBLMonitor)
        queue = service.getServiceNamed("queue")
        self.assertEqual(queue.transport.on_connections, monitor.count_connections)
        names = [s.name for s in service]
        self.assertLess(names.index("queue"), names.index("dnsbl"))

    def test_no_monitor_in_localserve_or_without_zones(self) -> None:
        for changes in ({"dnsbl_zones": ("bl.test",)}, {"localserve": False}):
            config = self.config(**changes)
            service: Any = build_service(config, MemoryReactorClock(), store=sqlite_store(config.data_dir, reactor))
            self.assertNotIn("dnsbl", [s.name for s in service])


class TransportConnectionsTests(TestCase):
    async def test_smtp_transport_reports_its_connections(self) -> None:
        """The queue's SMTP transport reports every IP it dialled (the monitor counts them)."""
        from moxtw.address import parse_address
        from moxtw.queue.smtp_transport import SMTPTransport
        from moxtw.queue.transport import Batch, OutgoingMessage, Result

        from .delivery.peers import SMTPServer, make_resolver

        server = DNSServer(self)
        smtp = SMTPServer(self)
        server.zone.mx("example.test", (10, "mx.example.test"))
        # Nothing listens on 127.0.0.2: refused, then 127.0.0.1 delivers.
        server.zone.a("mx.example.test", "127.0.0.2", "127.0.0.1")
        config = minimal_config(f"[queue]\nport = {smtp.port}\n")
        counted: list[int] = []
        transport = SMTPTransport(config, reactor, make_resolver(self, server.config()), on_connections=counted.append)
        recipient = parse_address("x@example.test")
        message = OutgoingMessage(1, "app", recipient, "x@example.test", "", "", "", {})
        batch = Batch(
            messages=(message,), mail_from=parse_address("a@sender.test"), domain="example.test",
            data=b"Subject: hi\r\n\r\nhi\r\n", smtputf8=False, has_8bit=False, require_tls=None,
            transport="", attempt=1,
        )
        (outcome,) = await transport(batch)
        self.assertEqual((outcome.result, outcome.remote_ip), (Result.DELIVERED, "127.0.0.1"))
        self.assertEqual(counted, [2])


class AdminAPITests(TestCase):
    async def test_dnsbl_status(self) -> None:
        f = await AdminFixture(self).start()
        # No monitor (localserve): no results, no zones.
        reply = await f.admin_post("DNSBLStatus", {"params": []})
        self.assertEqual(reply.body, b'{"result":[{},null,null]}\n')

        f.parts.admin.dnsbl_zones = ("bl.test", "bücher.test")
        f.parts.admin.dnsbl_results = lambda: {
            "127.0.0.3": {"bl.test": "pass"},
            "127.0.0.2": {"bücher.test/xn--bcher-kva.test": "pass", "bl.test": "fail: <listed> & more"},
        }
        reply = await f.admin_post("DNSBLStatus", {"params": []})
        # Go's encoding: map keys sorted, HTML-escaped strings, dns.Domain structs.
        self.assertEqual(
            reply.body.decode(),
            '{"result":[{"127.0.0.2":{"bl.test":"fail: \\u003clisted\\u003e \\u0026 more",'
            '"bücher.test/xn--bcher-kva.test":"pass"},"127.0.0.3":{"bl.test":"pass"}},null,'
            '[{"ASCII":"bl.test","Unicode":""},{"ASCII":"xn--bcher-kva.test","Unicode":"bücher.test"}]]}\n',
        )
        error = await f.admin_error("DNSBLStatus", 1)
        self.assertIn("bad number of parameters", error["message"])

    def test_worker_reads_the_state_file(self) -> None:
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        config = attrs.evolve(load_config(path), localserve=False, dnsbl_zones=("bl.test",))
        results = dnsbl.file_results(config)
        self.assertEqual(results(), {})
        config.data_dir.mkdir(parents=True, exist_ok=True)
        dnsbl.write_state(dnsbl.state_path(config), ["bl.test"], {"127.0.0.2": {"bl.test": "pass"}})
        self.assertEqual(results(), {"127.0.0.2": {"bl.test": "pass"}})
        # localserve never monitors: whatever a file says.
        self.assertEqual(dnsbl.file_results(attrs.evolve(config, localserve=True))(), {})


# --- moxtw dnsbl check against a running daemon ----------------------------------------------------------


class ConsoleScriptTests(TestCase):
    timeout = 120

    async def moxtw(self, *args: str) -> tuple[int, str, str]:
        env = {k: v for k, v in os.environ.items() if k != "MOXTW_ADMIN_URL"}
        env.update(PYTHONPATH=str(ROOT), MOXTW_ADMIN_PASSWORD="moxadmin")
        script = str(Path(sys.executable).parent / "moxtw")
        out, err, code = await getProcessOutputAndValue(script, list(args), env=env, path=str(ROOT))
        return code, out.decode(), err.decode()

    async def test_dnsbl_check_on_a_running_daemon(self) -> None:
        server = DNSServer(self)
        server.zone.a(LISTED_NAME, "127.0.0.2")
        server.zone.add(LISTED_NAME, dns.TXT, dns.Record_TXT(b"listed for testing"))

        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        text = path.read_text()
        ports = {n: free_port() for n in ("smtp", "submission", "submissions", "http", "metrics")}
        for name, port in ports.items():
            text = re.sub(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        text = text.replace("localserve = true", "localserve = false")
        text = re.sub(r"^nameservers = \[\]", f'nameservers = ["127.0.0.1:{server.port}"]', text, flags=re.M)
        text = re.sub(r"^zones = \[\]", 'zones = ["bl.test"]', text, flags=re.M)
        text = re.sub(r"^ips = \[\]", 'ips = ["127.0.0.2", "127.0.0.3"]', text, flags=re.M)
        path.write_text(text)
        self.assertEqual(load_config(path).dnsbl_ips, ("127.0.0.2", "127.0.0.3"))

        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(ports["http"])
        url = f"http://127.0.0.1:{ports['http']}/admin/api/"

        # The first check runs at startup, one lookup a second; the main process or the
        # webapi worker (from the state file) answers.
        expected = {"127.0.0.2": {"bl.test": "fail: listed for testing"}, "127.0.0.3": {"bl.test": "pass"}}
        for _ in range(100):
            code, out, err = await self.moxtw("dnsbl", "check", "--json", "--admin-url", url)
            self.assertIn(code, (0, 3), err)
            if json.loads(out)[0] == expected:
                break
            await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(json.loads(out), [expected, None, [{"ASCII": "bl.test", "Unicode": ""}]], daemon.output)
        self.assertEqual(code, 3)

        # Text, with the admin URL taken from the configuration file; several calls so
        # both the main process and the worker answer (the worker from the state file).
        for _ in range(4):
            code, out, err = await self.moxtw("dnsbl", "check", "--config", str(path))
            self.assertEqual(code, 3, err)
            self.assertIn("127.0.0.2  bl.test  fail: listed for testing\n", out)
            self.assertIn("127.0.0.3  bl.test  pass\n", out)
        await daemon.wait_for_output("dnsbl: 127.0.0.2 is listed in bl.test: fail: listed for testing")
        # The state file the webapi worker answers from.
        state = json.loads((directory / "data" / dnsbl.STATE_FILE).read_text())
        checked = state.pop("checked")
        self.assertEqual(state, {"results": expected, "zones": ["bl.test"]})
        self.assertLessEqual(checked, time.time())

        # The metrics.
        client = http_client(self)
        response = await client.get(f"http://127.0.0.1:{ports['metrics']}/metrics")
        metrics = (await response.content()).decode()
        self.assertIn('moxtw_dnsbl_ips_success{ip="127.0.0.2",zone="bl.test"} 0.0', metrics)
        self.assertIn('moxtw_dnsbl_ips_success{ip="127.0.0.3",zone="bl.test"} 1.0', metrics)

        # --now asks the DNS server directly, no daemon needed.
        queries = len(server.zone.queries)
        code, out, err = await self.moxtw("dnsbl", "check", "--now", "--config", str(path))
        self.assertEqual(code, 3, err)
        self.assertIn("127.0.0.2  bl.test  fail: listed for testing\n", out)
        self.assertGreater(len(server.zone.queries), queries)

        # Delisted: --now says everything passes.
        del server.zone.records[(LISTED_NAME, dns.A)]
        code, out, err = await self.moxtw("dnsbl", "check", "--now", "--json", "--config", str(path))
        self.assertEqual(code, 0, err)
        self.assertEqual(json.loads(out)[0], {"127.0.0.2": {"bl.test": "pass"}, "127.0.0.3": {"bl.test": "pass"}})

        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)

    async def test_errors(self) -> None:
        code, out, err = await self.moxtw("dnsbl", "check", "--admin-url", f"http://127.0.0.1:{free_port()}/admin/api/")
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the moxtw admin API", err)
        code, out, err = await self.moxtw("dnsbl", "check", "--now", "--config", "/nonexistent/moxtw.toml")
        self.assertEqual(code, 1)
        self.assertIn("cannot read configuration", err)
        self.assertNotIn("Traceback", err)
        # Nothing monitored (localserve configuration): said so, exit 0.
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        code, out, err = await self.moxtw("dnsbl", "check", "--now", "--config", str(path))
        self.assertEqual((code, err), (0, ""))
        self.assertIn("no DNSBL zones are monitored", out)
