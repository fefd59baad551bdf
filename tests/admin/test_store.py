"""Queue administration on a real SQLite store: filters, sorting, operations, hold rules."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.admin.ops import AdminError, QueueAdmin
from moxtw.config import HoldRule
from moxtw.store import admin as sa
from moxtw.store import outbox
from moxtw.store.outbox import Finish, StaleLease
from moxtw.store.queue import NewMessage, insert_messages
from tests.queue.harness import HOUR, MESSAGE, PREFIX, T0, FakeTransport, Harness


def ids(items: list[Any]) -> list[int]:
    return [i.row.id for i in items]


class Setup:
    """A harness with a few queued messages of different accounts, senders, domains."""

    async def populate(self, testcase: TestCase, **config: Any) -> None:
        h = self.h = Harness(testcase, **config)
        self.store = h.open()
        changed: list[None] = []
        self.changed = changed
        self.admin = QueueAdmin(store=self.store, config=h.config, clock=h.clock, on_changed=lambda: changed.append(None))
        # a: mox, due now; b: mox, due in 1h, queued 10 min later; c: other, due in 2h.
        (self.a,) = await h.queue("alice@one.example", sender="mox@example.org")
        h.clock.advance(600)
        (self.b,) = await h.queue("bob@two.example", sender="news@example.org", next_attempt=T0 + HOUR)
        (self.c,) = await h.queue("carol@one.example", account="other", sender="other@example.org",
                                  next_attempt=T0 + 2 * HOUR)

    def now(self) -> float:
        return self.h.clock.seconds()

    def held_service(self, testcase: TestCase) -> tuple[FakeTransport, Any]:
        """A queue whose transport waits for the test; everything pending is answered
        before the queue is stopped at cleanup."""
        transport = FakeTransport(hold=True)
        q = self.h.service(transport)

        def drain() -> None:
            transport.hold = False
            while transport.pending:
                transport.release()

        testcase.addCleanup(drain)
        return transport, q

    async def listed(self, f: sa.Filter, sort: sa.Sort | None = None) -> list[int]:
        return ids(await self.h.run(sa.list_queue, f, sort or sa.Sort(), self.now()))

    async def row(self, msg_id: int) -> outbox.QueueRow:
        row = await self.h.queued(msg_id)
        assert row is not None
        return row


class FilterTests(Setup, TestCase):
    async def setUp(self) -> None:
        await self.populate(self)

    async def test_criteria(self) -> None:
        a, b, c = self.a, self.b, self.c
        self.assertEqual(sorted(await self.listed(sa.Filter())), [a, b, c])
        self.assertEqual(await self.listed(sa.Filter(ids=(a, c, 999))), [c, a])
        self.assertEqual(await self.listed(sa.Filter(account="other")), [c])
        self.assertEqual(await self.listed(sa.Filter(account="nobody")), [])
        # Substrings of localpart@domain; case-sensitive like mox's strings.Contains.
        self.assertEqual(await self.listed(sa.Filter(sender="news@")), [b])
        self.assertEqual(await self.listed(sa.Filter(sender="@example.org")), [c, b, a])
        self.assertEqual(await self.listed(sa.Filter(recipient="one.example")), [c, a])
        self.assertEqual(await self.listed(sa.Filter(recipient="ALICE")), [])
        # Both From and To: both must match (moxtw's fix 17; mox matches either).
        self.assertEqual(await self.listed(sa.Filter(sender="mox@", recipient="one.example")), [a])
        self.assertEqual(await self.listed(sa.Filter(sender="news@", recipient="one.example")), [])
        await self.h.run(outbox.set_hold, [b], True)
        self.assertEqual(await self.listed(sa.Filter(hold=True)), [b])
        self.assertEqual(await self.listed(sa.Filter(hold=False)), [c, a])
        self.assertEqual(await self.listed(sa.Filter(transport="")), [c, b, a])
        self.assertEqual(await self.listed(sa.Filter(transport="relay")), [])
        # Several criteria: all of them.
        self.assertEqual(await self.listed(sa.Filter(account="mox", hold=False)), [a])

    async def test_time_conditions(self) -> None:
        a, b, c = self.a, self.b, self.c
        # now = T0 + 600: a was queued at T0, b and c at T0 + 600.
        cond = sa.parse_time_condition
        self.assertEqual(await self.listed(sa.Filter(submitted=cond("<now"))), [a])
        self.assertEqual(await self.listed(sa.Filter(submitted=cond(">-5m"))), [c, b])
        self.assertEqual(await self.listed(sa.Filter(submitted=cond("<-5m"))), [a])
        # Strict comparison: queued exactly now is neither < now nor > now.
        self.assertEqual(await self.listed(sa.Filter(submitted=cond(">now"))), [])
        self.assertEqual(await self.listed(sa.Filter(next_attempt=cond("<now"))), [a])
        self.assertEqual(await self.listed(sa.Filter(next_attempt=cond(">1h"))), [c])
        self.assertEqual(await self.listed(sa.Filter(next_attempt=cond("<1h30m"))), [b, a])

    async def test_max_sort_and_pages(self) -> None:
        a, b, c = self.a, self.b, self.c
        # Default: next attempt, latest first.
        self.assertEqual(await self.listed(sa.Filter()), [c, b, a])
        self.assertEqual(await self.listed(sa.Filter(), sa.Sort(asc=True)), [a, b, c])
        self.assertEqual(await self.listed(sa.Filter(max=2)), [c, b])
        # Queued: b and c were queued at the same time; ties by ID in the same direction.
        self.assertEqual(await self.listed(sa.Filter(), sa.Sort(field="queued")), [c, b, a])
        self.assertEqual(await self.listed(sa.Filter(), sa.Sort(field="queued", asc=True)), [a, b, c])
        # Continue after the last item of a page (its time and ID).
        last = await self.row(b)
        page = sa.Sort(field="queued", last_id=b, last_us=round(last.queued * 1_000_000))
        self.assertEqual(await self.listed(sa.Filter(), page), [a])
        page = sa.Sort(field="queued", asc=True, last_id=b, last_us=round(last.queued * 1_000_000))
        self.assertEqual(await self.listed(sa.Filter(), page), [c])
        with self.assertRaises(sa.FilterError):
            await self.listed(sa.Filter(), sa.Sort(field="subject"))
        with self.assertRaises(sa.FilterError):
            await self.listed(sa.Filter(max=-1))

    async def test_list_has_attempt_history(self) -> None:
        await self.admin.set_hold(sa.Filter(ids=(self.b,)), True)
        transport, q = self.held_service(self)
        await q.settle()
        (item,) = await self.h.run(sa.list_queue, sa.Filter(ids=(self.a,)), sa.Sort(), self.now())
        self.assertEqual([(x.attempt, x.duration, x.error) for x in item.attempts], [(1, None, "delivering...")])
        self.assertEqual(item.row.attempts, 1)
        (item,) = await self.h.run(sa.list_queue, sa.Filter(ids=(self.b,)), sa.Sort(), self.now())
        self.assertEqual(item.attempts, [])


class RetiredFilterTests(Setup, TestCase):
    async def setUp(self) -> None:
        await self.populate(self)
        # a delivered at T0 + 600, b dropped at T0 + 1200, c failed at T0 + 1800.
        q = self.h.service(FakeTransport())
        await q.settle()
        self.h.clock.advance(600)
        await self.admin.drop(sa.Filter(ids=(self.b,)))
        self.h.clock.advance(600)
        await self.admin.fail(sa.Filter(ids=(self.c,)))

    async def retired(self, f: sa.RetiredFilter, sort: sa.Sort | None = None) -> list[int]:
        sort = sort or sa.Sort(field="last_activity")
        return ids(await self.h.run(sa.list_retired, f, sort, self.now()))

    async def test_criteria_and_sort(self) -> None:
        a, b, c = self.a, self.b, self.c
        self.assertEqual(await self.retired(sa.RetiredFilter()), [c, b, a])
        self.assertEqual(await self.retired(sa.RetiredFilter(), sa.Sort(field="last_activity", asc=True)), [a, b, c])
        self.assertEqual(await self.retired(sa.RetiredFilter(success=True)), [a])
        self.assertEqual(await self.retired(sa.RetiredFilter(success=False)), [c, b])
        self.assertEqual(await self.retired(sa.RetiredFilter(account="other")), [c])
        self.assertEqual(await self.retired(sa.RetiredFilter(ids=(a, b))), [b, a])
        self.assertEqual(await self.retired(sa.RetiredFilter(sender="news@")), [b])
        self.assertEqual(await self.retired(sa.RetiredFilter(recipient="@one.example")), [c, a])
        cond = sa.parse_time_condition
        self.assertEqual(await self.retired(sa.RetiredFilter(last_activity=cond(">-15m"))), [c, b])
        self.assertEqual(await self.retired(sa.RetiredFilter(last_activity=cond("<-15m"))), [a])
        self.assertEqual(await self.retired(sa.RetiredFilter(submitted=cond("<-25m"))), [a])
        self.assertEqual(await self.retired(sa.RetiredFilter(max=1)), [c])
        (item,) = await self.h.run(sa.list_retired, sa.RetiredFilter(ids=(a,)), sa.Sort(field="last_activity"), self.now())
        self.assertEqual(item.row.event, "delivered")
        self.assertEqual([(x.success, x.code) for x in item.attempts], [(True, 250)])
        with self.assertRaises(sa.FilterError):
            await self.retired(sa.RetiredFilter(), sa.Sort(field="next_attempt"))


class TimeConditionTests(SynchronousTestCase):
    def test_parse(self) -> None:
        p = sa.parse_time_condition
        self.assertIsNone(p(""))
        self.assertEqual(p("<now"), sa.TimeCondition("<", 0.0))
        self.assertEqual(p(">-1h"), sa.TimeCondition(">", -3600.0))
        self.assertEqual(p("<1h30m"), sa.TimeCondition("<", 5400.0))
        self.assertEqual(p(">1.5h"), sa.TimeCondition(">", 5400.0))
        self.assertEqual(p("<300ms"), sa.TimeCondition("<", 0.3))
        self.assertEqual(p("<0"), sa.TimeCondition("<", 0.0))
        for bad in ("now", "=now", "<yesterday", "<1d", "<1h-", ">", "<-"):
            with self.assertRaises(sa.FilterError, msg=bad) as e:
                p(bad)
            self.assertIn(repr(bad.strip()), str(e.exception))


class OperationTests(Setup, TestCase):
    async def setUp(self) -> None:
        await self.populate(self)

    async def test_hold_and_release(self) -> None:
        self.assertEqual(await self.admin.set_hold(sa.Filter(account="mox"), True), 2)
        self.assertEqual(self.changed, [])  # holding makes nothing due
        self.assertEqual(((await self.row(self.a)).hold, (await self.row(self.b)).hold, (await self.row(self.c)).hold),
                         (True, True, False))
        # Held messages are not attempted, even when due.
        transport = FakeTransport()
        q = self.h.service(transport)
        await q.settle()
        self.assertEqual(transport.batches, [])
        before = await self.row(self.a)
        self.assertEqual(await self.admin.set_hold(sa.Filter(ids=(self.a,)), False), 1)
        self.assertEqual(len(self.changed), 1)
        after = await self.row(self.a)
        self.assertEqual((after.hold, after.next_attempt), (False, before.next_attempt))
        # The kick (the daemon wires on_changed to queue.kick) delivers it at once.
        q.kick()
        await q.settle()
        self.assertEqual([[m.id for m in b.messages] for b in transport.batches], [[self.a]])

    async def test_reschedule(self) -> None:
        now = self.now()
        self.assertEqual(await self.admin.set_next_attempt(sa.Filter(ids=(self.b, self.c)), 5), 2)
        self.assertEqual((await self.row(self.b)).next_attempt, now + 300)
        self.assertEqual((await self.row(self.c)).next_attempt, now + 300)
        self.assertEqual(await self.admin.add_next_attempt(sa.Filter(ids=(self.b,)), -5), 1)
        self.assertEqual((await self.row(self.b)).next_attempt, now)
        self.assertEqual(await self.admin.add_next_attempt(sa.Filter(ids=(self.c,)), 60), 1)
        self.assertEqual((await self.row(self.c)).next_attempt, now + 300 + 3600)
        self.assertEqual(len(self.changed), 3)
        self.assertEqual(await self.admin.set_next_attempt(sa.Filter(ids=(999,)), 0), 0)
        self.assertEqual(len(self.changed), 3)

    async def test_reschedule_leaves_attempt_in_progress(self) -> None:
        transport, q = self.held_service(self)
        await q.settle()
        leased = await self.row(self.a)
        self.assertIsNotNone(leased.lease_token)
        # Shortening the lease would let another pass attempt it again meanwhile.
        self.assertEqual(await self.admin.set_next_attempt(sa.Filter(), 0), 2)
        self.assertEqual((await self.row(self.a)).next_attempt, leased.next_attempt)
        self.assertEqual((await self.row(self.b)).next_attempt, self.now())
        transport.release()
        await q.settle()

    async def test_require_tls(self) -> None:
        self.assertEqual(await self.admin.set_require_tls(sa.Filter(ids=(self.a,)), True), 1)
        self.assertEqual(await self.admin.set_require_tls(sa.Filter(ids=(self.b,)), False), 1)
        self.assertEqual(((await self.row(self.a)).require_tls, (await self.row(self.b)).require_tls,
                          (await self.row(self.c)).require_tls), (True, False, None))
        self.assertEqual(await self.admin.set_require_tls(sa.Filter(account="mox"), None), 2)
        self.assertIsNone((await self.row(self.a)).require_tls)
        # The next attempt uses it.
        await self.admin.set_require_tls(sa.Filter(ids=(self.a,)), True)
        transport = FakeTransport()
        q = self.h.service(transport)
        await q.settle()
        self.assertEqual([b.require_tls for b in transport.batches], [True])

    async def test_drop(self) -> None:
        self.assertEqual(await self.admin.drop(sa.Filter(ids=(self.a, 999))), [self.a])
        self.assertIsNone(await self.h.queued(self.a))
        (event,) = await self.h.events()
        self.assertEqual((event.kind, event.queue_msg_id, event.error, event.smtp_code),
                         ("canceled", self.a, "delivery canceled by admin", 0))
        retired = await self.h.retired(self.a)
        assert retired is not None
        self.assertEqual((retired.event, retired.success), ("canceled", False))
        self.assertEqual([a.error for a in await self.h.history(self.a)], ["delivery canceled by admin"])
        # No DSN; the message file of a is gone, the others' remain.
        self.assertEqual(await self.h.inbox(), [])
        self.assertEqual(len(await self.store.blobs.keys()), 2)
        # The "canceled" event waits for the webhook sender: the daemon is kicked.
        self.assertEqual(len(self.changed), 1)
        self.assertEqual(await self.admin.drop(sa.Filter(ids=(999,))), [])
        self.assertEqual(len(self.changed), 1)

    async def test_fail_takes_the_lease(self) -> None:
        transport, q = self.held_service(self)
        await q.settle()
        token = (await self.row(self.a)).lease_token
        assert token is not None
        self.assertEqual(await self.admin.fail(sa.Filter(ids=(self.a,))), [self.a])
        # The store refuses the attempt's result ...
        finish = Finish(msg_id=self.a, token=token, kind=outbox.DELIVERED, duration=1.0, now=self.now(), code=250)
        with self.assertRaises(StaleLease):
            await self.h.run(outbox.finish_attempt, None, finish)
        # ... and the queue ignores it when the transport answers.
        transport.release()
        await q.settle()
        self.assertEqual([e.kind for e in await self.h.events()], ["failed"])
        history = await self.h.history(self.a)
        self.assertEqual([a.error for a in history], [outbox.INTERRUPTED_ERROR, "delivery canceled by admin"])
        self.assertTrue(all(a.duration is not None for a in history))
        retired = await self.h.retired(self.a)
        assert retired is not None
        self.assertEqual(retired.event, "failed")

    async def test_drop_takes_the_lease(self) -> None:
        transport, q = self.held_service(self)
        await q.settle()
        token = (await self.row(self.a)).lease_token
        assert token is not None
        self.assertEqual(await self.admin.drop(sa.Filter(ids=(self.b, self.c))), [self.b, self.c])
        self.assertEqual(await self.admin.drop(sa.Filter(ids=(self.a,))), [self.a])
        finish = Finish(msg_id=self.a, token=token, kind=outbox.DELIVERED, duration=1.0, now=self.now(), code=250)
        with self.assertRaises(StaleLease):
            await self.h.run(outbox.finish_attempt, None, finish)
        transport.release()
        await q.settle()
        self.assertEqual([e.kind for e in await self.h.events()], ["canceled"] * 3)
        self.assertEqual(await self.store.blobs.keys(), [])

    async def test_fail_sends_failure_dsn(self) -> None:
        failed = await self.admin.fail(sa.Filter(account="mox"))
        self.assertEqual(failed, [self.a, self.b])
        self.assertEqual(len(self.changed), 1)  # the "failed" events go out as webhooks
        events = await self.h.events()
        self.assertEqual(sorted((e.queue_msg_id, e.kind, e.error, e.smtp_code) for e in events), [
            (self.a, "failed", "delivery canceled by admin", 0),
            (self.b, "failed", "delivery canceled by admin", 0),
        ])
        for msg_id in failed:
            retired = await self.h.retired(msg_id)
            assert retired is not None
            self.assertEqual((retired.event, retired.success), ("failed", False))
        dsns = await self.h.inbox("mox")
        self.assertEqual(len(dsns), 2)
        by_rcpt = {}
        for dsn in dsns:
            self.assertEqual(dsn["Subject"], "mail delivery failed")
            self.assertEqual(dsn.get_content_type(), "multipart/report")
            text, status, headers = dsn.iter_parts()
            self.assertIn("delivery canceled by admin", text.get_content())
            self.assertEqual(status.get_content_type(), "message/delivery-status")
            fields = status.get_payload()[1]
            self.assertEqual(fields["Action"], "failed")
            self.assertEqual(fields["Status"], "5.0.0")
            by_rcpt[fields["Final-Recipient"]] = dsn["To"]
            self.assertIn(b"Subject: hello", headers.get_payload(decode=True) or headers.as_bytes())
        self.assertEqual(by_rcpt, {"rfc822; alice@one.example": "mox@example.org",
                                   "rfc822; bob@two.example": "news@example.org"})
        self.assertEqual(await self.h.inbox("other"), [])
        # a's and b's files are removed; c's file and the two DSNs' remain.
        self.assertEqual(await self.admin.size(), 1)
        self.assertEqual(len(await self.store.blobs.keys()), 3)

    async def test_fail_skips_messages_gone_meanwhile(self) -> None:
        rows = await self.h.run(sa.select_rows, sa.Filter(ids=(self.a,)), self.now())
        self.assertEqual([r.id for r in rows], [self.a])
        await self.admin.drop(sa.Filter(ids=(self.a,)))
        # A Fail whose selection still had a: its DSN file is released, nothing delivered.
        store = self.store
        key = store.blobs.write(b"dsn")
        record = outbox.DSNRecord("mox", "mox@example.org", "postmaster@x", 3, "<x@x>", "s")
        done, released = await self.h.run(
            outbox.fail_messages, [key], [outbox.AdminFailure(self.a, record)], self.now(), lambda a: 3600.0
        )
        self.assertEqual((done, released), ([], [key]))
        await self.admin.release_blobs()
        self.assertNotIn(key, await store.blobs.keys())
        self.assertEqual(await self.h.inbox(), [])


class HoldRuleTests(Setup, TestCase):
    async def setUp(self) -> None:
        await self.populate(self)

    async def holds(self) -> dict[int, bool]:
        return {r.id: r.hold for r in await self.h.run(outbox.list_queued)}

    async def queue_new(self, recipient: str, account: str = "mox", sender: str = "mox@example.org") -> int:
        (msg_id,) = await self.h.queue(recipient, account=account, sender=sender, next_attempt=T0 + 10 * HOUR)
        return msg_id

    async def test_add_holds_queued_with_and_semantics(self) -> None:
        rule, held = await self.admin.add_hold_rule("mox", "", "one.example")
        self.assertEqual(held, 1)
        # a: mox to one.example (held); b: mox to two.example; c: other to one.example.
        self.assertEqual(await self.holds(), {self.a: True, self.b: False, self.c: False})
        self.assertEqual(self.changed, [])
        # New messages: the same AND semantics (fix 4), in the queueing transaction.
        d = await self.queue_new("dan@one.example")
        e = await self.queue_new("eve@one.example", account="other", sender="other@example.org")
        f = await self.queue_new("fay@two.example")
        holds = await self.holds()
        self.assertEqual((holds[d], holds[e], holds[f]), (True, False, False))
        self.assertEqual([r.id for r in await self.admin.hold_rules()], [rule.id])

    async def test_empty_rule_holds_everything_and_removal_releases_nothing(self) -> None:
        rule, held = await self.admin.add_hold_rule("", "", "")
        self.assertEqual(held, 3)
        d = await self.queue_new("dan@anywhere.example", account="other", sender="x@y.example")
        self.assertTrue(all((await self.holds()).values()))
        await self.admin.remove_hold_rule(rule.id)
        self.assertEqual(await self.admin.hold_rules(), [])
        # Removing does not release ...
        self.assertTrue(all((await self.holds()).values()))
        self.assertEqual(self.changed, [])
        # ... but later messages are no longer held.
        e = await self.queue_new("eve@anywhere.example")
        holds = await self.holds()
        self.assertEqual((holds[d], holds[e]), (True, False))
        with self.assertRaises(AdminError) as err:
            await self.admin.remove_hold_rule(rule.id)
        self.assertEqual(str(err.exception), f"no hold rule with ID {rule.id}")

    async def test_domains_are_normalised(self) -> None:
        rule, held = await self.admin.add_hold_rule("", " EXAMPLE.org ", "xn--bcher-kva.example")
        self.assertEqual((rule.sender_domain, rule.recipient_domain), ("example.org", "bücher.example"))
        self.assertEqual(held, 0)
        d = await self.queue_new("dan@bücher.example")
        e = await self.queue_new("eve@bucher.example")
        holds = await self.holds()
        self.assertEqual((holds[d], holds[e]), (True, False))
        _, held = await self.admin.add_hold_rule("", "", "TWO.Example")
        self.assertEqual(held, 1)
        self.assertTrue((await self.holds())[self.b])

    async def test_bad_input(self) -> None:
        with self.assertRaises(AdminError) as e:
            await self.admin.add_hold_rule("nobody", "", "")
        self.assertIn("unknown account 'nobody'", str(e.exception))
        with self.assertRaises(AdminError) as e:
            await self.admin.add_hold_rule("", "exa mple.org", "")
        self.assertIn("parsing sender domain 'exa mple.org'", str(e.exception))
        with self.assertRaises(AdminError):
            await self.admin.add_hold_rule("", "", "1.2.3.4")
        with self.assertRaises(AdminError):
            await self.admin.remove_hold_rule(12345)
        self.assertEqual(await self.admin.hold_rules(), [])
        self.assertFalse(any((await self.holds()).values()))


class ConfigHoldRuleTests(TestCase):
    async def test_config_rules_are_listed_fixed_and_match(self) -> None:
        h = Harness(self, hold_rules=(HoldRule(recipient_domain="XN--BCHER-KVA.example"),))
        store = h.open()
        admin = QueueAdmin(store=store, config=h.config, clock=h.clock)
        (held,) = await h.queue("x@bücher.example")
        (free,) = await h.queue("x@other.example")
        rows = {r.id: r.hold for r in await h.run(outbox.list_queued)}
        self.assertEqual((rows[held], rows[free]), (True, False))
        added, _ = await admin.add_hold_rule("other", "", "")
        rules = await admin.hold_rules()
        self.assertEqual([(r.id, r.account, r.recipient_domain) for r in rules],
                         [(0, "", "bücher.example"), (added.id, "other", "")])
        with self.assertRaises(AdminError) as e:
            await admin.remove_hold_rule(0)
        self.assertIn("configuration file", str(e.exception))

    async def test_insert_reads_rules_in_its_transaction(self) -> None:
        h = Harness(self)
        store = h.open()

        def add_and_queue(cursor: Any) -> list[int]:
            sa.add_hold_rule(cursor, "", "", "now.example", T0)
            message = NewMessage(
                account="mox", sender_localpart="mox", sender_domain="example.org", recipient_localpart="x",
                recipient_domain="now.example", recipient_address="x@now.example", prefix=PREFIX,
                size=len(PREFIX) + len(MESSAGE),
            )
            return insert_messages(cursor, "0" * 32, [message], now=T0, next_attempt=T0)

        (msg_id,) = await store.db.run("add and queue", add_and_queue)
        row = await h.queued(msg_id)
        assert row is not None
        self.assertTrue(row.hold)
