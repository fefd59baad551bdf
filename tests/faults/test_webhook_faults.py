"""Fault injection on webhooks: the real webhook service, store and treq client against
misbehaving HTTP receivers on loopback.

Classification (spec §3.3, moxtw's fix 1): a 2xx answer is success (the webhook is
retired as delivered); anything else (a refused connection, no answer within the
timeout, a 3xx (redirects are not followed), 4xx or 5xx, a connection closed before the
status line, a garbage answer) is a failed attempt, retried later.  Then 1,000 faulty
requests through the webhook HTTP client must leave no connection open and no timer
pending once the keep-alive pool is closed.
"""

from __future__ import annotations

import itertools
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from moxtw.webhooks.http import make_client, post, request_headers
from moxtw.webhooks.service import WebhookService
from tests.faults.test_smtp_faults import connections
from tests.helpers import free_port
from tests.webhooks.harness import Harness, webhook

OK, RETRY = "delivered", "retry"
TIMEOUT = 0.5


class FaultyHTTP(protocol.Protocol):
    """Reads one request, then misbehaves as its factory's ``mode`` says."""

    transport: Any

    def connectionMade(self) -> None:
        self.buffer = b""
        self.factory.protocols.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        head, sep, body = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) < length:
            return
        self.buffer = body[length:]
        self.answer()

    def answer(self) -> None:
        mode = self.factory.mode
        write, close = self.transport.write, self.transport.loseConnection
        if mode.isdigit():
            write(b"HTTP/1.1 %s X\r\nContent-Length: 2\r\nLocation: http://127.0.0.1:1/\r\n\r\nno" % mode.encode())
        elif mode == "stall":
            pass
        elif mode == "close":
            close()
        elif mode == "close mid-headers":
            write(b"HTTP/1.1 200 OK\r\nContent-Le")
            close()
        elif mode == "close mid-body after 200":
            write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
            close()
        elif mode == "garbage":
            write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            close()
        elif mode == "slow headers":
            write(b"HTTP/1.1 2")  # then nothing: the timeout ends it
        else:
            raise AssertionError(mode)


class FaultyHTTPFactory(protocol.Factory):
    protocol = FaultyHTTP

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.protocols: list[FaultyHTTP] = []


def faulty_receiver(testcase: TestCase, mode: str) -> tuple[str, FaultyHTTPFactory]:
    factory = FaultyHTTPFactory(mode)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    testcase.addCleanup(port.stopListening)

    def close_all() -> None:
        for p in factory.protocols:
            p.transport.abortConnection()

    testcase.addCleanup(close_all)
    return f"http://127.0.0.1:{port.getHost().port}/hooks", factory


MODES = {
    "200": OK,
    "204": OK,
    "299": OK,
    "close mid-body after 200": OK,
    "301": RETRY,
    "302": RETRY,
    "307": RETRY,
    "400": RETRY,
    "404": RETRY,
    "410": RETRY,
    "500": RETRY,
    "503": RETRY,
    "stall": RETRY,
    "slow headers": RETRY,
    "close": RETRY,
    "close mid-headers": RETRY,
    "garbage": RETRY,
}


class WebhookFaultTests(TestCase):
    async def classify(self, url: str) -> tuple[str, str]:
        h = Harness(self, timeout=TIMEOUT, a={"outgoing_webhook": webhook(url)})
        store = h.open()
        client, pool = make_client(reactor, max_per_host=4, connect_timeout=TIMEOUT)
        svc = WebhookService(store=store, config=h.config, client=client, clock=reactor, pool=pool,
                             jitter=lambda: 0.0)  # fmt: skip
        svc.startService()
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        await h.event("delivered", account="a")
        svc.kick()
        for _ in range(500):
            hooks = await h.hooks()
            attempts = [a for hook in hooks for a in hook.attempts if a.duration is not None]
            if attempts or not hooks:
                break
            await deferLater(reactor, 0.01, lambda: None)
        await svc.settle()
        hooks = await h.hooks()
        await svc.stopService()
        if not hooks:
            (retired,) = await h.run(lambda c: [r[0] for r in c.execute("SELECT id FROM hook_retired").fetchall()])
            r = await h.retired(retired)
            assert r is not None
            return (OK if r.success else "retired failed"), ""
        (hook,) = hooks
        (attempt,) = hook.attempts
        self.assertFalse(attempt.success)
        self.assertGreater(hook.row.next_attempt, reactor.seconds())
        return RETRY, attempt.error or f"status {attempt.code}"

    async def test_receiver_faults_are_classified(self) -> None:
        got = {}
        errors = {}
        for mode in MODES:
            url, _ = faulty_receiver(self, mode)
            got[mode], errors[mode] = await self.classify(url)
        self.assertEqual({m: g for m, g in got.items() if g != MODES[m]}, {}, errors)
        self.assertIn("timeout", errors["stall"])
        self.assertIn('"503 X"', errors["503"])

    async def test_refused_connection_is_retried(self) -> None:
        outcome, error = await self.classify(f"http://127.0.0.1:{free_port()}/hooks")
        self.assertEqual(outcome, RETRY)
        self.assertIn("refused", error.lower())


class WebhookLeakTests(TestCase):
    SESSIONS = 1000

    async def test_no_connections_or_timers_left_after_1000_faulty_requests(self) -> None:
        urls = [faulty_receiver(self, mode)[0] for mode in MODES]
        urls.append(f"http://127.0.0.1:{free_port()}/refused")
        client, pool = make_client(reactor, max_per_host=4, connect_timeout=TIMEOUT)
        baseline = connections()
        baseline_calls = {id(c) for c in reactor.getDelayedCalls()}
        semaphore = defer.DeferredSemaphore(25)
        body = b'{"Version":0,"Event":"delivered"}'
        tally = {"success": 0, "failed": 0}

        def one(url: str, n: int) -> defer.Deferred[None]:
            headers = request_headers(hook_id=n, attempt=1, body=body)
            d = post(client, reactor, url, body, headers, TIMEOUT)
            d.addCallback(lambda answer: tally.__setitem__("success" if answer.success else "failed",
                                                           tally["success" if answer.success else "failed"] + 1))
            return d

        cases = itertools.islice(itertools.cycle(urls), self.SESSIONS)
        await defer.gatherResults([semaphore.run(one, url, n) for n, url in enumerate(cases)], consumeErrors=True)
        self.assertEqual(sum(tally.values()), self.SESSIONS)
        await pool.closeCachedConnections()
        for _ in range(200):
            if not connections() - baseline:
                break
            await deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(connections() - baseline, set())
        left = [c for c in reactor.getDelayedCalls() if id(c) not in baseline_calls and c.active()
                and not getattr(c.func, "__module__", "").startswith("twisted.trial")]
        self.assertEqual(left, [], [repr(c) for c in left])
        print(f"\n{self.SESSIONS} faulty webhook requests: {tally}")
