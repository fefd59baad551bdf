"""The webhook service over a real store, a test clock and StubTreq receivers."""

from __future__ import annotations

import json
import time
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError
from twisted.trial.unittest import TestCase

from moxtw.queue import QueueService
from moxtw.store import webhooks as sw
from moxtw.store.messages import DeliveryMeta, deliver
from moxtw.webhooks.incoming import incoming_hook, incoming_payload
from moxtw.webhooks.service import WebhookService
from moxtw.webhooks.signing import new_secret

from .harness import HOLD, HOUR, OUT_A, OUT_B, T0, WAITS, Harness, webhook

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def hosts(h: Harness) -> list[str]:
    return [r.host for r in h.receiver.requests]


class RetryTests(TestCase):
    async def test_twelve_attempts_on_500_then_failed(self) -> None:
        """mox §3.3: 12 attempts, waits 1m, 2m, 4m, 7.5m, 15m, 30m, 1h, 2h, 4h, 8h, 16h; the
        same ID and body each time, X-Mox-Webhook-Attempt counting; every attempt recorded."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 500
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        starts = [T0]
        self.assertEqual(len(h.receiver.requests), 1)
        for i, wait in enumerate(WAITS):
            await h.advance(svc, wait - 1)
            self.assertEqual(len(h.receiver.requests), i + 1, f"attempt {i + 2} came early")
            await h.advance(svc, 1)
            self.assertEqual(len(h.receiver.requests), i + 2, f"attempt {i + 2} not made")
            starts.append(h.clock.seconds())
        await h.advance(svc, 48 * HOUR)
        self.assertEqual(len(h.receiver.requests), 12)
        self.assertEqual([r.header("X-Mox-Webhook-Attempt") for r in h.receiver.requests], [str(n) for n in range(1, 13)])
        self.assertEqual({r.header("X-Mox-Webhook-Id") for r in h.receiver.requests}, {str(hook_id)})
        self.assertEqual(len({r.body for r in h.receiver.requests}), 1)

        self.assertIsNone(await h.hook(hook_id))
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.attempts, retired.success, retired.superseded_by_id), (12, False, 0))
        self.assertEqual(retired.last_activity, starts[-1])
        self.assertEqual(retired.keep_until, starts[-1] + 72 * HOUR)
        self.assertEqual([a.start for a in retired.results], starts)
        for a in retired.results:
            self.assertEqual((a.code, a.success, a.url, a.duration), (500, False, OUT_A, 0.0))
            self.assertEqual(a.error, 'http status "500 Internal Server Error", expected 2xx')
            self.assertEqual(a.response, b"thanks")
        self.assertEqual(sum(WAITS), 31 * HOUR + 59.5 * 60)

    async def test_204_is_success(self) -> None:
        """moxtw's fix 1: any 2xx is success (mox retried the golden's 204)."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 204
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        await h.advance(svc, HOUR)
        self.assertEqual(len(h.receiver.requests), 1)
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.attempts), (True, 1))
        self.assertEqual((retired.results[0].code, retired.results[0].error), (204, ""))

    async def test_500_then_200(self) -> None:
        h = Harness(self)
        h.open()
        codes = iter([500, 200])
        h.receiver.answers["a.example"] = lambda r: next(codes)
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        await h.advance(svc, 60)
        self.assertEqual([r.header("X-Mox-Webhook-Attempt") for r in h.receiver.requests], ["1", "2"])
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.attempts, retired.last_activity), (True, 2, T0 + 60))
        self.assertEqual([a.code for a in retired.results], [500, 200])
        self.assertEqual(await h.hooks(), [])

    async def test_redirect_is_a_failure(self) -> None:
        """Redirects are not followed (a POST body would have to be re-sent elsewhere):
        a 3xx answer is a failed attempt, retried like any other."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 302
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        hook = await h.hook(hook_id)
        assert hook is not None
        self.assertEqual((hook.attempts[0].code, hook.attempts[0].error), (302, 'http status "302 Found", expected 2xx'))
        self.assertEqual(len(h.receiver.requests), 1)

    async def test_timeout(self) -> None:
        """A receiver that does not answer within the timeout: the attempt fails with a
        timeout error and is retried after the normal wait."""
        h = Harness(self, timeout=30.0)
        h.open()
        h.receiver.answers["a.example"] = lambda r: HOLD if r.header("X-Mox-Webhook-Attempt") == "1" else 200
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        await h.advance(svc, 29)
        hook = await h.hook(hook_id)
        assert hook is not None
        self.assertEqual(hook.attempts[0].error, "delivering...")
        self.assertIsNone(hook.attempts[0].duration)
        await h.advance(svc, 1)
        hook = await h.hook(hook_id)
        assert hook is not None
        self.assertEqual((hook.attempts[0].error, hook.attempts[0].code), ("http transact: timeout after 30s", 0))
        self.assertEqual(hook.attempts[0].duration, 30.0)
        self.assertEqual(hook.row.next_attempt, T0 + 60)
        await h.advance(svc, 30)
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.attempts), (True, 2))

    async def test_connection_refused(self) -> None:
        h = Harness(self)
        h.open()
        h.client.refuse.add("a.example")
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        hook = await h.hook(hook_id)
        assert hook is not None
        self.assertEqual(hook.attempts[0].error, "http transact: Connection was refused by other side: Connection refused.")
        self.assertEqual(hook.row.next_attempt, T0 + 60)
        h.client.refuse.clear()
        await h.advance(svc, 60)
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.attempts), (True, 2))

    async def test_retry_scale_and_jitter(self) -> None:
        h = Harness(self, retry_scale=60.0)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 503
        await h.event()
        svc = h.service(jitter=lambda: -0.01)
        self.assertEqual(svc.backoff(0), 0.99)
        self.assertEqual(svc.backoff(10), 57600 * 0.99 / 60)
        self.assertEqual(svc.backoff(3, jitter=0.0099), 450 * 1.0099 / 60)
        await svc.settle()
        await h.advance(svc, 0.99)
        await h.advance(svc, 1.98)
        self.assertEqual(len(h.receiver.requests), 3)

    async def test_large_response_is_cut(self) -> None:
        h = Harness(self)
        h.open()
        h.receiver.body = b"x" * 100_000
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual(retired.results[0].response, b"x" * 512)
        self.assertTrue(retired.success)

    async def test_not_kept_without_keep_period(self) -> None:
        h = Harness(self, keep=0.0)
        h.open()
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        self.assertEqual(len(h.receiver.requests), 1)
        self.assertIsNone(await h.retired(hook_id))
        self.assertEqual(await h.run(sw.hook_attempts, hook_id), [])
        self.assertEqual(await h.events_left(), 0)

    async def test_cleanup_removes_expired_retired(self) -> None:
        h = Harness(self, keep=2 * HOUR)
        h.open()
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()
        self.assertIsNotNone(await h.retired(hook_id))
        await h.advance(svc, svc.cleanup_delay + HOUR)  # first cleanup after 4s, then hourly
        self.assertIsNotNone(await h.retired(hook_id))
        await h.advance(svc, HOUR)
        self.assertIsNone(await h.retired(hook_id))
        self.assertEqual(await h.run(sw.hook_attempts, hook_id), [])


class AdmissionTests(TestCase):
    async def test_no_url_no_webhook(self) -> None:
        """Accounts without an outgoing webhook (and unknown accounts) get none: the
        event row is removed."""
        h = Harness(self)
        h.open()
        await h.event(account="c")
        await h.event(account="gone")
        svc = h.service()
        await svc.settle()
        self.assertEqual(h.receiver.requests, [])
        self.assertEqual(await h.events_left(), 0)

    async def test_event_filter(self) -> None:
        h = Harness(self, a={"outgoing_webhook": webhook(OUT_A, events=("failed", "suppressed"))})
        h.open()
        await h.event(kind="delivered", queue_msg_id=1)
        await h.event(kind="delayed", queue_msg_id=2)
        failed = await h.event(kind="failed", queue_msg_id=3)
        suppressed = await h.event(kind="suppressed", queue_msg_id=4)
        svc = h.service()
        await svc.settle()
        self.assertEqual([r.header("X-Mox-Webhook-Id") for r in h.receiver.requests], [str(failed), str(suppressed)])
        self.assertEqual([json.loads(r.body)["Event"] for r in h.receiver.requests], ["failed", "suppressed"])

    async def test_url_and_authorization_copied_at_queue_time(self) -> None:
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 500
        await h.event()
        svc = h.service()
        await svc.settle()
        svc.config = h.config = attrs_evolve_account(h.config, "a", outgoing_webhook=webhook("http://new.example/x"))
        await h.advance(svc, 60)
        self.assertEqual(hosts(h), ["a.example", "a.example"])
        self.assertEqual(h.receiver.requests[1].header("Authorization"), "Bearer out-secret")

    async def test_superseding(self) -> None:
        """A new event for a queued message retires its still-queued (not in flight)
        webhook, recording SupersededByID; only the latest goes out."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 500 if json.loads(r.body)["Event"] == "delayed" else 200
        first = await h.event(kind="delayed", queue_msg_id=7)
        other = await h.event(kind="delayed", queue_msg_id=8)
        svc = h.service()
        await svc.settle()
        self.assertEqual(len(h.receiver.requests), 2)
        # The first attempt failed; the hook waits for its retry.  Now the message fails.
        second = await h.event(kind="delayed", queue_msg_id=7)
        third = await h.event(kind="failed", queue_msg_id=7, smtp_code=550)
        svc.kick()
        await svc.settle()
        self.assertEqual(
            [(r.header("X-Mox-Webhook-Id"), json.loads(r.body)["Event"]) for r in h.receiver.requests[2:]],
            [(str(third), "failed")],
        )
        r1, r2 = await h.retired(first), await h.retired(second)
        assert r1 is not None and r2 is not None
        # Admitted in ID order: second superseded first, third superseded second.
        self.assertEqual((r1.success, r1.superseded_by_id, r1.attempts, r1.last_activity), (False, second, 1, T0))
        self.assertEqual((r2.success, r2.superseded_by_id, r2.attempts), (False, third, 0))
        retired_third = await h.retired(third)
        assert retired_third is not None
        self.assertTrue(retired_third.success)
        # The other message's webhook is untouched.
        (left,) = await h.hooks()
        self.assertEqual(left.row.id, other)
        await h.advance(svc, 60)
        self.assertEqual(len(h.receiver.requests), 4)

    async def test_incoming_never_superseded(self) -> None:
        h = Harness(self)
        h.open()
        store = h.store
        assert store is not None
        account = h.config.accounts["a"]
        data = b"From: <x@remote.example>\r\nTo: <a@example.org>\r\nSubject: in\r\nMessage-Id: <in@x>\r\n\r\nhi\r\n"
        meta = DeliveryMeta(mail_from="x@remote.example", rcpt_to="a@example.org", remote_ip="192.0.2.1")
        ids = []
        for _ in range(2):
            hook = incoming_hook(account, data, meta=meta, received=T0)
            ids.append(await deliver(store, "a", "Inbox", data, received=T0, meta=meta, incoming_webhook=hook))
        svc = h.service()
        await svc.settle()
        self.assertEqual([r.path for r in h.receiver.requests], ["/hooks/incoming"] * 2)
        for r, msg_id in zip(h.receiver.requests, ids, strict=True):
            self.assertEqual(r.header("Authorization"), "Bearer in-secret")
            self.assertEqual(json.loads(r.body)["Meta"]["MsgID"], msg_id)
            expected = incoming_payload(data, msg_id=msg_id, mail_from="x@remote.example", rcpt_to="a@example.org",
                                        remote_ip="192.0.2.1", received=T0)  # fmt: skip
            self.assertEqual(r.body.decode(), expected)
        # No incoming webhook configured: deliver queues none.
        self.assertIsNone(incoming_hook(h.config.accounts["b"], data, meta=meta, received=T0))


class OrderingTests(TestCase):
    async def test_later_event_waits_for_the_one_in_flight(self) -> None:
        """A message's events never overtake each other: while its "delayed" webhook is in
        flight, the "delivered" one waits; after success it follows."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: HOLD if json.loads(r.body)["Event"] == "delayed" else 200
        first = await h.event(kind="delayed", queue_msg_id=5)
        svc = h.service()
        await svc.settle()
        second = await h.event(kind="delivered", queue_msg_id=5)
        unrelated = await h.event(kind="delivered", queue_msg_id=6)
        svc.kick()
        await svc.settle()
        self.assertEqual([r.header("X-Mox-Webhook-Id") for r in h.receiver.requests], [str(first), str(unrelated)])
        await h.answer_held(svc, 200)
        self.assertEqual(
            [r.header("X-Mox-Webhook-Id") for r in h.receiver.requests], [str(first), str(unrelated), str(second)]
        )
        r1 = await h.retired(first)
        assert r1 is not None
        self.assertEqual((r1.success, r1.superseded_by_id), (True, 0))

    async def test_failed_attempt_in_flight_is_superseded(self) -> None:
        """When the in-flight webhook's attempt fails, the newer one supersedes it (its
        result says so) and goes out at once."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: HOLD if json.loads(r.body)["Event"] == "delayed" else 200
        first = await h.event(kind="delayed", queue_msg_id=5)
        svc = h.service()
        await svc.settle()
        second = await h.event(kind="failed", queue_msg_id=5)
        svc.kick()
        await svc.settle()
        self.assertEqual(len(h.receiver.requests), 1)
        await h.advance(svc, 5)
        await h.answer_held(svc, 503)
        self.assertEqual([r.header("X-Mox-Webhook-Id") for r in h.receiver.requests], [str(first), str(second)])
        r1 = await h.retired(first)
        assert r1 is not None
        self.assertEqual((r1.success, r1.superseded_by_id, r1.last_activity), (False, second, T0 + 5))
        self.assertEqual(
            r1.results[0].error, 'http status "503 Service Unavailable", expected 2xx (superseded)'
        )

    async def test_slow_receiver_does_not_block_other_accounts(self) -> None:
        """Account a's receiver holds every request: a gets max_in_flight (4) requests in
        flight and no more; account b's webhooks go out meanwhile."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: HOLD
        for i in range(10):
            await h.event(account="a", queue_msg_id=100 + i)
        svc = h.service()
        await svc.settle()
        self.assertEqual(hosts(h), ["a.example"] * 4)
        for i in range(3):
            await h.event(account="b", queue_msg_id=200 + i)
        svc.kick()
        await svc.settle()
        self.assertEqual(hosts(h), ["a.example"] * 4 + ["b.example"] * 3)
        # Incoming webhooks of the same account have their own slots.
        store = h.store
        assert store is not None
        data = b"Subject: x\r\n\r\nx\r\n"
        hook = incoming_hook(h.config.accounts["a"], data, meta=DeliveryMeta(), received=T0)
        await deliver(store, "a", "Inbox", data, received=T0, incoming_webhook=hook)
        h.receiver.answers["a.example"] = lambda r: HOLD if r.path.endswith("outgoing") else 200
        svc.kick()
        await svc.settle()
        self.assertEqual(h.receiver.requests[-1].path, "/hooks/incoming")
        # Answering one of a's frees a slot for the next.
        await h.answer_held(svc, 200)
        self.assertEqual(len(h.receiver.by_host("a.example")), 6)
        self.assertEqual(len(h.receiver.held), 4)

    async def test_max_in_flight_configurable(self) -> None:
        h = Harness(self, b={"outgoing_webhook": webhook(OUT_B, max_in_flight=1)})
        h.open()
        h.receiver.answers["b.example"] = lambda r: HOLD
        for i in range(3):
            await h.event(account="b", queue_msg_id=300 + i)
        svc = h.service()
        await svc.settle()
        self.assertEqual(len(h.receiver.requests), 1)
        await h.answer_held(svc)
        self.assertEqual(len(h.receiver.requests), 2)


class LeaseTests(TestCase):
    async def test_stale_result_ignored(self) -> None:
        """A result that arrives after the lease passed to another attempt (another daemon,
        or after a restart) is not recorded; the current attempt's is."""
        h = Harness(self)
        h.open()
        hook_id = await h.event()
        svc = h.service(start=False)
        admit = dict(outgoing=svc.outgoing_config, compose=_compose, keep=svc.keep_period, new_webhook_id=lambda: "msg_x")
        await h.run(sw.admit_events, T0, **admit)
        claim = dict(slots=lambda t: 4, exclude=(), backoff=svc.backoff, lease_minimum=120.0,
                     new_token=iter(["t1", "t2"]).__next__, keep=svc.keep_period)  # fmt: skip
        first = await h.run(sw.claim_due, T0, **claim)
        (c1,) = first.claimed
        self.assertEqual((c1.token, c1.row.attempts, c1.row.next_attempt), ("t1", 1, T0 + 120))
        # Not due again while the lease runs.
        self.assertEqual((await h.run(sw.claim_due, T0 + 119, **claim)).claimed, [])
        (c2,) = (await h.run(sw.claim_due, T0 + 120, **claim)).claimed
        self.assertEqual((c2.token, c2.row.attempts), ("t2", 2))
        stale = sw.HookFinish(hook_id=hook_id, token="t1", start=T0, duration=130.0, now=T0 + 130, success=True, code=200)
        with self.assertRaises(sw.StaleHookLease):
            await h.run(sw.finish_attempt, stale)
        hook = await h.hook(hook_id)
        assert hook is not None
        self.assertEqual([(a.attempt, a.error) for a in hook.attempts], [(1, "delivering..."), (2, "delivering...")])
        current = sw.HookFinish(hook_id=hook_id, token="t2", start=T0 + 120, duration=1.0, now=T0 + 121,
                                success=True, code=200, keep=HOUR)  # fmt: skip
        result = await h.run(sw.finish_attempt, current)
        self.assertTrue(result.retired)
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.attempts, retired.last_activity), (True, 2, T0 + 120))

    async def test_service_ignores_stale_result(self) -> None:
        """The service's own attempt outlives its lease (another daemon took over and
        finished): its late result is dropped with a warning, nothing breaks."""
        h = Harness(self, timeout=600.0)
        h.open()
        h.receiver.answers["a.example"] = lambda r: HOLD
        hook_id = await h.event()
        svc = h.service()
        await svc.settle()

        def take_over(cursor: Any) -> None:
            cursor.execute("UPDATE event SET lease_token = 'other' WHERE id = ?", (hook_id,))

        await h.run(take_over)
        await h.answer_held(svc, 200)
        hook = await h.hook(hook_id)
        assert hook is not None
        self.assertEqual(hook.row.lease_token, "other")
        self.assertEqual(hook.attempts[0].error, "delivering...")

    async def test_restart_with_pending_webhooks(self) -> None:
        """Webhooks queued (and one in flight) when the service stops are sent after the
        next start; the one whose request was aborted goes out again at once."""
        h = Harness(self)
        h.open()
        h.receiver.answers["a.example"] = lambda r: HOLD
        held = await h.event(queue_msg_id=1)
        svc = h.service(start=False)
        svc.startService()
        await svc.settle()
        waiting = await h.event(queue_msg_id=2, account="b")
        h.receiver.answers["b.example"] = lambda r: 500
        svc.kick()
        await svc.settle()
        stopped = svc.stopService()
        h.clock.advance(svc.stop_grace)
        await stopped
        hook = await h.hook(held)
        assert hook is not None
        self.assertEqual(hook.attempts[0].error, "http transact: aborted, moxtw stopping")
        self.assertEqual(hook.row.next_attempt, T0 + svc.stop_grace)
        h.receiver.answers = {}
        again = h.service()
        await again.settle()
        self.assertEqual(hosts(h)[-1], "a.example")
        await h.advance(again, 60)
        self.assertEqual(hosts(h)[-1], "b.example")
        for hook_id in (held, waiting):
            r = await h.retired(hook_id)
            assert r is not None
            self.assertTrue(r.success)


def _compose(row: sw.HookRow) -> str:
    from moxtw.webhooks.payloads import outgoing_payload

    return outgoing_payload(row)


def attrs_evolve_account(config: Any, name: str, **changes: Any) -> Any:
    import attrs

    accounts = dict(config.accounts)
    accounts[name] = attrs.evolve(accounts[name], **changes)
    return attrs.evolve(config, accounts=accounts)


class SignatureTests(TestCase):
    """Standard Webhooks signatures, checked with the ``standardwebhooks`` package."""

    async def signed(self, secret: str, clock_time: float) -> Any:
        h = Harness(self, a={"outgoing_webhook": webhook(OUT_A, signing_secret=secret)})
        h.clock = type(h.clock)()
        h.clock.advance(clock_time)
        h.open()
        h.receiver.answers["a.example"] = lambda r: 500
        await h.event(created=clock_time)
        svc = h.service()
        await svc.settle()
        await h.advance(svc, 60)
        return h.receiver.requests

    async def test_good_signature_stable_id(self) -> None:
        first, second = await self.signed(SECRET, time.time())
        payload = Webhook(SECRET).verify(first.body, {k: v[0] for k, v in first.headers.items()})
        self.assertEqual(payload["Event"], "delivered")
        Webhook(SECRET).verify(second.body, {k: v[0] for k, v in second.headers.items()})
        self.assertEqual(first.header("webhook-id"), second.header("webhook-id"))
        self.assertNotEqual(first.header("webhook-timestamp"), second.header("webhook-timestamp"))
        self.assertTrue(first.header("webhook-signature").startswith("v1,"))

    async def test_tampered_body(self) -> None:
        (r, _) = await self.signed(SECRET, time.time())
        headers = {k: v[0] for k, v in r.headers.items()}
        with self.assertRaises(WebhookVerificationError):
            Webhook(SECRET).verify(r.body.replace(b"delivered", b"failed"), headers)

    async def test_old_timestamp(self) -> None:
        (r, _) = await self.signed(SECRET, time.time() - 3600)
        with self.assertRaises(WebhookVerificationError) as e:
            Webhook(SECRET).verify(r.body, {k: v[0] for k, v in r.headers.items()})
        self.assertIn("too old", str(e.exception))

    async def test_wrong_secret(self) -> None:
        (r, _) = await self.signed(SECRET, time.time())
        with self.assertRaises(WebhookVerificationError):
            Webhook(new_secret()).verify(r.body, {k: v[0] for k, v in r.headers.items()})

    async def test_unsigned_without_secret(self) -> None:
        h = Harness(self)
        h.open()
        await h.event()
        svc = h.service()
        await svc.settle()
        self.assertNotIn("webhook-signature", h.receiver.requests[0].headers)


class WiringTests(TestCase):
    async def test_queue_kicks_webhooks(self) -> None:
        """QueueService.on_event wakes the webhook service when an attempt's event is
        written: the delivered webhook follows the delivery without a timer."""
        from ..queue.harness import FakeTransport
        from ..queue.harness import Harness as QueueHarness

        h = Harness(self)
        store = h.open()
        svc = h.service()
        await svc.settle()
        q = QueueHarness(self, directory=h.directory)
        q.store = store
        q.config = attrs_evolve_account(h.config, "a")
        q.clock = h.clock
        queue = q.service(FakeTransport(), start=False)
        self.assertIsInstance(queue, QueueService)
        queue.on_event = svc.kick
        await q.queue("rcpt@remote.example", account="a", sender="a@example.org")
        queue.startService()
        self.addCleanup(queue.stopService)
        await queue.settle()
        await svc.settle()
        (r,) = h.receiver.requests
        body = json.loads(r.body)
        self.assertEqual((body["Event"], body["Extra"], body["SMTPCode"]), ("delivered", {"order": "42"}, 250))

    async def test_metrics(self) -> None:
        from prometheus_client import REGISTRY

        def value(name: str, **labels: str) -> float:
            return REGISTRY.get_sample_value(name, labels) or 0.0

        before_ok = value("moxtw_webhook_requests_total", kind="outgoing", result="200")
        before_500 = value("moxtw_webhook_requests_total", kind="outgoing", result="500")
        before_count = value("moxtw_webhook_duration_seconds_count", kind="outgoing")
        h = Harness(self)
        h.open()
        h.receiver.answers["b.example"] = lambda r: 500
        await h.event(account="a", queue_msg_id=1)
        await h.event(account="b", queue_msg_id=2)
        svc = h.service()
        await svc.settle()
        self.assertEqual(value("moxtw_webhook_requests_total", kind="outgoing", result="200"), before_ok + 1)
        self.assertEqual(value("moxtw_webhook_requests_total", kind="outgoing", result="500"), before_500 + 1)
        self.assertEqual(value("moxtw_webhook_duration_seconds_count", kind="outgoing"), before_count + 2)
        svc.kick()
        await svc.settle()
        self.assertEqual(value("moxtw_webhook_queue_length"), 1.0)
        self.assertIsInstance(svc, WebhookService)
