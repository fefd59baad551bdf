"""Protocol tests: real server protocols over in-memory transports (iosim, IPv4 addresses)."""

from __future__ import annotations

import base64
import json

import attrs
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.smtp.extra import DuplicateExtraKey, canonical_header_key, header_fields, parse_extra
from moxtw.smtp.incoming import special_code

from .fixture import PASSWORD, SMTPFixture

MESSAGE = (
    "From: mox@localhost",
    "To: you@example.org",
    "Subject: =?utf-8?q?caf=C3=A9?= time",
    "Message-ID: <m1@localhost>",
    "X-Mox-Extra-customer-id: 123",
    "x-mox-extra-campaign: spring",
    "",
    "hello",
    "..dotted",
)


def plain(user: str = "mox@localhost", password: str = PASSWORD) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class SubmissionTests(TestCase):
    def setUp(self) -> None:
        self.f = SMTPFixture(self, plaintext_auth=False)

    async def authed(self, user: str = "mox@localhost"):
        c = self.f.connect(self.f.factories.submission)
        await c.command("EHLO client.example")
        await c.command("STARTTLS")
        await c.command("EHLO client.example")
        reply = await c.command(f"AUTH PLAIN {plain(user)}")
        self.assertEqual(reply, b"235 2.7.0 nice")
        return c

    async def send_message(self, c, lines=MESSAGE) -> bytes:
        self.assertEqual(await c.command("DATA"), b"354 see you at the bare dot")
        have = len(c.client.replies)
        c.send(*lines, ".")
        return (await c.replies(have + 1))[-1]

    async def test_greeting_and_ehlo_capabilities(self) -> None:
        c = self.f.connect(self.f.factories.submission)
        self.assertEqual(c.client.replies, [b"220 localhost ESMTP moxtw"])
        ehlo = (await c.command("EHLO client.example")).split(b"\n")
        self.assertEqual(ehlo[0], b"250-localhost")
        caps = [line[4:] for line in ehlo[1:]]
        self.assertIn(b"PIPELINING", caps)
        self.assertIn(b"SIZE 104857600", caps)
        self.assertIn(b"STARTTLS", caps)
        self.assertIn(b"ENHANCEDSTATUSCODES", caps)
        self.assertIn(b"8BITMIME", caps)
        self.assertIn(b"SMTPUTF8", caps)
        self.assertIn(b"LIMITS RCPTMAX=1000", caps)
        self.assertTrue(any(cap.startswith(b"FUTURERELEASE 5184000 ") for cap in caps))
        # No AUTH and no REQUIRETLS before TLS.
        self.assertFalse(any(cap.startswith(b"AUTH") for cap in caps))
        self.assertNotIn(b"REQUIRETLS", caps)
        self.assertEqual(await c.command("STARTTLS"), b"220 2.0.0 ok")
        caps = [line[4:] for line in (await c.command("EHLO client.example")).split(b"\n")[1:]]
        self.assertIn(b"AUTH PLAIN LOGIN", caps)
        self.assertIn(b"REQUIRETLS", caps)
        self.assertNotIn(b"STARTTLS", caps)

    async def test_starttls_drops_injected_plaintext(self) -> None:
        c = self.f.connect(self.f.factories.submission)
        await c.command("EHLO client.example")
        have = len(c.client.replies)
        c.send("STARTTLS", "MAIL FROM:<mox@localhost>")
        self.assertEqual(c.client.replies[have:], [b"220 2.0.0 ok"])
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost>"), b"503 5.5.1 missing EHLO/HELO")

    async def test_auth_refused_without_tls(self) -> None:
        c = self.f.connect(self.f.factories.submission)
        await c.command("EHLO client.example")
        reply = await c.command(f"AUTH PLAIN {plain()}")
        self.assertEqual(reply[:10], b"538 5.7.11")
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost>"), b"530 5.7.0 authentication required")

    async def test_auth_plain_and_login(self) -> None:
        c = self.f.connect(self.f.factories.submission)
        await c.command("EHLO x")
        await c.command("STARTTLS")
        await c.command("EHLO x")
        self.assertEqual(await c.command(f"AUTH PLAIN {plain(password='wrong')}"), b"535 5.7.8 bad user/pass")
        self.assertEqual(await c.command("AUTH LOGIN"), b"334 VXNlcm5hbWU6")
        self.assertEqual(await c.command(base64.b64encode(b"mox@localhost")), b"334 UGFzc3dvcmQ6")
        self.assertEqual(await c.command(base64.b64encode(b"wrong")), b"535 5.7.8 bad user/pass")
        self.assertEqual(await c.command("AUTH PLAIN"), b"334 ")
        self.assertEqual(await c.command("*"), b"501 5.0.0 authentication aborted")
        self.assertEqual(await c.command("AUTH CRAM-MD5"), b"504 5.7.4 unrecognized authentication mechanism")
        self.assertEqual(await c.command("AUTH LOGIN " + base64.b64encode(b"mox@localhost").decode()), b"334 UGFzc3dvcmQ6")
        self.assertEqual(await c.command(base64.b64encode(PASSWORD.encode())), b"235 2.7.0 nice")
        self.assertEqual(await c.command(f"AUTH PLAIN {plain()}"), b"503 5.5.1 already authenticated")

    async def test_sequence_errors_and_unknown_command(self) -> None:
        c = self.f.connect(self.f.factories.submission)
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost>"), b"503 5.5.1 missing EHLO/HELO")
        c = await self.authed()
        self.assertEqual(await c.command("RCPT TO:<you@example.org>"), b"503 5.5.1 missing MAIL FROM")
        self.assertEqual(await c.command("DATA"), b"503 5.5.1 missing MAIL FROM")
        self.assertEqual(await c.command("FOO bar"), b"500 5.5.2 unknown command")
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost>"), b"250 2.1.0 looking good")
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost>"), b"503 5.5.1 already have MAIL FROM")
        self.assertEqual(await c.command("DATA"), b"503 5.5.1 missing RCPT TO")
        self.assertEqual(await c.command("MAIL FROM mox"), b"503 5.5.1 already have MAIL FROM")
        self.assertEqual(await c.command("RSET"), b"250 2.0.0 all clear")
        self.assertEqual(await c.command("MAIL FROM mox"), b"501 5.5.4 bad MAIL FROM syntax, expected FROM:<address>")
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost> FOO=1"), b"555 5.5.4 unrecognized parameter 'FOO'")
        self.assertEqual(await c.command("MAIL FROM:<other@example.com>"), b"550 5.7.1 must match authenticated user")
        self.assertEqual(await c.command("NOOP"), b"250 2.0.0 ok")
        self.assertEqual(await c.command("QUIT"), b"221 2.0.0 okay thanks bye")

    async def test_size_exceeded(self) -> None:
        f = SMTPFixture(self, edit=lambda t: t.replace('max_message_size = "100MiB"', "max_message_size = 200"))
        self.f = f
        c = await self.authed()
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost> SIZE=201"), b"552 5.3.4 message too large")
        await c.command("MAIL FROM:<mox@localhost> SIZE=100")
        await c.command("RCPT TO:<you@example.org>")
        reply = await self.send_message(c, [*MESSAGE, "x" * 200])
        self.assertEqual(reply, b"552 5.3.4 message too large")
        self.assertEqual(await self.f.queue_rows(), [])
        # The session continues.
        self.assertEqual(await c.command("MAIL FROM:<mox@localhost>"), b"250 2.1.0 looking good")

    async def test_too_many_recipients(self) -> None:
        c = await self.authed()
        c.server.options = attrs.evolve(c.server.options, max_recipients=2)
        await c.command("MAIL FROM:<mox@localhost>")
        self.assertEqual(await c.command("RCPT TO:<a@example.org>"), b"250 2.1.0 now on the list")
        await c.command("RCPT TO:<b@example.org>")
        self.assertEqual(await c.command("RCPT TO:<c@example.org>"), b"452 4.5.3 max number of recipients reached")

    async def test_submit_queues_with_extra_subject_and_message_id(self) -> None:
        c = await self.authed()
        # Pipelined: all commands in one go, replies in order.
        have = len(c.client.replies)
        c.send("MAIL FROM:<mox@localhost>", "RCPT TO:<you@example.org>", "RCPT TO:<usertemperror@example.org>", "DATA")
        replies = await c.replies(have + 4)
        self.assertEqual(
            replies[-4:],
            [b"250 2.1.0 looking good", b"250 2.1.0 now on the list", b"250 2.1.0 now on the list", b"354 see you at the bare dot"],
        )
        have = len(c.client.replies)
        c.send(*MESSAGE, ".")
        self.assertEqual((await c.replies(have + 1))[-1], b"250 2.2.0 it is done")
        rows = await self.f.queue_rows()
        self.assertEqual([r["recipient_address"] for r in rows], ["you@example.org", "usertemperror@example.org"])
        for r in rows:
            self.assertEqual(r["account"], "mox")
            self.assertEqual((r["sender_localpart"], r["sender_domain"]), ("mox", "localhost"))
            self.assertEqual(r["subject"], "café time")
            self.assertEqual(r["message_id"], "<m1@localhost>")
            self.assertEqual(json.loads(r["extra"]), {"Customer-Id": "123", "Campaign": "spring"})
            self.assertEqual(r["from_id"], "")
            self.assertEqual(r["base_id"], rows[0]["id"])
            self.assertEqual(r["hold"], 0)
            self.assertEqual(r["next_attempt"], self.f.clock.seconds())
        self.assertTrue(rows[0]["prefix"].startswith(b"Received: from client.example ([192.0.2.10]) by localhost with ESMTPSA id "))
        self.assertNotIn(b"\tfor <", rows[0]["prefix"])
        data = await self.f.store.blobs.get(rows[0]["blob"])
        self.assertIn(b"\r\n.dotted\r\n", data)
        self.assertIn(b"X-Mox-Extra-customer-id: 123\r\n", data)

    async def test_duplicate_extra_key(self) -> None:
        c = await self.authed()
        await c.command("MAIL FROM:<mox@localhost>")
        await c.command("RCPT TO:<you@example.org>")
        reply = await self.send_message(c, ["From: mox@localhost", "X-Mox-Extra-Foo: 1", "x-mox-extra-foo: 2", "", "hi"])
        self.assertEqual(reply, b'554 5.6.0 duplicate x-mox-extra- key "Foo"')
        self.assertEqual(await self.f.queue_rows(), [])
        self.assertEqual(await c.command("RSET"), b"250 2.0.0 all clear")

    async def test_from_header_must_belong_to_account(self) -> None:
        c = await self.authed()
        await c.command("MAIL FROM:<mox@localhost>")
        await c.command("RCPT TO:<you@example.org>")
        reply = await self.send_message(c, ["From: other@example.com", "", "hi"])
        self.assertEqual(reply, b"550 5.7.1 message from address must belong to authenticated user")

    async def test_drop_mid_data_leaves_nothing(self) -> None:
        c = await self.authed()
        await c.command("MAIL FROM:<mox@localhost>")
        await c.command("RCPT TO:<you@example.org>")
        await c.command("DATA")
        c.send(*MESSAGE)
        c.close()
        self.assertEqual(await self.f.queue_rows(), [])
        self.assertEqual(list((self.f.config.data_dir / "msgs").rglob("*")) if (self.f.config.data_dir / "msgs").exists() else [], [])
        self.assertEqual(self.f.factories.submission.connections, {})

    async def test_fromid_login_and_future_release(self) -> None:
        c = await self.authed("mox+fromid@localhost")
        await c.command("MAIL FROM:<mox+fromid@localhost> HOLDFOR=3600")
        await c.command("RCPT TO:<a@example.org>")
        await c.command("RCPT TO:<b@example.org>")
        self.assertEqual(await self.send_message(c, ["From: mox+fromid@localhost", "", "hi"]), b"250 2.2.0 it is done")
        rows = await self.f.queue_rows()
        self.assertEqual(len(rows), 2)
        for r in rows:
            self.assertEqual(len(r["from_id"]), 22)
            self.assertEqual(r["sender_localpart"], "mox+" + r["from_id"])
            self.assertEqual(r["future_release_request"], "for;3600")
            self.assertEqual(r["next_attempt"], self.f.clock.seconds() + 3600)
            self.assertTrue(r["message_id"].startswith("<") and r["message_id"].endswith("@localhost>"))
        self.assertNotEqual(rows[0]["from_id"], rows[1]["from_id"])
        # An explicit FromID in MAIL FROM is used, and must be unique.
        for expected in (b"250 2.2.0 it is done", b"554 5.1.7 bad fromid in smtp mail from address: fromid not unique: fromid 'myid' already present"):
            await c.command("MAIL FROM:<mox+myid@localhost>")
            await c.command("RCPT TO:<a@example.org>")
            self.assertEqual(await self.send_message(c, ["From: mox@localhost", "", "hi"]), expected)
        rows = await self.f.queue_rows()
        self.assertEqual(rows[-1]["from_id"], "myid")
        self.assertEqual(len(rows), 3)

    async def test_line_too_long_closes(self) -> None:
        c = await self.authed()
        c.send("NOOP " + "x" * 20000)
        await c.replies(len(c.client.replies))
        self.assertEqual(c.client.replies[-1], b"500 5.5.2 line too long")
        self.assertTrue(c.client.lost)

    async def test_command_timeout(self) -> None:
        c = self.f.connect(self.f.factories.submission)
        self.f.clock.advance(301)
        c.pump.flush()
        self.assertEqual(c.client.replies[-1], b"421 4.4.2 localhost timeout, closing connection")
        self.assertTrue(c.client.lost)

    async def test_connections_per_ip(self) -> None:
        conns = [self.f.connect(self.f.factories.submission) for _ in range(20)]
        extra = self.f.connect(self.f.factories.submission)
        self.assertEqual(extra.client.replies, [b"421 4.7.0 too many connections from your ip, try again later"])
        self.assertTrue(extra.client.lost)
        other = self.f.connect(self.f.factories.submission, ip="192.0.2.99")
        self.assertEqual(other.client.replies, [b"220 localhost ESMTP moxtw"])
        conns[0].close()
        again = self.f.connect(self.f.factories.submission)
        self.assertEqual(again.client.replies, [b"220 localhost ESMTP moxtw"])


class IncomingTests(TestCase):
    async def test_unknown_recipient_and_delivery(self) -> None:
        f = SMTPFixture(self, edit=lambda t: t.replace("localserve = true", "localserve = false"))
        c = f.connect(f.factories.smtp)
        caps = (await c.command("EHLO sender.example")).split(b"\n")
        self.assertFalse(any(b"AUTH" in cap for cap in caps))
        self.assertEqual(await c.command(f"AUTH PLAIN {plain()}"), b"503 5.5.1 authentication not allowed on this port")
        await c.command("MAIL FROM:<>")
        self.assertEqual(await c.command("RCPT TO:<nobody@example.org>"), b"550 5.1.1 no such user")
        self.assertEqual(await c.command("RCPT TO:<Mox+tag@localhost>"), b"250 2.1.0 now on the list")
        await c.command("DATA")
        have = len(c.client.replies)
        c.send("Subject: hi", "", "body", ".")
        self.assertEqual((await c.replies(have + 1))[-1], b"250 2.2.0 it is done")
        (m,) = f.delivered
        self.assertEqual((m.account, str(m.recipient), m.mail_from, m.remote_ip, m.tls), ("mox", "Mox+tag@localhost", "", "192.0.2.10", False))
        self.assertTrue(m.data.startswith(b"Received: from sender.example ([192.0.2.10]) by localhost with ESMTP id "))
        self.assertTrue(m.data.endswith(b"\r\nSubject: hi\r\n\r\nbody\r\n"))

    async def test_deliver_failure_451(self) -> None:
        f = SMTPFixture(self)
        f.deliver_error = RuntimeError("store down")
        c = f.connect(f.factories.smtp)
        await c.command("EHLO sender.example")
        await c.command("MAIL FROM:<alice@localhost>")
        await c.command("RCPT TO:<mox@localhost>")
        await c.command("DATA")
        have = len(c.client.replies)
        c.send("Subject: hi", "", "body", ".")
        self.assertEqual((await c.replies(have + 1))[-1], b"451 4.3.0 error delivering message, try again later")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_localserve_specials(self) -> None:
        f = SMTPFixture(self)
        c = f.connect(f.factories.smtp)
        await c.command("EHLO sender.example")
        self.assertEqual(await c.command("MAIL FROM:<mailfrompermerror@localhost>"), b"550 5.0.0 failure with code 550 due to special localpart")
        self.assertEqual(await c.command("MAIL FROM:<alice@localhost>"), b"250 2.1.0 looking good")
        self.assertEqual(await c.command("RCPT TO:<rcptto554@localhost>"), b"554 5.0.0 failure with code 554 due to special localpart")
        self.assertEqual(await c.command("RCPT TO:<rcpttotemperror@localhost>"), b"451 4.0.0 failure with code 451 due to special localpart")
        # Not a special at RCPT (no rcptto prefix), and unknown domains go to the account.
        self.assertEqual(await c.command("RCPT TO:<nobody@elsewhere.example>"), b"250 2.1.0 now on the list")
        self.assertEqual(await c.command("RCPT TO:<user451@localhost>"), b"250 2.1.0 now on the list")
        await c.command("DATA")
        have = len(c.client.replies)
        c.send("Subject: hi", "", "body", ".")
        self.assertEqual((await c.replies(have + 1))[-1], b"451 4.0.0 failure with code 451 due to special localpart")
        self.assertEqual(f.delivered, [])

    async def test_localserve_timeout_held_until_command_timeout(self) -> None:
        f = SMTPFixture(self)
        c = f.connect(f.factories.smtp)
        await c.command("EHLO sender.example")
        await c.command("MAIL FROM:<alice@localhost>")
        have = len(c.client.replies)
        c.send("RCPT TO:<rcpttotimeout@localhost>", "NOOP")
        f.clock.advance(299)
        c.pump.flush()
        self.assertEqual(len(c.client.replies), have)
        f.clock.advance(1)
        c.pump.flush()
        self.assertEqual(
            c.client.replies[have:],
            [b"451 4.3.0 timing out command due to special localpart", b"250 2.0.0 ok"],
        )


class ExtraTests(SynchronousTestCase):
    def test_canonical_key(self) -> None:
        self.assertEqual(canonical_header_key("x-mox-extra-x-cANONICAL-z"), "X-Mox-Extra-X-Canonical-Z")
        self.assertEqual(canonical_header_key("x-mox-extra-☺"), "x-mox-extra-☺")
        self.assertEqual(canonical_header_key("X-MOX-EXTRA-Mixed_KEY"), "X-Mox-Extra-Mixed_key")

    def test_parse_extra(self) -> None:
        data = (
            b"X-Mox-Extra-Test: testvalue\r\nX-Mox-Extra-a: 123\r\nX-Mox-Extra-\xe2\x98\xba: \xe2\x98\xb9\r\n"
            b"x-mox-extra-\xe2\x98\xba: no\r\nX-Mox-Extra-Folded: one\r\n\t two \r\nX-Mox-Extra-:\r\n\r\nX-Mox-Extra-Body: x\r\n"
        )
        self.assertEqual(
            parse_extra(header_fields(data)),
            {"Test": "testvalue", "A": "123", "☺": "☹", "Folded": "one two", "": ""},
        )
        self.assertIsNone(parse_extra(header_fields(b"Subject: x\r\n\r\n")))
        with self.assertRaises(DuplicateExtraKey) as e:
            parse_extra(header_fields(b"X-Mox-Extra-Foo: 1\r\nx-mox-extra-foo: 2\r\n\r\n"))
        self.assertEqual(str(e.exception), 'duplicate x-mox-extra- key "Foo"')

    def test_special_code(self) -> None:
        self.assertEqual(
            [special_code(x) for x in ("usertemperror", "xpermerror", "ytimeout", "user554", "a399", "a600", "plain")],
            # 600 is no SMTP reply code (mox takes it; moxtw does not).
            [451, 550, "timeout", 554, None, None, None],
        )
