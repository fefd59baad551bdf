"""The queue service over a real SQLite store, a test clock and fake transports."""

from __future__ import annotations

import email.utils
import sqlite3
from datetime import UTC, datetime
from typing import Any

from twisted.trial.unittest import TestCase

from moxtw.config import HoldRule, QueueConfig
from moxtw.queue import Result
from moxtw.store import outbox, recovery
from moxtw.store.database import Database
from moxtw.store.suppressions import add_suppression

from .harness import HOUR, T0, FakeTransport, Harness, outcome, temporary

#: Waits between attempts 1..8 with jitter 0 (mox §4.3).
WAITS = [450.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0]


def date(t: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(t, UTC))


def delivery_status(msg: Any) -> list[Any]:
    """The header blocks of the message/delivery-status part."""
    part = msg.get_payload()[1]
    assert part.get_content_type() == "message/delivery-status", part.get_content_type()
    return list(part.get_payload())


class RetryScheduleTests(TestCase):
    async def test_eight_attempts_delayed_dsn_and_failure_dsn(self) -> None:
        h = Harness(self)
        h.open()
        (msg_id,) = await h.queue("rcpt@remote.example")
        transport = FakeTransport(answer=temporary)
        q = h.service(transport)
        await q.settle()
        starts = [T0]
        self.assertEqual(len(transport.batches), 1)
        for i, wait in enumerate(WAITS):
            h.clock.advance(wait - 1)
            await q.settle()
            self.assertEqual(len(transport.batches), i + 1, f"attempt {i + 2} came early")
            h.clock.advance(1)
            await q.settle()
            self.assertEqual(len(transport.batches), i + 2, f"attempt {i + 2} not made")
            starts.append(h.clock.seconds())
            self.assertEqual(transport.batches[-1].attempt, i + 2)

        history = await h.history(msg_id)
        self.assertEqual([a.start for a in history], starts)
        self.assertEqual([a.attempt for a in history], list(range(1, 9)))
        for a in history:
            self.assertEqual((a.code, a.secode, a.success), (451, "3.0", False))
            self.assertEqual((a.remote_host, a.remote_ip, a.tls), ("mx.remote.example", "192.0.2.25", True))
            self.assertIn("451 4.3.0 try later", a.error)
            self.assertEqual(a.duration, 0.0)

        events = await h.events()
        self.assertEqual([e.kind for e in events], ["delayed"] * 7 + ["failed"])
        last = events[-1]
        self.assertEqual((last.queue_msg_id, last.smtp_code, last.smtp_enhanced_code), (msg_id, 451, "4.3.0"))
        self.assertEqual((last.message_id, last.subject, last.extra), ("<m1@example.org>", "hello", '{"order": "42"}'))
        self.assertFalse(last.suppressing)
        self.assertEqual(events[-1].created, starts[-1])

        self.assertIsNone(await h.queued(msg_id))
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertEqual((retired.attempts, retired.success, retired.event), (8, False, "failed"))

        inbox = await h.inbox()
        self.assertEqual([m["Subject"] for m in inbox], ["mail delivery delayed", "mail delivery failed"])
        delayed, failed = inbox
        # Fix 16: the delayed DSN (after the 5th attempt) states the real remaining times.
        text = delayed.get_payload()[0].get_content()
        remaining = [starts[5], starts[6], starts[7]]
        self.assertEqual(remaining, [starts[4] + 7200, starts[4] + 7200 + 14400, starts[4] + 7200 + 14400 + 28800])
        for t in remaining:
            self.assertIn(date(t), text)
        per_message, per_rcpt = delivery_status(delayed)
        self.assertEqual(per_rcpt["Action"], "delayed")
        self.assertEqual(per_rcpt["Status"], "4.3.0")
        self.assertEqual(per_rcpt["Will-Retry-Until"], date(remaining[-1]))

        self.assertEqual(failed.get_content_type(), "multipart/report")
        self.assertEqual(failed.get_param("report-type"), "delivery-status")
        self.assertEqual(failed["To"].addresses[0].addr_spec, "mox@example.org")
        parts = failed.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        per_message, per_rcpt = delivery_status(failed)
        self.assertEqual(per_message["Reporting-MTA"], "dns; mail.example.org")
        self.assertEqual(per_rcpt["Final-Recipient"], "rfc822; rcpt@remote.example")
        self.assertEqual(per_rcpt["Action"], "failed")
        self.assertEqual(per_rcpt["Status"], "5.3.0")
        self.assertEqual(per_rcpt["Remote-MTA"], "dns; mx.remote.example")
        self.assertTrue(per_rcpt["Diagnostic-Code"].startswith("smtp; 451 4.3.0 "))
        headers = parts[2].get_payload()
        self.assertIn("Subject: hello", str(headers))
        self.assertIn("Received: from test", str(headers))

    async def test_retry_scale_and_jitter(self) -> None:
        h = Harness(self, queue=QueueConfig(retry_scale=10.0))
        h.open()
        await h.queue()
        transport = FakeTransport(answer=temporary)
        q = h.service(transport, jitter=lambda: 4.0)
        await q.settle()
        self.assertEqual(q.backoff(0, jitter=0.0), 45.0)
        self.assertEqual(q.backoff(1), (450 + 4) * 2 / 10)
        h.clock.advance(45.3)
        await q.settle()
        self.assertEqual(len(transport.batches), 1)
        h.clock.advance(0.2)
        await q.settle()
        self.assertEqual(len(transport.batches), 2)


class OutcomeTests(TestCase):
    async def test_delivered(self) -> None:
        h = Harness(self)
        store = h.open()
        (msg_id,) = await h.queue()
        transport = FakeTransport()
        q = h.service(transport)
        await q.settle()
        batch = transport.batches[0]
        self.assertEqual(str(batch.mail_from), "mox@example.org")
        self.assertEqual(batch.domain, "remote.example")
        self.assertTrue(batch.data.startswith(b"Received: from test"))
        self.assertEqual(dict(batch.messages[0].extra), {"order": "42"})
        (event,) = await h.events()
        # Fix 2: the real final SMTP code and enhanced code.
        self.assertEqual((event.kind, event.smtp_code, event.smtp_enhanced_code, event.error), ("delivered", 250, "2.0.0", ""))
        (attempt,) = await h.history(msg_id)
        self.assertTrue(attempt.success)
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertTrue(retired.success)
        self.assertEqual(retired.keep_until, T0 + 72 * HOUR)
        self.assertEqual(retired.recipient_address, "rcpt@remote.example")
        self.assertEqual(await store.blobs.keys(), [])
        self.assertEqual(await h.inbox(), [])

    async def test_permanent_failure(self) -> None:
        h = Harness(self)
        h.open()
        (msg_id,) = await h.queue()
        transport = FakeTransport(answer=lambda m: outcome(m.id, Result.PERMANENT, 554, "5.0.0", "554 5.0.0 no"))
        q = h.service(transport)
        await q.settle()
        (event,) = await h.events()
        self.assertEqual((event.kind, event.smtp_code, event.smtp_enhanced_code, event.suppressing), ("failed", 554, "5.0.0", False))
        self.assertFalse(await h.suppressed("mox", "rcpt@remote.example"))
        (dsn,) = await h.inbox()
        self.assertEqual(delivery_status(dsn)[1]["Status"], "5.0.0")
        h.clock.advance(WAITS[0])
        await q.settle()
        self.assertEqual(len(transport.batches), 1)

    async def test_transport_error_is_temporary(self) -> None:
        h = Harness(self)
        h.open()
        (msg_id,) = await h.queue()

        def broken(batch: Any) -> Any:
            raise ConnectionRefusedError("nope")

        q = h.service(broken)
        await q.settle()
        self.flushLoggedErrors(ConnectionRefusedError)
        (event,) = await h.events()
        self.assertEqual((event.kind, event.smtp_code), ("delayed", 0))
        row = await h.queued(msg_id)
        assert row is not None
        self.assertEqual((row.attempts, row.next_attempt, row.lease_token), (1, T0 + 450, None))


class SuppressionTests(TestCase):
    async def test_suppressed_recipient_fails_without_transport(self) -> None:
        h = Harness(self)
        h.open()
        await h.run(add_suppression, "mox", "someone@remote.example", "someone@remote.example", True, "", T0)
        (msg_id,) = await h.queue("Some.One+tag@remote.example")
        (other,) = await h.queue("Some.One@remote.example", account="other")
        transport = FakeTransport()
        q = h.service(transport)
        await q.settle()
        # Only the other account's message reached the transport.
        self.assertEqual([[m.id for m in b.messages] for b in transport.batches], [[other]])
        events = {e.queue_msg_id: e for e in await h.events()}
        e = events[msg_id]
        self.assertEqual((e.kind, e.smtp_code, e.suppressing), ("suppressed", 0, False))
        self.assertEqual(e.error, "not delivering to recipient address Some.One+tag@remote.example: address is on suppression list, permanent")
        self.assertEqual(events[other].kind, "delivered")
        (attempt,) = await h.history(msg_id)
        self.assertEqual(attempt.error, e.error)
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertEqual((retired.event, retired.success), ("suppressed", False))
        (dsn,) = await h.inbox()
        self.assertEqual(dsn["Subject"], "mail delivery failed")

    async def test_immediate_automatic_suppression(self) -> None:
        h = Harness(self)
        h.open()
        (first,) = await h.queue("Bad.Guy+x@remote.example")
        transport = FakeTransport(answer=lambda m: outcome(m.id, Result.PERMANENT, 550, "5.1.0", "550 5.1.0 nok"))
        q = h.service(transport)
        await q.settle()
        (event,) = await h.events()
        self.assertTrue(event.suppressing)
        self.assertTrue(await h.suppressed("mox", "badguy@remote.example"))
        self.assertFalse(await h.suppressed("other", "badguy@remote.example"))

        def reason(cursor: Any) -> str:
            cursor.execute("SELECT reason, manual FROM suppression")
            (row,) = cursor.fetchall()
            return f"{row[0]}|{row[1]}"

        self.assertEqual(await h.run(reason), 'delivery failure from queue with smtp code 550, enhanced code "1.0"|0')
        # The next message to that recipient is suppressed without a transport call.
        (second,) = await h.queue("badguy@remote.example")
        q.kick()
        await q.settle()
        self.assertEqual(len(transport.batches), 1)
        kinds = [(e.queue_msg_id, e.kind) for e in await h.events()]
        self.assertEqual(kinds, [(first, "failed"), (second, "suppressed")])

    async def test_secode_makes_554_immediate(self) -> None:
        h = Harness(self)
        h.open()
        await h.queue()
        q = h.service(FakeTransport(answer=lambda m: outcome(m.id, Result.PERMANENT, 554, "5.1.1", "x")))
        await q.settle()
        self.assertTrue(await h.suppressed("mox", "rcpt@remote.example"))

    async def test_three_consecutive_failures_per_account(self) -> None:
        h = Harness(self)
        h.open()
        transport = FakeTransport(answer=lambda m: outcome(m.id, Result.PERMANENT, 554, "5.0.0", "554 5.0.0 no"))
        q = h.service(transport)
        # Two failures from another account do not count for "mox" (fix 6).
        for account in ("other", "other", "mox", "mox"):
            await h.queue(account=account)
            q.kick()
            await q.settle()
            h.clock.advance(1)
        self.assertFalse(await h.suppressed("mox", "rcpt@remote.example"))
        self.assertFalse(await h.suppressed("other", "rcpt@remote.example"))
        (third,) = await h.queue()
        q.kick()
        await q.settle()
        self.assertTrue(await h.suppressed("mox", "rcpt@remote.example"))
        last = (await h.events())[-1]
        self.assertEqual((last.queue_msg_id, last.suppressing), (third, True))

        def reason(cursor: Any) -> str:
            cursor.execute("SELECT reason FROM suppression WHERE account = 'mox'")
            return str(cursor.fetchone()[0])

        self.assertEqual(await h.run(reason), "delivery failure from queue and three consecutive failures")

    async def test_success_breaks_the_series(self) -> None:
        h = Harness(self)
        h.open()
        answers = iter([
            outcome(0, Result.PERMANENT, 554, "5.0.0"),
            outcome(0),
            outcome(0, Result.PERMANENT, 554, "5.0.0"),
        ])
        transport = FakeTransport(answer=lambda m: outcome(m.id, *_args(next(answers))))
        q = h.service(transport)
        for _ in range(3):
            await h.queue()
            q.kick()
            await q.settle()
            h.clock.advance(1)
        self.assertFalse(await h.suppressed("mox", "rcpt@remote.example"))


def _args(o: Any) -> tuple[Any, ...]:
    return (o.result, o.code, o.enhanced_code)


class LeaseTests(TestCase):
    async def test_dead_worker_is_retried_after_lease_and_stale_result_ignored(self) -> None:
        h = Harness(self)
        h.open(shared=True)
        (msg_id,) = await h.queue()
        stuck = FakeTransport(hold=True)
        a = h.service(stuck, lease_minimum=900.0)
        await a.settle()
        self.assertEqual(len(stuck.pending), 1)
        row = await h.queued(msg_id)
        assert row is not None
        first_token = row.lease_token
        self.assertEqual((row.attempts, row.next_attempt), (1, T0 + 900))

        # A second daemon on the same database: nothing to do while the lease lasts.
        other = FakeTransport(answer=temporary)
        b = h.service(other, lease_minimum=900.0)
        await b.settle()
        h.clock.advance(899)
        await b.settle()
        self.assertEqual(other.batches, [])
        h.clock.advance(1)
        await b.settle()
        self.assertEqual(len(other.batches), 1)
        row = await h.queued(msg_id)
        assert row is not None
        self.assertEqual((row.attempts, row.next_attempt, row.lease_token), (2, T0 + 900 + 900, None))

        # The first daemon's worker comes back with "delivered": too late, ignored.
        stuck.release()
        await a.settle()
        row = await h.queued(msg_id)
        assert row is not None
        self.assertEqual(row.attempts, 2)
        self.assertEqual([e.kind for e in await h.events()], ["delayed"])
        history = await h.history(msg_id)
        self.assertEqual([(x.token, x.duration) for x in history][0], (first_token, None))
        self.assertEqual(history[1].code, 451)

    async def test_stale_token_raises(self) -> None:
        h = Harness(self)
        h.open()
        (msg_id,) = await h.queue()
        f = outbox.Finish(msg_id=msg_id, token="bogus", kind="delivered", duration=0, now=T0)
        with self.assertRaises(outbox.StaleLease):
            await h.run(outbox.finish_attempt, None, f)
        self.assertEqual(await h.events(), [])


class LimitTests(TestCase):
    async def test_total_and_per_domain_limits(self) -> None:
        h = Harness(self, queue=QueueConfig(max_concurrent=3, max_per_domain=2))
        h.open()
        ids = []
        for r in ["a1@a.example", "a2@a.example", "a3@a.example", "b1@b.example", "b2@b.example", "b3@b.example"]:
            ids += await h.queue(r)
        transport = FakeTransport(hold=True)
        q = h.service(transport)
        await q.settle()
        high_total = high_a = high_b = 0

        def check() -> None:
            nonlocal high_total, high_a, high_b
            domains = [b.domain for b, _ in transport.pending]
            high_total = max(high_total, len(domains))
            high_a = max(high_a, domains.count("a.example"))
            high_b = max(high_b, domains.count("b.example"))

        check()
        self.assertEqual(sorted(b.domain for b, _ in transport.pending), ["a.example", "a.example", "b.example"])
        while transport.pending:
            transport.release(0)
            await q.settle()
            check()
        self.assertEqual(len(transport.batches), 6)
        self.assertEqual((high_total, high_a, high_b), (3, 2, 2))
        self.assertEqual([e.kind for e in await h.events()], ["delivered"] * 6)

    async def test_shared_submission_is_one_batch(self) -> None:
        h = Harness(self)
        store = h.open()
        ids = await h.queue("x@remote.example", "y@remote.example", "z@elsewhere.example")
        transport = FakeTransport()
        q = h.service(transport)
        await q.settle()
        got = sorted([m.id for m in b.messages] for b in transport.batches)
        self.assertEqual(got, sorted([[ids[0], ids[1]], [ids[2]]]))
        self.assertEqual(await store.blobs.keys(), [])


def release_all(transport: FakeTransport) -> None:
    """Answer every held delivery (a cleanup: a failed test must not hang the stop)."""
    while transport.pending:
        transport.release()


class SlotTests(TestCase):
    """A delivery's slot is free once its results are queued for the database; what
    that frees is claimed in the same group commit or a later one, never before."""

    def in_progress(self, h: Harness) -> dict[str, int]:
        """Committed attempts without a result, per recipient domain (read on a
        connection of its own: what a crash at this moment would leave)."""
        db = sqlite3.connect(h.directory / "moxtw.sqlite3")
        try:
            rows = db.execute(
                "SELECT m.recipient_domain, count(*) FROM queue_attempt a JOIN queue_msg m ON m.id = a.msg_id"
                " WHERE a.duration IS NULL GROUP BY m.recipient_domain"
            ).fetchall()
        finally:
            db.close()
        return dict(rows)

    async def test_limits_hold_in_the_database_and_everything_due_is_claimed(self) -> None:
        h = Harness(self, queue=QueueConfig(max_concurrent=3, max_per_domain=2))
        store = h.open()
        recipients = [f"a{i}@a.example" for i in range(7)] + [f"b{i}@b.example" for i in range(5)]
        for r in recipients:
            await h.queue(r)
        started: list[dict[str, int]] = []
        transport = FakeTransport(hold=True)

        def call(batch: Any) -> Any:
            started.append(self.in_progress(h))
            return transport(batch)

        q = h.service(call)
        self.addCleanup(release_all, transport)
        await q.settle()
        rounds = 0
        while transport.pending:
            # Every delivery in progress ends in the same reactor turn: the slots they
            # free are filled by as few passes as possible, and all of them are.
            while transport.pending:
                transport.release(0)
            await q.settle()
            rounds += 1
            domains = [b.domain for b, _ in transport.pending]
            left = 12 - len(transport.batches)
            self.assertEqual(len(domains), min(3, len(domains) + left))
            self.assertLessEqual(max([domains.count(d) for d in domains], default=0), 2)
        self.assertEqual(len(transport.batches), 12)
        self.assertEqual(rounds, 4)
        for counts in started:
            self.assertLessEqual(sum(counts.values()), 3, counts)
            self.assertLessEqual(max(counts.values()), 2, counts)
        self.assertEqual([e.kind for e in await h.events()], ["delivered"] * 12)
        self.assertEqual(await h.run(outbox.list_queued), [])
        # The message files, released several at a time, are all gone.
        self.assertEqual(await store.blobs.keys(), [])
        self.assertEqual(await h.run(outbox.releasable_blobs), [])

    async def test_result_and_next_claim_share_a_transaction(self) -> None:
        h = Harness(self, queue=QueueConfig(max_per_domain=1))
        store = h.open()
        await h.queue("x@remote.example")
        await h.queue("y@remote.example")
        batches: list[list[str]] = []
        original = Database._run_batch

        def run_batch(db: Database, cursor: Any, batch: Any) -> Any:
            batches.append([item.description for item in batch])
            return original(db, cursor, batch)

        self.patch(Database, "_run_batch", run_batch)
        transport = FakeTransport(hold=True)
        q = h.service(transport)
        self.addCleanup(release_all, transport)
        await q.settle()
        self.assertEqual(len(transport.pending), 1)
        batches.clear()
        transport.release()
        await q.settle()
        self.assertEqual(len(transport.pending), 1)
        self.assertIn(["finish queue attempt", "claim queue messages"], batches)
        self.assertEqual(self.in_progress(h), {"remote.example": 1})
        transport.release()
        await q.settle()
        self.assertEqual([e.kind for e in await h.events()], ["delivered"] * 2)
        self.assertEqual(await store.blobs.keys(), [])

    async def test_retry_due_during_its_own_attempt_is_not_left_waiting(self) -> None:
        # With a tiny retry interval the retry is due before the result is written:
        # the pass that the freed slot starts cannot claim it (still in flight), so
        # another pass follows the write.
        h = Harness(self, queue=QueueConfig(retry_scale=450_000.0))
        h.open()
        (msg_id,) = await h.queue()
        transport = FakeTransport(hold=True)
        q = h.service(transport)
        self.addCleanup(release_all, transport)
        await q.settle()
        h.clock.advance(1)
        transport.release(answer=temporary)
        await q.settle()
        self.assertEqual(len(transport.batches), 2)
        row = await h.queued(msg_id)
        assert row is not None
        self.assertEqual(row.attempts, 2)
        transport.release()
        await q.settle()
        self.assertEqual([e.kind for e in await h.events()], ["delayed", "delivered"])


class ClaimTests(TestCase):
    async def test_pages_exclusions_and_limits(self) -> None:
        """The claim reads small pages of due messages, skips excluded ones, leaves full
        domains out of the query and stops when the slots are used."""
        h = Harness(self)
        h.open()
        ids: list[int] = []
        for _ in range(2):
            for domain, n in (("a", 10), ("b", 5), ("c", 5)):
                for _i in range(n):
                    ids += await h.queue(f"r{len(ids)}@{domain}.example")
        limits = {"a.example": 2, "b.example": 3, "c.example": 10}
        tokens = iter(f"t{i}" for i in range(100))
        result = await h.run(
            outbox.claim_due, T0, slots=7, domain_slots=limits.__getitem__, exclude=frozenset(ids[:5]),
            backoff=lambda n: 450.0, lease_minimum=900.0, new_token=lambda: next(tokens),
        )
        self.assertEqual([[c.row.id for c in b] for b in result.batches],
                         [[ids[5]], [ids[6]], [ids[10]], [ids[11]], [ids[12]], [ids[15]], [ids[16]]])
        self.assertTrue(result.limited)
        self.assertEqual(result.next_due, T0 + 900)  # the leases
        first = result.batches[0][0]
        self.assertEqual((first.token, first.start, first.backoff, first.suppressed), ("t0", T0, 450.0, False))
        self.assertEqual((first.row.attempts, first.row.next_attempt, first.row.lease_token), (1, T0 + 900, "t0"))
        self.assertEqual(first.row.recipient_address, "r5@a.example")
        history = await h.history(ids[5])
        self.assertEqual([(a.attempt, a.token, a.duration) for a in history], [(1, "t0", None)])
        # The rest is claimed by later passes, the excluded ones included once released.
        rest = await h.run(
            outbox.claim_due, T0, slots=100, domain_slots=lambda d: 100, exclude=frozenset(),
            backoff=lambda n: 450.0, lease_minimum=900.0, new_token=lambda: next(tokens),
        )
        claimed = sorted(c.row.id for b in result.batches + rest.batches for c in b)
        self.assertEqual(claimed, sorted(ids))
        self.assertFalse(rest.limited)
        self.assertEqual(rest.next_due, T0 + 900)


class SettledTests(TestCase):
    """A claim that read every due message says so (``settled``); the next claim, when
    nothing but time changed the queue, reads only what became due since."""

    def claim_args(self, limits: dict[str, int], tokens: Any) -> dict[str, Any]:
        return {
            "domain_slots": lambda d: limits.get(d, 10), "exclude": frozenset(), "backoff": lambda n: 450.0,
            "lease_minimum": 900.0, "new_token": lambda: next(tokens),
        }

    async def test_settled_claim_reads_only_what_became_due(self) -> None:
        h = Harness(self)
        h.open()
        a = [i for _ in range(5) for i in await h.queue("x@a.example")]
        tokens = iter(f"t{i}" for i in range(100))
        first = await h.run(outbox.claim_due, T0, slots=10, **self.claim_args({"a.example": 2}, tokens))
        self.assertEqual([b[0].row.id for b in first.batches], a[:2])
        self.assertEqual(first.settled, (T0, frozenset({"a.example"})))
        # Behind the claimer's back (no kick): a message due at T0, after a's in the
        # queue's order.  And one due later.
        (old,) = await h.queue("y@b.example", next_attempt=T0)
        (later,) = await h.queue("z@c.example", next_attempt=T0 + 5)
        second = await h.run(
            outbox.claim_due, T0 + 10, slots=10, settled=first.settled, **self.claim_args({"a.example": 1}, tokens)
        )
        self.assertEqual([b[0].row.id for b in second.batches], [a[2], later])
        self.assertEqual(second.settled, (T0 + 10, frozenset({"a.example"})))
        # Without the promise everything due is read.
        third = await h.run(outbox.claim_due, T0 + 10, slots=10, **self.claim_args({"a.example": 0}, tokens))
        self.assertEqual([b[0].row.id for b in third.batches], [old])
        # Slots used up before the end: nothing is promised.
        fourth = await h.run(outbox.claim_due, T0 + 10, slots=1, **self.claim_args({}, tokens))
        self.assertEqual(len(fourth.batches), 1)
        self.assertIsNone(fourth.settled)

    async def test_settled_does_not_apply_when_a_full_domain_has_room(self) -> None:
        h = Harness(self)
        h.open()
        a = [i for _ in range(3) for i in await h.queue("x@a.example")]
        b = [i for _ in range(3) for i in await h.queue("y@b.example")]
        tokens = iter(f"t{i}" for i in range(100))
        first = await h.run(outbox.claim_due, T0, slots=10, **self.claim_args({"a.example": 1, "b.example": 1}, tokens))
        self.assertEqual(first.settled, (T0, frozenset({"a.example", "b.example"})))
        # b has room now and a is full: b's old messages are read.
        second = await h.run(
            outbox.claim_due, T0 + 1, slots=10, settled=first.settled,
            **self.claim_args({"a.example": 0, "b.example": 2}, tokens),
        )
        self.assertEqual([x[0].row.id for x in second.batches], b[1:])
        self.assertEqual([x[0].row.id for x in first.batches], [a[0], b[0]])

    async def test_backlog_for_one_domain_is_read_once(self) -> None:
        h = Harness(self, queue=QueueConfig(max_per_domain=2))
        h.open()
        for i in range(20):
            await h.queue(f"r{i}@busy.example")
        scans: list[tuple[tuple[str, ...], float | None]] = []
        original = outbox._select_due

        def select_due(cursor: Any, now: float, after: Any, page: int, skip: Any = (), since: Any = None) -> Any:
            scans.append((tuple(skip), since))
            return original(cursor, now, after, page, skip, since)

        self.patch(outbox, "_select_due", select_due)
        transport = FakeTransport(hold=True)
        q = h.service(transport)
        self.addCleanup(release_all, transport)
        await q.settle()
        self.assertEqual(len(transport.pending), 2)
        # The first pass reads the whole backlog once, leaving the full domain out.
        self.assertEqual(scans[-1], (("busy.example",), None))
        scans.clear()
        while transport.pending:
            transport.release()
            await q.settle()
        self.assertEqual(len(transport.batches), 20)
        # Later passes leave it out only for what became due since the previous pass.
        full_scans = [s for s in scans if s[0] and s[1] is None]
        self.assertEqual(full_scans, [])
        self.assertTrue(any(s[1] is not None for s in scans))

    async def test_kick_and_timer_look_at_the_whole_queue_again(self) -> None:
        h = Harness(self, queue=QueueConfig(max_per_domain=1))
        h.open()
        for i in range(3):
            await h.queue(f"r{i}@busy.example")
        transport = FakeTransport(hold=True)
        q = h.service(transport)
        self.addCleanup(release_all, transport)
        await q.settle()
        transport.release()
        await q.settle()
        self.assertEqual([b.domain for b, _ in transport.pending], ["busy.example"])
        # Queued with an old due time and announced: claimed by the next pass.
        (announced,) = await h.queue("x@other.example", next_attempt=T0 - 60)
        q.kick()
        await q.settle()
        self.assertEqual([m.id for b, _ in transport.pending for m in b.messages][-1], announced)
        transport.release(-1)
        await q.settle()
        # Not announced (another daemon sharing the database, say): passes started by
        # finished deliveries need not see it, the timer's pass does.
        (silent,) = await h.queue("y@other.example", next_attempt=T0 - 60)
        transport.release()
        await q.settle()
        h.clock.advance(q.max_sleep)
        await q.settle()
        self.assertIn(silent, [m.id for b in transport.batches for m in b.messages])


class HoldTests(TestCase):
    async def test_held_messages_are_not_attempted(self) -> None:
        h = Harness(self, hold_rules=(HoldRule(recipient_domain="held.example"),))
        h.open()
        (held,) = await h.queue("x@held.example")
        (free,) = await h.queue("x@remote.example")
        transport = FakeTransport()
        q = h.service(transport)
        await q.settle()
        h.clock.advance(10 * HOUR)
        await q.settle()
        self.assertEqual([[m.id for m in b.messages] for b in transport.batches], [[free]])
        row = await h.queued(held)
        assert row is not None
        self.assertEqual((row.hold, row.attempts), (True, 0))
        await h.run(outbox.set_hold, [held], False)
        q.kick()
        await q.settle()
        self.assertEqual(len(transport.batches), 2)
        # Applying a rule to queued messages: every non-empty field must match (fix 4).
        (a,) = await h.queue("x@later.example", account="other", next_attempt=T0 + 100 * HOUR)
        (b,) = await h.queue("x@later.example", next_attempt=T0 + 100 * HOUR)
        self.assertEqual(await h.run(outbox.hold_matching, account="mox", recipient_domain="later.example"), 1)
        rows = {r.id: r.hold for r in await h.run(outbox.list_queued)}
        self.assertEqual((rows[a], rows[b]), (False, True))


class RetirementTests(TestCase):
    async def test_kept_then_removed_by_hourly_cleanup(self) -> None:
        h = Harness(self, keep=2 * HOUR)
        store = h.open()
        transport = FakeTransport()
        q = h.service(transport)
        (msg_id,) = await h.queue()
        q.kick()
        await q.settle()
        self.assertIsNotNone(await h.retired(msg_id))
        self.assertEqual(len(await h.history(msg_id)), 1)
        h.clock.advance(HOUR)
        await q.settle()
        self.assertIsNotNone(await h.retired(msg_id))
        h.clock.advance(HOUR + 10)
        await q.settle()
        self.assertIsNone(await h.retired(msg_id))
        self.assertEqual(await h.history(msg_id), [])
        self.assertEqual(await store.blobs.keys(), [])

    async def test_not_kept_without_period(self) -> None:
        h = Harness(self, keep=0.0)
        h.open()
        (msg_id,) = await h.queue()
        q = h.service(FakeTransport())
        await q.settle()
        self.assertIsNone(await h.retired(msg_id))
        self.assertEqual(await h.history(msg_id), [])
        self.assertEqual([e.kind for e in await h.events()], ["delivered"])

    async def test_message_file_removed_when_unreferenced(self) -> None:
        h = Harness(self)
        store = h.open()
        first, second = await h.queue("x@a.example", "y@b.example")
        answers = {first: temporary}
        transport = FakeTransport(answer=lambda m: answers.get(m.id, lambda m: outcome(m.id))(m))
        q = h.service(transport)
        await q.settle()
        self.assertEqual(len(await store.blobs.keys()), 1)
        answers.clear()
        h.clock.advance(WAITS[0])
        await q.settle()
        self.assertEqual(await store.blobs.keys(), [])

        def gc(cursor: Any) -> int:
            cursor.execute("SELECT count(*) FROM blob_gc")
            return int(cursor.fetchone()[0])

        self.assertEqual(await h.run(gc), 0)

    async def test_drop_is_canceled(self) -> None:
        h = Harness(self)
        store = h.open()
        (msg_id,) = await h.queue(next_attempt=T0 + HOUR)
        q = h.service(FakeTransport())
        await q.settle()
        self.assertEqual(await q.drop([msg_id, 999]), [msg_id])
        (event,) = await h.events()
        self.assertEqual((event.kind, event.error), ("canceled", "delivery canceled by admin"))
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertEqual(retired.event, "canceled")
        self.assertEqual(await store.blobs.keys(), [])


class SchedulingTests(TestCase):
    async def test_kick_wakes_and_nothing_spins(self) -> None:
        h = Harness(self)
        h.open()
        transport = FakeTransport()
        q = h.service(transport)
        await q.settle()
        # Idle: one wake-up timer (max_sleep) and the cleanup timer, both in the future.
        calls = h.clock.getDelayedCalls()
        self.assertEqual(len(calls), 2)
        self.assertTrue(all(c.getTime() > h.clock.seconds() for c in calls))
        await h.queue()
        q.kick()
        await q.settle()
        self.assertEqual(len(transport.batches), 1)
        # A future message: the timer is set for its due time.
        await h.queue(next_attempt=T0 + 600)
        q.kick()
        await q.settle()
        self.assertIn(T0 + 600, [c.getTime() for c in h.clock.getDelayedCalls()])
        h.clock.advance(600)
        await q.settle()
        self.assertEqual(len(transport.batches), 2)

    async def test_stop_waits_for_deliveries(self) -> None:
        h = Harness(self)
        h.open()
        await h.queue()
        transport = FakeTransport(hold=True)
        q = h.service(transport)
        await q.settle()
        stopped = q.stopService()
        self.assertFalse(stopped.called)
        transport.release()
        await stopped
        self.assertEqual([e.kind for e in await h.events()], ["delivered"])
        self.assertEqual(h.clock.getDelayedCalls(), [])


class RestartTests(TestCase):
    async def _crash_mid_queue(self, h: Harness) -> list[int]:
        """Three messages: one delivered, one delayed, one claimed by a daemon that then
        died (its attempt never finished)."""
        h.open(shared=True)
        ids = []
        for r in ["a@x.example", "b@y.example", "c@z.example"]:
            ids += await h.queue(r)
        answers = {ids[0]: lambda m: outcome(m.id)}
        q = h.service(FakeTransport(answer=lambda m: answers.get(m.id, temporary)(m)))
        await q.settle()
        await q.stopService()
        await h.run(
            outbox.claim_due, T0 + 450, slots=1, domain_slots=lambda d: 1, exclude=frozenset([ids[1]]),
            backoff=lambda n: 450.0, lease_minimum=900.0, new_token=lambda: "dead",
        )
        await h.close()
        return ids

    async def test_restart_mid_queue_loses_nothing(self) -> None:
        """The only daemon of a store restarts: the attempt its crash interrupted is ended
        as interrupted and the message is retried at once, not after the lease."""
        h = Harness(self)
        ids = await self._crash_mid_queue(h)
        h.clock.advance(450)

        h.open()
        transport = FakeTransport()
        q2 = h.service(transport)
        await q2.settle()
        self.assertEqual(sorted(m.id for b in transport.batches for m in b.messages), [ids[1], ids[2]])
        kinds = sorted((e.queue_msg_id, e.kind) for e in await h.events())
        self.assertEqual(kinds, sorted([
            (ids[0], "delivered"), (ids[1], "delayed"), (ids[2], "delayed"),
            (ids[1], "delivered"), (ids[2], "delivered"),
        ]))
        self.assertEqual(await h.run(outbox.list_queued), [])
        self.assertEqual([a.success for a in await h.history(ids[1])], [False, True])
        # The interrupted attempt stays in the history, ended and marked as such.
        history = await h.history(ids[2])
        self.assertEqual([(a.token == "dead", a.success) for a in history], [(False, False), (True, False), (False, True)])
        self.assertEqual((history[1].duration, history[1].error), (0.0, recovery.INTERRUPTED))
        self.assertEqual([a.attempt for a in history], [1, 2, 3])

    async def test_shared_store_waits_for_the_lease(self) -> None:
        """With a database several daemons share, a restarted daemon cannot know the
        attempt is dead: the message waits for its lease to run out."""
        h = Harness(self)
        ids = await self._crash_mid_queue(h)
        h.open(shared=True)
        transport = FakeTransport()
        q2 = h.service(transport)
        await q2.settle()
        h.clock.advance(450)
        await q2.settle()
        self.assertEqual(len(transport.batches), 1)  # the third is still leased
        h.clock.advance(900)
        await q2.settle()
        self.assertEqual(len(transport.batches), 2)
        self.assertEqual(await h.run(outbox.list_queued), [])
        history = await h.history(ids[2])
        self.assertEqual([(a.token == "dead", a.duration is None, a.success) for a in history],
                         [(False, False, False), (True, True, False), (False, False, True)])
