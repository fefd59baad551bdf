"""Incoming reports matched to retired messages by FromID (spec §6.2, fixes 6 and 8)."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from moxtw.dsnparse import parse_report
from moxtw.queue import Result
from moxtw.store import dsnmatch
from moxtw.store.queue import NewMessage, insert_messages
from moxtw.store.suppressions import list_suppressions
from tests.queue.harness import MESSAGE, PREFIX, FakeTransport, Harness, outcome
from tests.test_dsnparse import sample


class MatchTests(TestCase):
    async def sent(self, h: Harness, from_id: str, rcpt: str = "nobody@remote.test", delivered: bool = True,
                   account: str = "mox") -> int:
        """A message sent with ``from_id`` and retired (delivered, or failed with 451)."""
        lp, dom = rcpt.split("@")
        message = NewMessage(
            account=account, sender_localpart=f"mox+{from_id}", sender_domain="example.org",
            recipient_localpart=lp, recipient_domain=dom, recipient_address=rcpt, prefix=PREFIX,
            size=len(PREFIX) + len(MESSAGE), message_id="<orig1@example.org>", subject="hello",
            from_id=from_id, extra={"order": "42"},
        )
        assert h.store is not None
        now = h.clock.seconds()
        (msg_id,) = await h.store.run_with_blob("queue", MESSAGE, insert_messages, [message], now=now, next_attempt=now)
        answer: Any = (lambda m: outcome(m.id)) if delivered else (lambda m: outcome(m.id, Result.PERMANENT, 451, "4.0.0", "no"))
        q = h.service(FakeTransport(answer=answer))
        await q.settle()
        await q.stopService()
        assert await h.retired(msg_id) is not None
        return msg_id

    async def match(self, h: Harness, from_id: str, data: bytes, account: str = "mox") -> dsnmatch.Matched | None:
        try:
            report, problem = parse_report(data), ""
        except Exception as e:
            report, problem = None, str(e)
        return await h.run(dsnmatch.match_report, account=account, from_id=from_id, report=report, problem=problem, now=h.clock.seconds())  # type: ignore[no-any-return]

    async def test_bounce_after_delivered_fails_and_suppresses(self) -> None:
        h = Harness(self)
        h.open()
        msg_id = await self.sent(h, "f1")
        h.clock.advance(60)
        m = await self.match(h, "f1", sample("postfix_bounce.eml", "f1"))
        assert m is not None
        self.assertEqual((m.msg_id, m.account, m.event, m.dsn, m.suppressing), (msg_id, "mox", "failed", True, True))
        events = await h.events()
        e = events[-1]
        self.assertEqual((e.kind, e.queue_msg_id, e.from_id, e.message_id, e.subject, e.dsn, e.suppressing),
                         ("failed", msg_id, "f1", "<orig1@example.org>", "hello", True, True))
        self.assertEqual((e.smtp_code, e.smtp_enhanced_code), (550, "5.1.1"))
        self.assertTrue(e.error.startswith("550 5.1.1 <nobody@remote.test>: Recipient address rejected"), e.error)
        self.assertEqual(e.extra, '{"order": "42"}')
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertEqual((retired.success, retired.last_activity), (False, h.clock.seconds()))
        history = await h.history(msg_id)
        self.assertEqual((history[-1].code, history[-1].secode, history[-1].success), (550, "1.1", False))
        self.assertTrue(history[-1].error.startswith("incoming message: 550 5.1.1"))
        (s,) = await h.run(list_suppressions, "mox")
        self.assertEqual((s.base_address, s.manual), ("nobody@remote.test", False))
        self.assertEqual(s.reason, 'delivery failure from DSN with smtp code 550, enhanced code "1.1"')

    async def test_every_mta_format_matches(self) -> None:
        h = Harness(self)
        h.open()
        for i, (name, rcpt) in enumerate([
            ("postfix_local_unknown.eml", "nobody@remote.test"),
            ("exim_bounce.eml", "nobody@exim.test"),
            ("exchange_ndr.eml", "nobody@contoso.test"),
            ("gmail_bounce.eml", "nobody@gmail.test"),
        ]):
            from_id = f"mta{i}"
            msg_id = await self.sent(h, from_id, rcpt)
            m = await self.match(h, from_id, sample(name, from_id))
            assert m is not None, name
            self.assertEqual((m.msg_id, m.event, m.dsn), (msg_id, "failed", True), name)
        bases = sorted(s.base_address for s in await h.run(list_suppressions, "mox"))
        # Exim's 550 without an enhanced code: 550 is immediate; all four are suppressed.
        self.assertEqual(bases, ["nobody@contoso.test", "nobody@exim.test", "nobody@gmail.test", "nobody@remote.test"])

    async def test_delayed_dsn(self) -> None:
        h = Harness(self)
        h.open()
        msg_id = await self.sent(h, "d1", "slow@gmail.test")
        m = await self.match(h, "d1", sample("gmail_delayed.eml", "d1"))
        assert m is not None
        self.assertEqual((m.event, m.dsn, m.suppressing), ("delayed", True, False))
        e = (await h.events())[-1]
        self.assertEqual((e.smtp_code, e.smtp_enhanced_code, e.error),
                         (400, "4.4.1", "The recipient server did not accept our requests to connect."))
        retired = await h.retired(msg_id)
        assert retired is not None
        self.assertTrue(retired.success)  # a delay does not undo the delivery
        self.assertEqual(await h.run(list_suppressions, "mox"), [])

    async def test_not_a_dsn_and_unparsable(self) -> None:
        h = Harness(self)
        h.open()
        await self.sent(h, "u1")
        m = await self.match(h, "u1", sample("auto_reply.eml", "u1"))
        assert m is not None
        self.assertEqual((m.event, m.dsn), ("unrecognized", False))
        self.assertEqual((await h.events())[-1].error, "incoming message not a dsn")
        m = await self.match(h, "u1", sample("report_without_status.eml", "u1"))
        assert m is not None
        self.assertEqual((m.event, m.dsn), ("unrecognized", True))
        self.assertEqual((await h.events())[-1].error,
                         "parsing incoming dsn: no message/delivery-status or message/feedback-report part in multipart/report")

    async def test_unknown_fromid_is_an_ordinary_message(self) -> None:
        h = Harness(self)
        h.open()
        await self.sent(h, "k1")
        before = await h.events()
        self.assertIsNone(await self.match(h, "other", sample("postfix_bounce.eml", "other")))
        self.assertIsNone(await self.match(h, "", sample("postfix_bounce.eml", "")))
        self.assertEqual(await h.events(), before)

    async def test_event_and_suppression_belong_to_the_sending_account(self) -> None:
        h = Harness(self)
        h.open()
        await self.sent(h, "o1", account="other")
        self.assertIsNone(await self.match(h, "o1", sample("postfix_bounce.eml", "o1")))  # received by mox
        m = await self.match(h, "o1", sample("postfix_bounce.eml", "o1"), account="other")
        assert m is not None
        self.assertEqual(m.account, "other")
        self.assertEqual((await h.events())[-1].account, "other")
        self.assertEqual(len(await h.run(list_suppressions, "other")), 1)
        self.assertEqual(await h.run(list_suppressions, "mox"), [])

    async def test_complaint_suppresses(self) -> None:
        h = Harness(self)
        h.open()
        await self.sent(h, "c1", "user@mailbox.test")
        m = await self.match(h, "c1", sample("arf_abuse.eml", "c1"))
        assert m is not None
        self.assertEqual((m.event, m.dsn, m.suppressing), ("complaint", False, True))
        self.assertEqual((await h.events())[-1].error, "feedback report: abuse from SomeGenerator/1.0")
        (s,) = await h.run(list_suppressions, "mox")
        self.assertEqual((s.base_address, s.reason), ("user@mailbox.test", "feedback report (abuse)"))

    async def test_three_failures_counting_a_bounced_delivery(self) -> None:
        """Fix 6: two earlier messages that bounced after "delivered" count as failures;
        a third failure (a 554 DSN, not immediately suppressing) suppresses."""
        h = Harness(self)
        h.open()
        soft = sample("exim_bounce.eml", "X").replace(b"550 Unrouteable address", b"554 rejected for policy")
        for i in range(3):
            await self.sent(h, f"t{i}", "nobody@exim.test")
            h.clock.advance(10)
            m = await self.match(h, f"t{i}", soft.replace(b"app+X@", f"app+t{i}@".encode()))
            assert m is not None
            self.assertEqual(m.suppressing, i == 2, i)
