"""Incoming delivery into accounts: DSN matching in the delivery transaction, incoming
webhooks for everything else, authentication results (moxtw.inbound)."""

from __future__ import annotations

import json
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from moxtw.address import Address
from moxtw.config import DomainConfig, WebhookConfig
from moxtw.delivery.mx import make_dns_resolver
from moxtw.inbound import Inbound
from moxtw.mailauth import Authenticator, Evaluator
from moxtw.smtp.incoming import IncomingMessage
from moxtw.store.webhooks import list_hooks
from tests.delivery.peers import DNSServer
from tests.queue.harness import Harness
from tests.store import test_dsnmatch
from tests.test_dsnparse import sample

ORDINARY = b"From: <someone@remote.test>\r\nTo: <mox@example.org>\r\nSubject: question\r\nMessage-ID: <q1@remote.test>\r\n\r\nhi\r\n"


class InboundTests(TestCase):
    def setUp(self) -> None:
        self.h = Harness(self)
        self.h.open()
        account = attrs.evolve(
            self.h.config.accounts["mox"],
            outgoing_webhook=WebhookConfig(url="http://127.0.0.1:9/out"),
            incoming_webhook=WebhookConfig(url="http://127.0.0.1:9/in"),
        )
        self.h.config = attrs.evolve(
            self.h.config,
            domains={"example.org": DomainConfig("example.org", catchall_separators=("+",))},
            accounts={**self.h.config.accounts, "mox": account},
        )
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-inbound")
        pool.start()
        self.addCleanup(pool.stop)
        self.dns = DNSServer(self)
        authenticator = Authenticator(Evaluator(make_dns_resolver(self.dns.config()), timeout=2.0), pool, reactor)
        assert self.h.store is not None
        self.events = 0
        self.inbound = Inbound(self.h.config, self.h.store, reactor, pool, authenticator, on_event=self.count)

    def count(self) -> None:
        self.events += 1

    def message(self, rcpt: str, data: bytes, mail_from: str = "") -> IncomingMessage:
        lp, dom = rcpt.split("@")
        return IncomingMessage(account="mox", recipient=Address(lp, dom), mail_from=mail_from, data=data,
                               remote_ip="127.0.0.1", tls=False, helo="mx.remote.test")

    async def hooks(self) -> list[tuple[str, int, bool]]:
        return [(h.row.kind, h.row.queue_msg_id, h.row.dsn) for h in await self.h.run(list_hooks)]

    async def test_bounce_for_a_fromid_is_matched_not_an_incoming_webhook(self) -> None:
        msg_id = await test_dsnmatch.MatchTests.sent(self, self.h, "zz9")  # type: ignore[arg-type]
        await self.inbound(self.message("mox+zz9@example.org", sample("postfix_bounce.eml", "zz9")))
        # The event is the outgoing webhook's record (the service admits it later); no
        # incoming webhook was queued.
        rows = await self.h.events()
        self.assertEqual([(e.kind, e.queue_msg_id, e.dsn, e.suppressing) for e in rows][-1], ("failed", msg_id, True, True))
        self.assertNotIn("incoming", [k for k, _, _ in await self.hooks()])
        self.assertGreaterEqual(self.events, 1)
        # The bounce itself is in the Inbox.
        inbox = await self.h.inbox()
        self.assertEqual(inbox[-1]["Subject"], "Undelivered Mail Returned to Sender")

    async def test_ordinary_message_gets_an_incoming_webhook_with_meta(self) -> None:
        from twisted.names import dns

        self.dns.zone.add("remote.test", dns.TXT, dns.Record_TXT(b"v=spf1 ip4:127.0.0.1 -all"))
        self.dns.zone.add("_dmarc.remote.test", dns.TXT, dns.Record_TXT(b"v=DMARC1; p=none"))
        await self.inbound(self.message("mox@example.org", ORDINARY, mail_from="someone@remote.test"))
        (hook,) = [h for h in await self.h.run(list_hooks) if h.row.kind == "incoming"]
        body: dict[str, Any] = json.loads(hook.row.payload)
        self.assertEqual(body["Subject"], "question")
        self.assertEqual(body["Meta"]["MailFrom"], "someone@remote.test")
        self.assertTrue(body["Meta"]["MailFromValidated"])
        self.assertTrue(body["Meta"]["MsgFromValidated"])
        self.assertEqual(body["Meta"]["RcptTo"], "mox@example.org")
        # The stored message starts with our Authentication-Results header.
        (stored,) = await self.h.inbox()
        self.assertIn("spf=pass smtp.mailfrom=remote.test", str(stored["Authentication-Results"]))
        def validated(cursor: Any) -> tuple[int, int]:
            cursor.execute("SELECT mail_from_validated, msg_from_validated FROM message ORDER BY id DESC LIMIT 1")
            return tuple(cursor.fetchone())  # type: ignore[return-value]

        self.assertEqual(await self.h.run(validated), (1, 1))

    async def test_unknown_fromid_is_an_ordinary_message(self) -> None:
        await self.inbound(self.message("mox+nothing@example.org", sample("postfix_bounce.eml", "nothing")))
        self.assertEqual([k for k, _, _ in await self.hooks()], ["incoming"])
        self.assertEqual([e.kind for e in await self.h.events()], ["incoming"])  # no outgoing event

    async def test_complaint_to_a_plain_address_matches_by_original_mail_from(self) -> None:
        msg_id = await test_dsnmatch.MatchTests.sent(self, self.h, "cc1", "user@mailbox.test")  # type: ignore[arg-type]
        data = sample("arf_abuse.eml", "cc1").replace(b"To: <mox+cc1@example.org>", b"To: <abuse@example.org>")
        await self.inbound(self.message("abuse@example.org", data.replace(b"app+cc1@", b"mox+cc1@")))
        rows = await self.h.events()
        self.assertEqual((rows[-1].kind, rows[-1].queue_msg_id), ("complaint", msg_id))
        self.assertNotIn("incoming", [k for k, _, _ in await self.hooks()])
