# mypy: allow-untyped-calls
"""Tests for moxtw.ratelimit."""

from __future__ import annotations

import ipaddress

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from moxtw.ratelimit import (
    DAY,
    HOUR,
    MINUTE,
    Limiter,
    WindowLimit,
    failed_auth_limiter,
    request_limiter,
)

# Start at a window boundary so the tests know exactly when windows roll over.
T0 = 1_000 * DAY


def make_clock(start: float = T0) -> Clock:
    clock = Clock()
    clock.advance(start)
    return clock


def fail(limiter: Limiter, ip: str, times: int) -> None:
    """Record ``times`` failed logins from ``ip``, as the webapi does (check, then add)."""
    for _ in range(times):
        assert limiter.can_add(ip), f"unexpectedly limited: {ip}"
        assert limiter.add(ip)


class FailedAuthLimiterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = make_clock()
        self.limiter = failed_auth_limiter(self.clock)

    def test_eleventh_failure_refused(self) -> None:
        """10 failures in a minute are allowed; the 11th attempt is refused up front."""
        fail(self.limiter, "192.0.2.1", 10)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        # add() refuses too and records nothing.
        self.assertFalse(self.limiter.add("192.0.2.1"))
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        # Another address in the same /26 is not affected by the per-IP limit.
        self.assertTrue(self.limiter.can_add("192.0.2.2"))

    def test_can_add_records_nothing(self) -> None:
        for _ in range(100):
            self.assertTrue(self.limiter.can_add("192.0.2.1"))
        self.assertEqual(self.limiter.tracked_entries(), 0)

    def test_can_add_n(self) -> None:
        fail(self.limiter, "192.0.2.1", 7)
        self.assertTrue(self.limiter.can_add("192.0.2.1", 3))
        self.assertFalse(self.limiter.can_add("192.0.2.1", 4))
        self.assertFalse(self.limiter.add("192.0.2.1", 4))
        self.assertTrue(self.limiter.add("192.0.2.1", 3))
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.assertTrue(self.limiter.can_add("192.0.2.1", 0))

    def test_negative_n_rejected(self) -> None:
        self.assertRaises(ValueError, self.limiter.can_add, "192.0.2.1", -1)
        self.assertRaises(ValueError, self.limiter.add, "192.0.2.1", -1)

    def test_invalid_ip_rejected(self) -> None:
        self.assertRaises(ValueError, self.limiter.can_add, "not an ip")
        self.assertRaises(ValueError, self.limiter.add, "192.0.2.300")
        self.assertRaises(ValueError, self.limiter.reset, "")

    def test_minute_window_rollover(self) -> None:
        fail(self.limiter, "192.0.2.1", 10)
        self.clock.advance(59.999)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.clock.advance(0.001)  # Next minute window starts.
        self.assertTrue(self.limiter.can_add("192.0.2.1"))
        fail(self.limiter, "192.0.2.1", 10)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))

    def test_windows_are_fixed_not_sliding(self) -> None:
        """Failures at the end of one minute do not count in the next one."""
        self.clock.advance(59)
        fail(self.limiter, "192.0.2.1", 10)
        self.clock.advance(1)
        fail(self.limiter, "192.0.2.1", 10)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))

    def test_day_window(self) -> None:
        """50 failures per IP per day, even when spread over minutes."""
        for _ in range(5):
            fail(self.limiter, "192.0.2.1", 10)
            self.clock.advance(MINUTE)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.clock.advance(DAY - 5 * MINUTE - 1)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.clock.advance(1)  # Next day.
        self.assertTrue(self.limiter.can_add("192.0.2.1"))
        fail(self.limiter, "192.0.2.1", 10)

    def test_day_window_network_classes(self) -> None:
        """Per day: 150 per /26 and 450 per /21."""
        # 3 addresses of one /26, 50 each (10 per minute).
        for _ in range(5):
            for host in (1, 2, 3):
                fail(self.limiter, f"192.0.2.{host}", 10)
            self.clock.advance(MINUTE)
        self.assertFalse(self.limiter.can_add("192.0.2.4"))  # Same /26.
        self.assertTrue(self.limiter.can_add("192.0.2.64"))  # Next /26.
        # Fill the /21 (192.0.0.0/21): two more /26s of 150, per minute 10 per IP, 30 per /26.
        for net in (64, 128):
            for _ in range(5):
                for host in (1, 2, 3):
                    fail(self.limiter, f"192.0.2.{net + host}", 10)
                self.clock.advance(MINUTE)
        self.assertFalse(self.limiter.can_add("192.0.2.200"))  # Same /21, 450 reached.
        self.assertFalse(self.limiter.can_add("192.0.7.1"))  # Still in 192.0.0.0/21.
        self.assertTrue(self.limiter.can_add("192.0.8.1"))  # Next /21.

    def test_ipv4_slash26(self) -> None:
        """30 failures per minute per /26, whatever the individual addresses."""
        for host in (1, 2, 3):
            fail(self.limiter, f"192.0.2.{host}", 10)
        self.assertFalse(self.limiter.can_add("192.0.2.4"))
        self.assertFalse(self.limiter.can_add("192.0.2.63"))
        self.assertTrue(self.limiter.can_add("192.0.2.64"))
        self.assertTrue(self.limiter.can_add("192.0.1.255"))

    def test_ipv4_slash21(self) -> None:
        """90 failures per minute per /21: three full /26s block the whole /21."""
        for net in (0, 64, 128):
            for host in (1, 2, 3):
                fail(self.limiter, f"10.0.0.{net + host}", 10)
        self.assertFalse(self.limiter.can_add("10.0.0.193"))
        self.assertFalse(self.limiter.can_add("10.0.7.254"))
        self.assertTrue(self.limiter.can_add("10.0.8.1"))
        self.assertTrue(self.limiter.can_add("10.0.15.255"))

    def test_ipv6_slash64_is_one_ip(self) -> None:
        fail(self.limiter, "2001:db8:1:2::1", 5)
        fail(self.limiter, "2001:db8:1:2:ffff:ffff:ffff:ffff", 5)
        self.assertFalse(self.limiter.can_add("2001:db8:1:2::1234"))
        self.assertTrue(self.limiter.can_add("2001:db8:1:3::1"))

    def test_ipv6_slash48_and_slash32(self) -> None:
        for subnet in (1, 2, 3):
            fail(self.limiter, f"2001:db8:1:{subnet}::1", 10)
        self.assertFalse(self.limiter.can_add("2001:db8:1:ffff::1"))  # Same /48.
        self.assertTrue(self.limiter.can_add("2001:db8:2::1"))
        for net in (2, 3):
            for subnet in (1, 2, 3):
                fail(self.limiter, f"2001:db8:{net}:{subnet}::1", 10)
        self.assertFalse(self.limiter.can_add("2001:db8:ffff::1"))  # Same /32.
        self.assertTrue(self.limiter.can_add("2001:db9::1"))

    def test_ipv4_mapped_ipv6_counts_as_ipv4(self) -> None:
        fail(self.limiter, "::ffff:192.0.2.1", 5)
        fail(self.limiter, "192.0.2.1", 5)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.assertFalse(self.limiter.can_add("::ffff:192.0.2.1"))

    def test_ipv4_and_ipv6_do_not_collide(self) -> None:
        fail(self.limiter, "0.0.0.1", 10)
        self.assertTrue(self.limiter.can_add("::1"))
        self.assertTrue(self.limiter.can_add("::"))

    def test_ipaddress_objects(self) -> None:
        fail(self.limiter, "192.0.2.1", 10)
        self.assertFalse(self.limiter.can_add(ipaddress.ip_address("192.0.2.1")))
        self.assertTrue(self.limiter.add(ipaddress.ip_address("2001:db8::1")))

    def test_reset_on_success(self) -> None:
        """A successful login forgets the IP's failures, also in its networks."""
        fail(self.limiter, "192.0.2.1", 10)
        fail(self.limiter, "192.0.2.2", 10)
        fail(self.limiter, "192.0.2.3", 9)
        self.assertFalse(self.limiter.can_add("192.0.2.4", 2))  # /26 at 29 of 30.
        self.limiter.reset("192.0.2.1")
        self.assertTrue(self.limiter.can_add("192.0.2.1"))
        fail(self.limiter, "192.0.2.1", 10)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        # The other addresses' failures still count in the /26.
        self.assertFalse(self.limiter.can_add("192.0.2.4", 2))
        self.assertTrue(self.limiter.can_add("192.0.2.4", 1))
        self.assertFalse(self.limiter.can_add("192.0.2.2"))

    def test_reset_applies_to_day_window(self) -> None:
        for _ in range(5):
            fail(self.limiter, "192.0.2.1", 10)
            self.clock.advance(MINUTE)
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.limiter.reset("192.0.2.1")
        self.assertTrue(self.limiter.can_add("192.0.2.1"))
        fail(self.limiter, "192.0.2.1", 10)
        self.assertEqual(self.limiter.tracked_entries(), 6)  # 3 classes x 2 windows.

    def test_reset_unknown_ip(self) -> None:
        fail(self.limiter, "192.0.2.1", 10)
        self.limiter.reset("192.0.2.2")  # Never failed: nothing subtracted.
        self.assertFalse(self.limiter.can_add("192.0.2.1"))
        self.assertEqual(self.limiter.tracked_entries(), 6)

    def test_reset_removes_counters(self) -> None:
        fail(self.limiter, "192.0.2.1", 3)
        self.limiter.reset("192.0.2.1")
        self.assertEqual(self.limiter.tracked_entries(), 0)

    def test_memory_bounded(self) -> None:
        """A brute force from many addresses leaves no state once the windows are over."""
        ips = [str(ipaddress.IPv4Address(0x0A000000 + i * 997)) for i in range(2000)]
        ips += [f"2001:{i:x}::1" for i in range(2000)]  # Distinct /32s.
        for ip in ips:
            if self.limiter.can_add(ip):
                self.limiter.add(ip)
        peak = self.limiter.tracked_entries()
        self.assertGreater(peak, 4000)
        self.clock.advance(MINUTE)
        self.limiter.prune()
        # The minute window's counters are gone; the day window's remain.
        self.assertLess(self.limiter.tracked_entries(), peak // 2 + 1)
        self.clock.advance(DAY)
        self.assertTrue(self.limiter.can_add("192.0.2.1"))  # Any call prunes.
        self.assertEqual(self.limiter.tracked_entries(), 0)

    def test_refused_adds_create_no_counters(self) -> None:
        fail(self.limiter, "192.0.2.1", 10)
        before = self.limiter.tracked_entries()
        for host in range(10, 60):
            self.limiter.add(f"192.0.2.{host}")  # The /26 is full after 20 more.
        self.assertEqual(self.limiter.tracked_entries(), before + 2 * 20)

    def test_clock_going_backwards_keeps_window(self) -> None:
        self.clock.advance(30)
        fail(self.limiter, "192.0.2.1", 10)
        self.clock.rightNow -= 3600  # An NTP step backwards.
        self.assertFalse(self.limiter.can_add("192.0.2.1"))


class RequestLimiterTests(SynchronousTestCase):
    def test_limits(self) -> None:
        clock = make_clock()
        limiter = request_limiter(clock)
        for _ in range(1000):
            self.assertTrue(limiter.add("192.0.2.1"))
        self.assertFalse(limiter.add("192.0.2.1"))
        self.assertTrue(limiter.add("192.0.2.2", 1000))
        self.assertTrue(limiter.add("192.0.2.3", 1000))
        self.assertFalse(limiter.add("192.0.2.4"))  # /26 at 3000.
        # Per hour: 5000 per IP.
        for _ in range(4):
            clock.advance(MINUTE)
            self.assertTrue(limiter.add("198.51.100.1", 1000))
        clock.advance(MINUTE)
        self.assertTrue(limiter.add("198.51.100.1", 1000))  # Total 5000 this hour.
        clock.advance(MINUTE)
        self.assertFalse(limiter.add("198.51.100.1"))
        clock.advance(HOUR)
        self.assertTrue(limiter.add("198.51.100.1"))


class LimiterConfigTests(SynchronousTestCase):
    def test_custom_windows(self) -> None:
        clock = make_clock()
        limiter = Limiter(clock, [WindowLimit(10, (1, 2, 3))])
        self.assertTrue(limiter.add("192.0.2.1"))
        self.assertFalse(limiter.add("192.0.2.1"))
        self.assertTrue(limiter.add("192.0.2.2"))
        self.assertFalse(limiter.add("192.0.2.3"))
        clock.advance(10)
        self.assertTrue(limiter.add("192.0.2.3"))

    def test_invalid_config(self) -> None:
        clock = Clock()
        self.assertRaises(ValueError, Limiter, clock, [])
        self.assertRaises(ValueError, WindowLimit, 0, (1, 2, 3))
        self.assertRaises(ValueError, WindowLimit, float("inf"), (1, 2, 3))
        self.assertRaises(ValueError, WindowLimit, 60, (1, 2))
        self.assertRaises(ValueError, WindowLimit, 60, (1, 2, -3))

    def test_mox_numbers(self) -> None:
        clock = Clock()
        self.assertEqual(
            failed_auth_limiter(clock).windows,
            (WindowLimit(60, (10, 30, 90)), WindowLimit(86400, (50, 150, 450))),
        )
        self.assertEqual(
            request_limiter(clock).windows,
            (WindowLimit(60, (1000, 3000, 9000)), WindowLimit(3600, (5000, 15000, 45000))),
        )
