"""Password guessing against the webapi, the admin API and SMTP AUTH over real loopback
connections from several source addresses (127.0.0.0/8).

mox's failed-login limiter (10 a minute and 50 a day per IP, 30/150 per /26, 90/450 per
/21) is shared by the three; once an address is over the limit every attempt from it is
answered 429 (SMTP: 421), even with the right password, while other addresses log in as
usual.  Time is the limiter's test clock; the connections are real.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase

from moxtw.ratelimit import DAY, MINUTE
from moxtw.smtp import build_smtp_factories
from tests.admin.fixture import ADMIN
from tests.security.fixture import ALICE, ALICE_PASSWORD, TwoAccounts, auth_plain, client_from, code

#: Attempts per brute-force loop.
N = 200


async def statuses(f: TwoAccounts, client: Any, n: int, auth: Any, *, admin: bool = False) -> list[int]:
    """``n`` sequential attempts; their HTTP statuses."""
    out = []
    for _ in range(n):
        if admin:
            reply = await f.admin_from(client, "QueueSize", [], auth)
        else:
            reply = await f.call_from(client, "SuppressionList", {}, auth)
        out.append(reply.status)
    return out


async def until(condition: Any) -> None:
    """Wait (real time, bounded) until ``condition()`` is true."""
    for _ in range(3000):
        if condition():
            return
        await deferLater(reactor, 0.005, lambda: None)
    raise AssertionError("condition not reached")


class WebAPIBruteForceTests(TestCase):
    async def test_loop_then_429_even_with_the_password(self) -> None:
        f = await TwoAccounts(self).start()
        attacker = client_from(self, "127.0.0.2")
        got = await statuses(f, attacker, N, ("alice@localhost", "guess"))
        self.assertEqual(got, [401] * 10 + [429] * (N - 10))
        # Over the limit, the right password does not help (it is not even checked) ...
        self.assertEqual((await f.call_from(attacker, "SuppressionList", {}, ALICE)).status, 429)
        # ... and nothing else works from there either.
        self.assertEqual((await f.admin_from(attacker, "QueueSize", [], ADMIN)).status, 429)
        # Other addresses: in the same /26 (which has room for 30), in another /21.
        for ip in ("127.0.0.3", "127.1.0.1"):
            self.assertEqual((await f.call_from(client_from(self, ip), "SuppressionList", {}, ALICE)).status, 200, ip)
        # The loop left a few counters, not one per attempt.
        self.assertLessEqual(f.parts.webapi.auth_limiter.tracked_entries(), 2 * 3)

    async def test_minute_and_day_windows(self) -> None:
        """10 guesses a minute, 50 a day: after five minutes of guessing, a new minute
        brings nothing more; a new day does."""
        f = await TwoAccounts(self).start()
        f.clock.advance(1000 * DAY)  # a window boundary
        attacker = client_from(self, "127.0.0.2")
        for minute in range(6):
            expect = [401] * 10 + [429] if minute < 5 else [429] * 11
            self.assertEqual(await statuses(f, attacker, 11, ("alice@localhost", "guess")), expect, minute)
            f.clock.advance(MINUTE)
        f.clock.advance(DAY)
        self.assertEqual((await f.call_from(attacker, "SuppressionList", {}, ALICE)).status, 200)

    async def test_concurrent_guesses_are_limited_too(self) -> None:
        """Guesses sent in parallel (the password check takes a while) are counted before
        they are checked: no more than 10 get a verdict, not one per connection."""
        f = await TwoAccounts(self).start()
        attempts = [
            defer.Deferred.fromCoroutine(
                f.call_from(client_from(self, "127.0.0.2"), "SuppressionList", {}, ("alice@localhost", f"guess{i}"))
            )
            for i in range(50)
        ]
        got = sorted(r.status for r in await defer.gatherResults(attempts))
        self.assertEqual(got, [401] * 10 + [429] * 40)

    async def test_parallel_logins_with_the_password_are_served(self) -> None:
        """A client logging in on many connections at once (nothing cached yet) is not
        refused: attempts over the limit wait for the ones being checked."""
        f = await TwoAccounts(self).start()
        attempts = [
            defer.Deferred.fromCoroutine(f.call_from(client_from(self, "127.0.0.9"), "SuppressionList", {}, ALICE))
            for _ in range(30)
        ]
        self.assertEqual([r.status for r in await defer.gatherResults(attempts)], [200] * 30)
        self.assertEqual(f.parts.webapi.auth_limiter.tracked_entries(), 0)

    async def test_network_classes_and_memory(self) -> None:
        """Distinct addresses of one /21 share its limits (30 a /26, 90 the /21); the
        limiter's state stays within those limits however many addresses try, and is
        released when the windows end."""
        f = await TwoAccounts(self).start()
        f.clock.advance(1000 * DAY)
        limiter = f.parts.webapi.auth_limiter
        got: dict[str, int] = {}
        for i in range(300):  # 127.3.0.1 ... 127.3.1.44: one /21, several /26s
            ip = f"127.3.{(i + 1) // 256}.{(i + 1) % 256}"
            reply = await f.call_from(client_from(self, ip), "SuppressionList", {}, ("nobody@localhost", "x"))
            got[ip] = reply.status
        # Per /26 (64 addresses): 30 failures, then 429; the /21 is full after 90.
        self.assertEqual([got[f"127.3.0.{h}"] for h in range(1, 64)], [401] * 30 + [429] * 33)
        self.assertEqual(sorted(got.values()).count(401), 90)
        self.assertLessEqual(limiter.tracked_entries(), 2 * (90 + 32 + 1))
        # Another /21 is unaffected.
        self.assertEqual((await f.call_from(client_from(self, "127.4.0.1"), "SuppressionList", {}, ALICE)).status, 200)
        f.clock.advance(DAY)
        limiter.prune()
        self.assertEqual(limiter.tracked_entries(), 0)


class AdminBruteForceTests(TestCase):
    async def test_loop_then_429_even_with_the_password(self) -> None:
        f = await TwoAccounts(self).start()
        attacker = client_from(self, "127.0.0.4")
        got = await statuses(f, attacker, N, ("admin", "guess"), admin=True)
        self.assertEqual(got, [401] * 10 + [429] * (N - 10))
        self.assertEqual((await f.admin_from(attacker, "QueueSize", [], ADMIN)).status, 429)
        other = client_from(self, "127.1.0.4")
        self.assertEqual((await f.admin_from(other, "QueueSize", [], ADMIN)).status, 200)

    async def test_concurrent_guesses_are_limited_too(self) -> None:
        f = await TwoAccounts(self).start()
        attempts = [
            defer.Deferred.fromCoroutine(
                f.admin_from(client_from(self, "127.0.0.4"), "QueueSize", [], ("admin", f"guess{i}"))
            )
            for i in range(50)
        ]
        got = sorted(r.status for r in await defer.gatherResults(attempts))
        self.assertEqual(got, [401] * 10 + [429] * 40)


class SMTPBruteForceTests(TestCase):
    async def attempt(self, f: TwoAccounts, ip: str, password: str) -> int:
        c = await f.smtp(f.submission_port, ip)
        await c.command("EHLO client.test")
        reply = code(await c.command(auth_plain("alice@localhost", password)))
        c.close()
        return reply

    async def test_loop_then_421_even_with_the_password(self) -> None:
        f = await TwoAccounts(self).start()
        # Many guesses on one connection, then on new ones once it is closed.
        got: list[int] = []
        c = await f.smtp(f.submission_port, "127.0.0.6")
        await c.command("EHLO client.test")
        while len(got) < N:
            if c.lost or got[-1:] == [421]:  # 421: the server closes the connection
                c = await f.smtp(f.submission_port, "127.0.0.6")
                await c.command("EHLO client.test")
            got.append(code(await c.command(auth_plain("alice@localhost", f"guess{len(got)}"))))
        self.assertEqual(got, [535] * 10 + [421] * (N - 10))
        self.assertEqual(await self.attempt(f, "127.0.0.6", ALICE_PASSWORD), 421)
        self.assertEqual(await self.attempt(f, "127.1.0.6", ALICE_PASSWORD), 235)

    async def test_concurrent_guesses_are_limited_too(self) -> None:
        f = await TwoAccounts(self).start()
        attempts = [defer.Deferred.fromCoroutine(self.attempt(f, "127.0.0.6", f"guess{i}")) for i in range(20)]
        got = sorted(await defer.gatherResults(attempts))
        self.assertEqual(got, [421] * 10 + [535] * 10)  # at most 20 connections per IP

    async def test_one_limiter_for_all_protocols(self) -> None:
        """Guesses over the webapi count for SMTP AUTH and the admin API (as in mox)."""
        f = await TwoAccounts(self).start()
        web = client_from(self, "127.0.0.5")
        self.assertEqual(await statuses(f, web, 10, ("alice@localhost", "guess")), [401] * 10)
        self.assertEqual(await self.attempt(f, "127.0.0.5", ALICE_PASSWORD), 421)
        self.assertEqual((await f.admin_from(web, "QueueSize", [], ADMIN)).status, 429)


class DelayTests(TestCase):
    """The 1 s answer delay after a failed login waits on the clock, not the reactor:
    other clients are served meanwhile."""

    async def served_during_delay(self, clock: Clock, failing: defer.Deferred[Any], other: Any) -> Any:
        """Wait until ``failing`` sits in its delay, serve ``other()`` meanwhile, then let
        the delay pass; ``failing``'s result."""
        await until(lambda: any(c.getTime() <= clock.seconds() + 1.0 for c in clock.getDelayedCalls()))
        self.assertEqual(await other(), "served")
        self.assertFalse(failing.called)
        clock.advance(1.0)
        return await failing

    async def test_webapi(self) -> None:
        f = await TwoAccounts(self).start()
        clock = Clock()
        f.parts.webapi.clock = clock
        f.parts.webapi.bad_auth_delay = 1.0
        failing = defer.Deferred.fromCoroutine(
            f.call_from(client_from(self, "127.0.0.7"), "SuppressionList", {}, ("alice@localhost", "guess"))
        )

        async def other() -> str:
            reply = await f.call_from(client_from(self, "127.0.0.8"), "SuppressionList", {}, ALICE)
            return "served" if reply.status == 200 else str(reply.status)

        self.assertEqual((await self.served_during_delay(clock, failing, other)).status, 401)

    async def test_admin(self) -> None:
        f = await TwoAccounts(self).start()
        clock = Clock()
        f.parts.admin.clock = clock
        f.parts.admin.bad_auth_delay = 1.0
        failing = defer.Deferred.fromCoroutine(
            f.admin_from(client_from(self, "127.0.0.7"), "QueueSize", [], ("admin", "guess"))
        )

        async def other() -> str:
            reply = await f.admin_from(client_from(self, "127.0.0.8"), "QueueSize", [], ADMIN)
            return "served" if reply.status == 200 else str(reply.status)

        self.assertEqual((await self.served_during_delay(clock, failing, other)).status, 401)

    async def test_smtp(self) -> None:
        f = await TwoAccounts(self).start()
        clock = Clock()
        factories = build_smtp_factories(
            f.config, f.parts.accounts, f.parts.store, f.parts.verifier, clock, f.inbound,
            auth_limiter=f.parts.webapi.auth_limiter, plaintext_auth=True, bad_auth_delay=1.0,
        )  # fmt: skip
        port = f.listen(factories.submission)
        c = await f.smtp(port, "127.0.0.7")
        await c.command("EHLO client.test")
        failing = defer.Deferred.fromCoroutine(c.command(auth_plain("alice@localhost", "guess")))

        async def other() -> str:
            o = await f.smtp(port, "127.0.0.8")
            await o.command("EHLO client.test")
            reply = await o.command(auth_plain(*ALICE))
            o.close()
            return "served" if code(reply) == 235 else reply.decode()

        self.assertEqual(code(await self.served_during_delay(clock, failing, other)), 535)


class AttemptTests(TestCase):
    """:meth:`Limiter.begin_attempt` / :meth:`Limiter.end_attempt` on a test clock."""

    def test_counted_before_the_check_and_forgiven_on_success(self) -> None:
        from moxtw.ratelimit import failed_auth_limiter

        limiter = failed_auth_limiter(Clock())
        begun = [self.successResultOf(defer.Deferred.fromCoroutine(limiter.begin_attempt("192.0.2.1")))
                 for _ in range(10)]  # fmt: skip
        self.assertEqual(begun, [True] * 10)
        # The 11th waits for the ten in progress instead of being refused at once ...
        eleventh = defer.Deferred.fromCoroutine(limiter.begin_attempt("192.0.2.1"))
        self.assertNoResult(eleventh)
        # ... and is refused when they all failed,
        for _ in range(9):
            limiter.end_attempt("192.0.2.1", False)
        self.assertNoResult(eleventh)
        limiter.end_attempt("192.0.2.1", False)
        self.assertIs(self.successResultOf(eleventh), False)
        self.assertEqual(limiter.tracked_entries(), 2 * 3)  # the counters only

    def test_waiter_admitted_after_a_success(self) -> None:
        from moxtw.ratelimit import failed_auth_limiter

        limiter = failed_auth_limiter(Clock())
        for _ in range(10):
            self.successResultOf(defer.Deferred.fromCoroutine(limiter.begin_attempt("192.0.2.1")))
        waiting = defer.Deferred.fromCoroutine(limiter.begin_attempt("192.0.2.1"))
        limiter.end_attempt("192.0.2.1", True)  # a success forgives the address's failures
        self.assertIs(self.successResultOf(waiting), True)
        for _ in range(10):
            limiter.end_attempt("192.0.2.1", True)
        self.assertEqual(limiter.tracked_entries(), 0)
