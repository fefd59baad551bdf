"""The webhook queue's store functions: admission, claims, admin listing and changes,
migration 0005."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.config import WebhookConfig
from moxtw.store import webhooks as sw
from moxtw.store.database import _statements, migrate_sqlite, migrations
from moxtw.store.messages import DeliveryMeta, deliver
from moxtw.webhooks.payloads import outgoing_payload

from .harness import HOUR, OUT_A, OUT_B, T0, Harness

DEFAULT_SORT = sw.HookSort()
CONFIGS = {"a": WebhookConfig(url=OUT_A, authorization="Bearer x"), "b": WebhookConfig(url=OUT_B)}


def admit_args(**overrides: Any) -> dict[str, Any]:
    ids = iter(range(1, 1000))
    args: dict[str, Any] = {
        "outgoing": CONFIGS.get,
        "compose": outgoing_payload,
        "keep": lambda account: HOUR,
        "new_webhook_id": lambda: f"msg_{next(ids)}",
    }
    args.update(overrides)
    return args


def claim_args(**overrides: Any) -> dict[str, Any]:
    tokens = iter(range(1, 1000))
    args: dict[str, Any] = {
        "slots": lambda target: 4,
        "exclude": (),
        "backoff": lambda n: 60.0 * 2**n,
        "lease_minimum": 120.0,
        "new_token": lambda: f"t{next(tokens)}",
        "keep": lambda account: HOUR,
    }
    args.update(overrides)
    return args


class StoreTests(TestCase):
    async def setup(self) -> Harness:
        h = Harness(self)
        h.open()
        return h

    async def test_admission(self) -> None:
        h = await self.setup()
        e1 = await h.event(account="a", queue_msg_id=1)
        await h.event(account="c", queue_msg_id=2)
        e3 = await h.event(account="b", queue_msg_id=3, kind="failed")
        admitted, dropped, more = await h.run(sw.admit_events, T0 + 1, **admit_args())
        self.assertEqual((admitted, dropped, more), (2, 1, False))
        hooks = await h.hooks()
        self.assertEqual([x.row.id for x in hooks], [e1, e3])
        row = hooks[0].row
        self.assertEqual((row.url, row.auth_header, row.webhook_id, row.next_attempt), (OUT_A, "Bearer x", "msg_1", T0 + 1))
        self.assertEqual(row.payload, outgoing_payload(row))
        self.assertEqual(await h.run(sw.hook_queue_size), 2)
        # Admission pages.
        for i in range(5):
            await h.event(queue_msg_id=10 + i)
        self.assertEqual(await h.run(sw.admit_events, T0, **admit_args(), limit=3), (3, 0, True))
        self.assertEqual(await h.run(sw.admit_events, T0, **admit_args(), limit=3), (2, 0, False))

    async def test_claim_limits_and_order(self) -> None:
        h = await self.setup()
        ids = [await h.event(account="a", queue_msg_id=i) for i in range(1, 6)]
        b = await h.event(account="b", queue_msg_id=9)
        await h.run(sw.admit_events, T0, **admit_args())
        result = await h.run(sw.claim_due, T0, **claim_args(slots=lambda t: 2 if t.account == "a" else 4))
        self.assertEqual([c.row.id for c in result.claimed], [ids[0], ids[1], b])
        self.assertTrue(result.limited)
        self.assertFalse(result.more)
        self.assertEqual(result.next_due, T0 + 120)
        self.assertEqual(result.queued, 6)
        c = result.claimed[0]
        self.assertEqual((c.row.attempts, c.row.lease_token, c.backoff, c.final), (1, "t1", 60.0, False))
        # Excluded IDs (still being sent here) are skipped.
        result = await h.run(sw.claim_due, T0, **claim_args(exclude={ids[2]}))
        self.assertEqual([c.row.id for c in result.claimed], [ids[3], ids[4]])

    async def test_message_order_and_superseding_at_claim(self) -> None:
        """While a message's older webhook is queued (in flight), newer ones are not
        claimed.  When the older one's lease ran out (its daemon died), the claim retires
        it as superseded instead of sending it again."""
        h = await self.setup()
        first = await h.event(queue_msg_id=5, kind="delayed")
        await h.run(sw.admit_events, T0, **admit_args())
        (c,) = (await h.run(sw.claim_due, T0, **claim_args())).claimed
        self.assertEqual(c.row.id, first)
        second = await h.event(queue_msg_id=5, kind="delivered")
        await h.run(sw.admit_events, T0 + 1, **admit_args())
        self.assertEqual(sorted(x.row.id for x in await h.hooks()), [first, second])  # in flight: kept
        self.assertEqual((await h.run(sw.claim_due, T0 + 1, **claim_args())).claimed, [])
        result = await h.run(sw.claim_due, T0 + 120, **claim_args())
        self.assertTrue(result.more)
        self.assertEqual(result.claimed, [])
        retired = await h.retired(first)
        assert retired is not None
        self.assertEqual((retired.superseded_by_id, retired.success, retired.last_activity), (second, False, T0 + 120))
        (c2,) = (await h.run(sw.claim_due, T0 + 120, **claim_args())).claimed
        self.assertEqual(c2.row.id, second)

    async def test_last_attempt(self) -> None:
        h = await self.setup()
        hook_id = await h.event()
        await h.run(sw.admit_events, T0, **admit_args())

        def set_attempts(cursor: Any) -> None:
            cursor.execute("UPDATE event SET attempts = 11 WHERE id = ?", (hook_id,))

        await h.run(set_attempts)
        (c,) = (await h.run(sw.claim_due, T0, **claim_args())).claimed
        self.assertEqual((c.row.attempts, c.final, c.backoff, c.row.next_attempt), (12, True, 0.0, T0 + 120))
        f = sw.HookFinish(hook_id=hook_id, token=c.token, start=T0, duration=1.0, now=T0 + 1, success=False,
                          code=500, error="e", next_attempt=T0 + 1000, keep=HOUR)  # fmt: skip
        self.assertEqual(await h.run(sw.finish_attempt, f), sw.FinishResult(True))
        retired = await h.retired(hook_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.attempts, retired.keep_until), (False, 12, T0 + HOUR))

    async def test_incoming_with_deliver(self) -> None:
        """deliver() with an incoming webhook stores message and webhook in one
        transaction; the payload is built with the new message's ID."""
        h = await self.setup()
        store = h.store
        assert store is not None
        hook = sw.IncomingHook(url="http://in.example/", authorization="A", payload=lambda msg_id: f'{{"MsgID":{msg_id}}}',
                               webhook_id="msg_in", from_id="fid")  # fmt: skip
        data = b"Subject: hi\r\nMessage-Id: <x@y>\r\n\r\nbody\r\n"
        msg_id = await deliver(store, "a", "Inbox", data, received=T0, meta=DeliveryMeta(), incoming_webhook=hook)
        (x,) = await h.hooks()
        row = x.row
        self.assertEqual((row.kind, row.queue_msg_id, row.url, row.auth_header), ("incoming", 0, "http://in.example/", "A"))
        self.assertEqual((row.payload, row.webhook_id, row.from_id), (f'{{"MsgID":{msg_id}}}', "msg_in", "fid"))
        self.assertEqual((row.message_id, row.subject, row.created, row.next_attempt), ("<x@y>", "hi", T0, T0))
        self.assertTrue(row.is_incoming)
        self.assertEqual(row.event, "")
        # Admission leaves queued incoming webhooks alone.
        self.assertEqual(await h.run(sw.admit_events, T0, **admit_args()), (0, 0, False))
        self.assertEqual(len(await h.hooks()), 1)

    async def test_incoming_rolls_back_with_message(self) -> None:
        h = await self.setup()
        store = h.store
        assert store is not None

        def broken(msg_id: int) -> str:
            raise RuntimeError("no payload")

        hook = sw.IncomingHook(url="http://in.example/", authorization="", payload=broken, webhook_id="w")
        with self.assertRaises(RuntimeError):
            await deliver(store, "a", "Inbox", b"Subject: x\r\n\r\nx\r\n", received=T0, incoming_webhook=hook)

        def count(cursor: Any) -> int:
            cursor.execute("SELECT count(*) FROM message")
            return int(cursor.fetchone()[0])

        self.assertEqual(await h.run(count), 0)
        self.assertEqual(await h.events_left(), 0)


class AdminTests(TestCase):
    async def filled(self) -> Harness:
        """Queued: a1 (account a, delivered, T0), a2 (a, failed, T0+10), b1 (b, delayed,
        T0+20), in1 (a, incoming, T0+30); a2 claimed (in flight)."""
        h = Harness(self)
        h.open()
        self.a1 = await h.event(account="a", queue_msg_id=1, created=T0)
        self.a2 = await h.event(account="a", queue_msg_id=2, kind="failed", created=T0 + 10)
        self.b1 = await h.event(account="b", queue_msg_id=3, kind="delayed", created=T0 + 20)
        self.in1 = await h.run(sw.insert_incoming, account="a", url="http://a.example/in", authorization="",
                               payload="{}", webhook_id="w", created=T0 + 30)  # fmt: skip
        await h.run(sw.admit_events, T0 + 40, **admit_args())

        def schedule(cursor: Any) -> None:
            for hook_id, when in ((self.a1, T0 + 100), (self.a2, T0 + 200), (self.b1, T0 + 300), (self.in1, T0 + 400)):
                cursor.execute("UPDATE event SET next_attempt = ? WHERE id = ?", (when, hook_id))

        await h.run(schedule)
        only_a = claim_args(slots=lambda t: 1 if t.account == "a" and not t.incoming else 0)
        (c,) = (await h.run(sw.claim_due, T0 + 200, **only_a)).claimed
        self.assertEqual(c.row.id, self.a1)
        return h

    async def ids(self, h: Harness, f: sw.HookFilter, sort: sw.HookSort = DEFAULT_SORT) -> list[int]:
        return [x.row.id for x in await h.run(sw.list_hooks, f, sort)]

    async def test_list_filters_and_sort(self) -> None:
        h = await self.filled()
        everything = await self.ids(h, sw.HookFilter())
        # Default: next_attempt descending (a1 is leased until T0+320).
        self.assertEqual(everything, [self.in1, self.a1, self.b1, self.a2])
        self.assertEqual(await self.ids(h, sw.HookFilter(account="a")), [self.in1, self.a1, self.a2])
        self.assertEqual(await self.ids(h, sw.HookFilter(event="incoming")), [self.in1])
        self.assertEqual(await self.ids(h, sw.HookFilter(event="failed")), [self.a2])
        self.assertEqual(await self.ids(h, sw.HookFilter(ids=(self.a2, self.b1))), [self.b1, self.a2])
        self.assertEqual(await self.ids(h, sw.HookFilter(submitted=("<", T0 + 15))), [self.a1, self.a2])
        self.assertEqual(await self.ids(h, sw.HookFilter(next_attempt=(">", T0 + 250))), [self.in1, self.a1, self.b1])
        self.assertEqual(await self.ids(h, sw.HookFilter(account="a", event="delivered")), [self.a1])
        self.assertEqual(await self.ids(h, sw.HookFilter(max=2)), [self.in1, self.a1])
        self.assertEqual(await self.ids(h, sw.HookFilter(), sw.HookSort(field="submitted", asc=True)),
                         [self.a1, self.a2, self.b1, self.in1])  # fmt: skip
        page = await self.ids(h, sw.HookFilter(), sw.HookSort(field="submitted", asc=True, last_id=self.a2, last=T0 + 10))
        self.assertEqual(page, [self.b1, self.in1])
        with self.assertRaises(ValueError):
            await h.run(sw.list_hooks, sw.HookFilter(), sw.HookSort(field="bogus"))
        (a1,) = await h.run(sw.list_hooks, sw.HookFilter(ids=(self.a1,)))
        self.assertEqual([(a.attempt, a.error) for a in a1.attempts], [(1, "delivering...")])

    async def test_reschedule(self) -> None:
        h = await self.filled()
        now = T0 + 200
        # a1 is in flight: left alone.
        n = await h.run(sw.reschedule_hooks, sw.HookFilter(account="a"), now, 10, relative=False)
        self.assertEqual(n, 2)
        rows = {x.row.id: x.row for x in await h.hooks()}
        self.assertEqual((rows[self.a2].next_attempt, rows[self.in1].next_attempt), (now + 600, now + 600))
        self.assertEqual(rows[self.a1].next_attempt, T0 + 320)
        n = await h.run(sw.reschedule_hooks, sw.HookFilter(ids=(self.b1,)), now, -5, relative=True)
        self.assertEqual(n, 1)
        b1 = await h.hook(self.b1)
        assert b1 is not None
        self.assertEqual(b1.row.next_attempt, T0 + 300 - 300)

    async def test_cancel(self) -> None:
        h = await self.filled()
        n = await h.run(sw.cancel_hooks, sw.HookFilter(account="a"), T0 + 500, lambda account: HOUR)
        self.assertEqual(n, 3)
        self.assertEqual([x.row.id for x in await h.hooks()], [self.b1])
        retired = await h.retired(self.a1)
        assert retired is not None
        self.assertEqual((retired.success, retired.last_activity, retired.keep_until), (False, T0 + 500, T0 + 500 + HOUR))
        self.assertEqual([(a.attempt, a.error) for a in retired.results], [(1, "delivering..."), (1, "canceled by admin")])
        # The in-flight attempt's result is now ignored.
        f = sw.HookFinish(hook_id=self.a1, token="t1", start=T0 + 200, duration=1, now=T0 + 501, success=True, code=200)
        with self.assertRaises(sw.StaleHookLease):
            await h.run(sw.finish_attempt, f)

    async def test_retired_listing_and_cleanup(self) -> None:
        h = await self.filled()
        await h.run(sw.cancel_hooks, sw.HookFilter(ids=(self.a2,)), T0 + 500, lambda account: HOUR)
        await h.run(sw.cancel_hooks, sw.HookFilter(ids=(self.b1,)), T0 + 600, lambda account: 2 * HOUR)
        f = sw.HookFinish(hook_id=self.a1, token="t1", start=T0 + 200, duration=1, now=T0 + 201, success=True,
                          code=200, response=b"ok", keep=HOUR)  # fmt: skip
        await h.run(sw.finish_attempt, f)

        async def ids(f: sw.HookRetiredFilter, sort: sw.HookSort = DEFAULT_SORT) -> list[int]:
            return [r.id for r in await h.run(sw.list_retired_hooks, f, sort)]

        self.assertEqual(await ids(sw.HookRetiredFilter()), [self.b1, self.a2, self.a1])
        self.assertEqual(await ids(sw.HookRetiredFilter(success=True)), [self.a1])
        self.assertEqual(await ids(sw.HookRetiredFilter(account="b")), [self.b1])
        self.assertEqual(await ids(sw.HookRetiredFilter(last_activity=("<", T0 + 550))), [self.a2, self.a1])
        self.assertEqual(await ids(sw.HookRetiredFilter(), sw.HookSort(field="submitted", asc=True)),
                         [self.a1, self.a2, self.b1])  # fmt: skip
        (a1,) = await h.run(sw.list_retired_hooks, sw.HookRetiredFilter(ids=(self.a1,)))
        self.assertEqual((a1.authorization, a1.event, a1.results[0].response), (True, "delivered", b"ok"))
        self.assertEqual(await h.run(sw.remove_expired_retired_hooks, T0 + 500 + HOUR + 1), 2)
        self.assertEqual(await ids(sw.HookRetiredFilter()), [self.b1])
        self.assertEqual(await h.run(sw.hook_attempts, self.a1), [])


class MigrationTests(SynchronousTestCase):
    def test_0005_applies_after_0004_and_keeps_events(self) -> None:
        """A version 4 database with events gets the webhook columns (events wait for
        admission) and tables; 0005 uses nothing of 0004."""
        path = str(Path(self.mktemp()).absolute())
        all_migrations = migrations()
        self.assertEqual([v for v, _, _ in all_migrations][:5], [1, 2, 3, 4, 5])
        self.assertEqual(all_migrations[4][1], "0005_webhooks.sql")
        self.assertNotIn("hold_rule", all_migrations[4][2])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
        for version, name, sql in all_migrations[:4]:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))
        conn.execute("INSERT INTO event (account, kind, queue_msg_id, created) VALUES ('a', 'delivered', 1, 5.0)")
        conn.close()
        old, new = migrate_sqlite(path)
        self.assertEqual((old, new), (4, len(all_migrations)))
        conn = sqlite3.connect(path)
        row = conn.execute("SELECT admitted, url, attempts, next_attempt, lease_token FROM event").fetchone()
        self.assertEqual(row, (0, "", 0, 0.0, None))
        for table in ("hook_attempt", "hook_retired"):
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        conn.close()
