"""Fixed-window rate limiting per IP address and per IP network, like mox's ``ratelimit.Limiter``.

A :class:`Limiter` has one or more windows (e.g. one minute and one day).  Each window has
three limits, one per *IP class*:

=====  ==================  ==================
class  IPv4                IPv6
=====  ==================  ==================
0      the address         the /64
1      the /26             the /48
2      the /21             the /32
=====  ==================  ==================

Time is cut into fixed windows aligned on the epoch (window number =
``floor(clock.seconds() / duration)``, as mox does with ``UnixNano() / Window``).  Counters are
kept for the current window only: when the clock enters a new window, the previous window's
counters are dropped as a whole.  Memory is therefore bounded by the number of counters
*admitted* during one window (``can_add`` never creates a counter, ``add`` only creates
counters when it succeeds, and an address's counters can only grow until the class-2 limit
of its network is reached), and it is released on the first call after the window ends (or by
:meth:`Limiter.prune`, e.g. from a ``TimerService``).

IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) count as their IPv4 address, as in Go.

A limiter is not thread-safe: use it from the reactor thread only.

Login attempts go through :meth:`Limiter.begin_attempt` and :meth:`Limiter.end_attempt`:
an attempt is counted as a failure *before* its password is checked and forgiven when it
succeeds.  Checking first and counting afterwards (``can_add``, verify, ``add``) would let
guesses sent in parallel all pass the check while the first ones are still being
verified, so any number of them would be tried.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from collections.abc import Iterable
from typing import TypeAlias

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

__all__ = [
    "DAY",
    "HOUR",
    "IP_CLASSES",
    "MINUTE",
    "IPLike",
    "Limiter",
    "WindowLimit",
    "failed_auth_limiter",
    "request_limiter",
]

IPLike: TypeAlias = str | ipaddress.IPv4Address | ipaddress.IPv6Address

#: Number of IP classes (exact address, medium network, large network).
IP_CLASSES = 3

# IPv4 addresses are keyed in their IPv4-mapped IPv6 form (::ffff:a.b.c.d), like Go's To16(),
# so that IPv4 and IPv6 keys can never collide.
_V4_MAPPED_PREFIX = 0xFFFF << 32
_V4_PREFIXES = (32, 26, 21)
_V6_PREFIXES = (64, 48, 32)


def _mask(bits: int, prefix: int) -> int:
    return ((1 << prefix) - 1) << (bits - prefix)


_V4_MASKS = tuple(_mask(32, p) for p in _V4_PREFIXES)
_V6_MASKS = tuple(_mask(128, p) for p in _V6_PREFIXES)

# A counter key: (IP class, masked address as a 128-bit integer).
_Key: TypeAlias = tuple[int, int]


def _keys(ip: IPLike) -> tuple[_Key, _Key, _Key]:
    """The counter keys of ``ip`` for the three IP classes; ``ValueError`` if it is no IP."""
    if isinstance(ip, str):
        return _str_keys(ip)
    return _addr_keys(ip)


@functools.lru_cache(maxsize=4096)
def _str_keys(ip: str) -> tuple[_Key, _Key, _Key]:
    # Every webapi request resets the limiter for its IP; parsing it once is enough.
    return _addr_keys(ipaddress.ip_address(ip))


def _addr_keys(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> tuple[_Key, _Key, _Key]:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    value = int(addr)
    if isinstance(addr, ipaddress.IPv4Address):
        k0, k1, k2 = (_V4_MAPPED_PREFIX | (value & m) for m in _V4_MASKS)
    else:
        k0, k1, k2 = (value & m for m in _V6_MASKS)
    return ((0, k0), (1, k1), (2, k2))


def _positive_window(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"window must be a positive number of seconds, not {value!r}")


def _limits_tuple(value: Iterable[int]) -> tuple[int, int, int]:
    limits = tuple(value)
    if len(limits) != IP_CLASSES:
        raise ValueError(f"need exactly {IP_CLASSES} limits (IP, /26, /21), got {limits!r}")
    if any(not isinstance(v, int) or v < 0 for v in limits):
        raise ValueError(f"limits must be non-negative integers, got {limits!r}")
    return (limits[0], limits[1], limits[2])


@attrs.frozen
class WindowLimit:
    """One fixed window: its duration in seconds and the limits for the three IP classes.

    ``limits`` is ``(per IP (IPv6 /64), per IPv4 /26 (IPv6 /48), per IPv4 /21 (IPv6 /32))``.
    """

    window: float = attrs.field(validator=_positive_window)
    limits: tuple[int, int, int] = attrs.field(converter=_limits_tuple)


@attrs.define(eq=False)
class _WindowState:
    """The counters of the current window of one :class:`WindowLimit`."""

    limit: WindowLimit
    #: Number of the current window (``floor(seconds / window)``), None before first use.
    number: int | None = None
    counts: dict[_Key, int] = attrs.Factory(dict)


def _windows_tuple(value: Iterable[WindowLimit]) -> tuple[WindowLimit, ...]:
    windows = tuple(value)
    if not windows:
        raise ValueError("a limiter needs at least one window")
    return windows


@attrs.define(eq=False)
class Limiter:
    """A fixed-window limiter over IP addresses and their networks.

    ``clock`` provides the time (``clock.seconds()``); ``windows`` the windows and limits.
    IP arguments are strings (or ``ipaddress`` objects); a string that is not an IP address
    raises ``ValueError``.
    """

    clock: IReactorTime
    windows: tuple[WindowLimit, ...] = attrs.field(converter=_windows_tuple)
    _states: tuple[_WindowState, ...] = attrs.field(init=False)
    #: Attempts being checked, per exact-class key, and who waits for them to end
    #: (entries exist only while there are some: bounded by the open connections).
    _in_flight: dict[_Key, int] = attrs.field(init=False, factory=dict)
    _waiters: dict[_Key, list[Deferred[None]]] = attrs.field(init=False, factory=dict)

    @_states.default
    def _make_states(self) -> tuple[_WindowState, ...]:
        return tuple(_WindowState(w) for w in self.windows)

    def _rotate(self) -> None:
        """Move every window to the current time, dropping the counters of past windows.

        If the clock went backwards, the current window is kept (like mox).
        """
        now = self.clock.seconds()
        for state in self._states:
            number = math.floor(now / state.limit.window)
            if state.number is None or number > state.number:
                state.number = number
                # A new dict rather than clear(): releases the old table's memory.
                state.counts = {}

    def _check(self, keys: tuple[_Key, _Key, _Key], n: int) -> bool:
        for state in self._states:
            for cls, key in enumerate(keys):
                if state.counts.get(key, 0) + n > state.limit.limits[cls]:
                    return False
        return True

    def can_add(self, ip: IPLike, n: int = 1) -> bool:
        """Whether ``n`` more could be added for ``ip`` without exceeding any limit.

        Records nothing.  Used before verifying a password: ``False`` means answer 429.
        """
        _check_n(n)
        keys = _keys(ip)
        self._rotate()
        return self._check(keys, n)

    def add(self, ip: IPLike, n: int = 1) -> bool:
        """Add ``n`` for ``ip`` to all windows and classes, unless that would exceed a limit.

        Returns whether it was added (mox's ``Limiter.Add``): if any limit would be exceeded,
        nothing is recorded and ``False`` is returned.
        """
        _check_n(n)
        keys = _keys(ip)
        self._rotate()
        if not self._check(keys, n):
            return False
        if n:
            for state in self._states:
                counts = state.counts
                for key in keys:
                    counts[key] = counts.get(key, 0) + n
        return True

    def reset(self, ip: IPLike) -> None:
        """Forget ``ip``'s count in the current windows (after a successful login).

        The exact-class count of ``ip`` is subtracted from all three classes, so the failures
        of other addresses in the same networks keep counting.
        """
        keys = _keys(ip)
        self._rotate()
        for state in self._states:
            counts = state.counts
            n = counts.get(keys[0], 0)
            if n <= 0:
                continue
            for key in keys:
                remaining = counts.get(key, 0) - n
                if remaining > 0:
                    counts[key] = remaining
                else:
                    counts.pop(key, None)

    async def begin_attempt(self, ip: IPLike) -> bool:
        """Count a login attempt from ``ip`` as failed, before its password is checked;
        False (record nothing, answer 429) if that would exceed a limit.

        When the limit is reached only because attempts from ``ip`` are still being
        checked, this waits for them to end and tries again: a client opening several
        connections at once with the right password is not refused because its first
        checks are still running.  Every True must be followed by :meth:`end_attempt`.
        """
        key = _keys(ip)[0]
        while not self.add(ip):
            if not self._in_flight.get(key):
                return False
            waiter: Deferred[None] = Deferred()
            self._waiters.setdefault(key, []).append(waiter)
            await waiter
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return True

    def end_attempt(self, ip: IPLike, ok: bool) -> None:
        """The attempt begun by :meth:`begin_attempt` ended; ``ok``: the login succeeded,
        which forgives ``ip``'s failures (:meth:`reset`), else it stays counted."""
        key = _keys(ip)[0]
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)
        if ok:
            self.reset(ip)
        for waiter in self._waiters.pop(key, []):
            waiter.callback(None)

    def prune(self) -> None:
        """Drop the counters of windows that have ended (also done by every other call)."""
        self._rotate()

    def tracked_entries(self) -> int:
        """Number of counters currently held, over all windows, plus attempts in progress
        (for metrics and tests)."""
        return sum(len(state.counts) for state in self._states) + len(self._in_flight) + len(self._waiters)


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must not be negative, got {n}")


MINUTE = 60.0
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def failed_auth_limiter(clock: IReactorTime) -> Limiter:
    """mox's ``LimiterFailedAuth``: per minute 10/30/90 and per day 50/150/450 failures."""
    return Limiter(
        clock=clock,
        windows=(
            WindowLimit(MINUTE, (10, 30, 90)),
            WindowLimit(DAY, (50, 150, 450)),
        ),
    )


def request_limiter(clock: IReactorTime) -> Limiter:
    """mox's per-IP HTTP request limit: per minute 1000/3000/9000, per hour 5000/15000/45000."""
    return Limiter(
        clock=clock,
        windows=(
            WindowLimit(MINUTE, (1000, 3000, 9000)),
            WindowLimit(HOUR, (5000, 15000, 45000)),
        ),
    )
