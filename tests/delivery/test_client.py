"""Delivery over real loopback sockets: twisted.names DNS, scripted ESMTP servers, TLS."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase

from moxtw.delivery import AttemptResult, Timeouts, deliver

from .peers import DROP, Certs, DNSServer, SMTPServer, make_resolver

MESSAGE = b"From: a@sender.test\r\nTo: x@example.test\r\nSubject: hi\r\n\r\n.leading dot\r\nline\r\n..two\r\n"
FAST = Timeouts(connect=2.0, command=2.0, data=0.5)


class DeliveryTestBase(TestCase):
    def setUp(self) -> None:
        self.dns = DNSServer(self)
        self.zone = self.dns.zone
        self.resolver = make_resolver(self, self.dns.config())
        self.zone.mx("example.test", (10, "mx.example.test"))
        self.zone.a("mx.example.test", "127.0.0.1")

    def server(self, **kwargs: Any) -> SMTPServer:
        return SMTPServer(self, **kwargs)

    async def deliver(self, port: int, recipients: Any = ("x@example.test",), **kwargs: Any) -> AttemptResult:
        args: dict[str, Any] = {
            "domain": "example.test",
            "mail_from": "a@sender.test",
            "recipients": list(recipients),
            "data": MESSAGE,
            "ehlo_hostname": "moxtw.test",
            "port": port,
            "timeouts": FAST,
        }
        args.update(kwargs)
        return await deliver(reactor, self.resolver, **args)


class DeliverTests(DeliveryTestBase):
    async def test_delivered_with_opportunistic_tls(self) -> None:
        # The certificate names "localhost", not the MX: opportunistic TLS does not verify.
        srv = self.server(certs=Certs(self, "localhost"))
        result = await self.deliver(srv.port)
        self.assertTrue(result.delivered, result)
        (r,) = result.recipients
        self.assertEqual((r.address, r.ok, r.permanent, r.code, r.enhanced, r.text), ("x@example.test", True, False, 250, "2.0.0", "queued"))
        self.assertEqual((result.host, result.ip, result.tls, result.error, result.dialed), ("mx.example.test", "127.0.0.1", True, "", ("127.0.0.1",)))
        (session,) = srv.sessions
        self.assertTrue(session.tls)
        self.assertEqual(session.commands[:2], ["EHLO moxtw.test", "STARTTLS"])
        self.assertEqual(session.commands[2:5], ["EHLO moxtw.test", f"MAIL FROM:<a@sender.test> SIZE={len(MESSAGE)}", "RCPT TO:<x@example.test>"])
        (message,) = srv.messages
        self.assertEqual(message[2], MESSAGE)  # dot-stuffing undone by the server: the same bytes

    async def test_no_log_lines_per_connection(self) -> None:
        # A factory per connection: no "Starting factory"/"Stopping factory" lines.
        srv = self.server()
        with capturedLogs() as events:
            for _ in range(2):
                result = await self.deliver(srv.port)
                self.assertTrue(result.delivered, result)
        self.assertEqual([e for e in events if "factory" in str(e.get("log_format", "")).lower()], [])

    async def test_per_recipient_results(self) -> None:
        for extensions in [("PIPELINING", "ENHANCEDSTATUSCODES"), ("ENHANCEDSTATUSCODES",)]:
            def rcpt(arg: str) -> str:
                if "busy" in arg:
                    return "450 4.2.1 mailbox busy"
                if "unknown" in arg:
                    return "550 5.1.1 no such user\n550 5.1.1 really"
                return "250 2.1.5 ok"

            srv = self.server(extensions=extensions, replies={"RCPT": rcpt})
            result = await self.deliver(srv.port, ["ok@example.test", "busy@example.test", "unknown@example.test", "ok2@example.test"])
            got = [(r.address, r.ok, r.permanent, r.code, r.enhanced) for r in result.recipients]
            self.assertEqual(got, [
                ("ok@example.test", True, False, 250, "2.0.0"),
                ("busy@example.test", False, False, 450, "4.2.1"),
                ("unknown@example.test", False, True, 550, "5.1.1"),
                ("ok2@example.test", True, False, 250, "2.0.0"),
            ])
            self.assertEqual(result.recipients[2].text, "no such user really")
            self.assertIn("550 5.1.1 no such user", result.recipients[2].error)
            self.assertTrue(result.recipients[1].temporary)
            (message,) = srv.messages
            self.assertEqual(message[1], ["TO:<ok@example.test>", "TO:<ok2@example.test>"])

    async def test_enhanced_codes_only_when_offered(self) -> None:
        srv = self.server(extensions=(), replies={"RCPT": "550 5.1.1 no such user"})
        result = await self.deliver(srv.port)
        (r,) = result.recipients
        self.assertEqual((r.permanent, r.code, r.enhanced, r.text), (True, 550, "", "5.1.1 no such user"))

    async def test_mail_from_rejected_applies_to_all(self) -> None:
        srv = self.server(replies={"MAIL": "553 5.7.1 sender refused"})
        result = await self.deliver(srv.port, ["a@example.test", "b@example.test"])
        self.assertEqual([(r.permanent, r.code, r.enhanced) for r in result.recipients], [(True, 553, "5.7.1")] * 2)
        self.assertEqual(srv.messages, [])
        self.assertNotIn("DATA", srv.sessions[0].commands)

    async def test_mail_from_4xx_without_pipelining_sends_no_rcpt(self) -> None:
        srv = self.server(extensions=("ENHANCEDSTATUSCODES",), replies={"MAIL": "451 4.3.0 try later"})
        result = await self.deliver(srv.port, ["a@example.test", "b@example.test"])
        self.assertEqual([(r.ok, r.permanent, r.code) for r in result.recipients], [(False, False, 451)] * 2)
        self.assertEqual([c.split()[0] for c in srv.sessions[0].commands], ["EHLO", "MAIL", "QUIT"])

    async def test_data_and_final_replies(self) -> None:
        srv = self.server(replies={"DATA": "554 5.6.0 no data for you"})
        result = await self.deliver(srv.port)
        self.assertEqual((result.recipients[0].permanent, result.recipients[0].code), (True, 554))
        srv2 = self.server(replies={"END": "452 4.3.1 disk full"})
        result = await self.deliver(srv2.port)
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code, r.enhanced), (False, False, 452, "4.3.1"))
        self.assertFalse(result.after_data)

    async def test_extensions_in_mail_from(self) -> None:
        srv = self.server()
        result = await self.deliver(srv.port, ["ü@example.test"], mail_from="é@sender.test", smtputf8=True, has_8bit=True, size=1234)
        self.assertTrue(result.delivered, result)
        self.assertIn("MAIL FROM:<é@sender.test> SIZE=1234 BODY=8BITMIME SMTPUTF8", srv.sessions[0].commands)
        self.assertIn("RCPT TO:<ü@example.test>", srv.sessions[0].commands)

    async def test_smtputf8_required_but_absent(self) -> None:
        srv = self.server(extensions=("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME"))
        result = await self.deliver(srv.port, ["ü@example.test"], smtputf8=True)
        r = result.recipients[0]
        self.assertEqual((r.permanent, r.code, r.enhanced), (True, 554, "5.6.7"))
        self.assertFalse(any(c.startswith("MAIL") for c in srv.sessions[0].commands))

    async def test_8bitmime_required_but_absent_is_temporary(self) -> None:
        srv = self.server(extensions=("PIPELINING",))
        result = await self.deliver(srv.port, has_8bit=True)
        self.assertTrue(result.recipients[0].temporary)
        self.assertIn("8BITMIME", result.error)

    async def test_size_over_announced_limit(self) -> None:
        srv = self.server(extensions=("SIZE 100",))
        result = await self.deliver(srv.port, data=b"x" * 200 + b"\r\n")
        r = result.recipients[0]
        self.assertEqual((r.permanent, r.code, r.enhanced), (True, 552, "5.3.4"))
        self.assertEqual(srv.messages, [])

    async def test_helo_fallback(self) -> None:
        srv = self.server(replies={"EHLO": "502 5.5.2 what is EHLO"})
        result = await self.deliver(srv.port)
        self.assertTrue(result.delivered, result)
        self.assertEqual(srv.sessions[0].commands[:3], ["EHLO moxtw.test", "HELO moxtw.test", "MAIL FROM:<a@sender.test>"])

    async def test_helo_refused_too(self) -> None:
        srv = self.server(replies={"EHLO": "502 no", "HELO": "550 go away"})
        result = await self.deliver(srv.port)
        self.assertEqual((result.recipients[0].permanent, result.recipients[0].code), (True, 550))


class HostOrderTests(DeliveryTestBase):
    def setUp(self) -> None:
        super().setUp()
        self.zone.mx("multi.test", (20, "mx2.multi.test"), (10, "mx1.multi.test"))
        self.zone.a("mx1.multi.test", "127.0.0.1")
        self.zone.a("mx2.multi.test", "127.0.0.2")
        self.first = self.server(interface="127.0.0.1")
        self.second = self.server(interface="127.0.0.2", port=self.first.port)

    async def multi(self, **kwargs: Any) -> AttemptResult:
        return await self.deliver(self.first.port, domain="multi.test", **kwargs)

    async def test_temporary_failure_tries_next_mx(self) -> None:
        self.first.greeting = "421 4.3.2 not now"
        result = await self.multi()
        self.assertTrue(result.delivered, result)
        self.assertEqual((result.host, result.ip), ("mx2.multi.test", "127.0.0.2"))
        self.assertEqual(result.dialed, ("127.0.0.1", "127.0.0.2"))
        self.assertEqual(len(self.second.messages), 1)

    async def test_all_rcpt_4xx_tries_next_mx(self) -> None:
        self.first.replies["RCPT"] = "451 4.7.1 greylisted"
        result = await self.multi()
        self.assertTrue(result.delivered, result)
        self.assertEqual(result.host, "mx2.multi.test")

    async def test_permanent_failure_stops(self) -> None:
        self.first.replies["RCPT"] = "550 5.1.1 unknown"
        result = await self.multi()
        self.assertTrue(result.permanent)
        self.assertEqual(self.second.sessions, [])

    async def test_all_hosts_fail_temporarily(self) -> None:
        self.first.greeting = "421 4.3.2 not now"
        self.second.replies["MAIL"] = "451 4.3.0 later"
        result = await self.multi()
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code), (False, False, 451))
        self.assertEqual(result.host, "mx2.multi.test")

    async def test_unreachable_ip_tries_next_ip(self) -> None:
        self.zone.a("two.multi.test", "127.0.0.3", "127.0.0.1")
        self.zone.mx("twoip.test", (10, "two.multi.test"))
        result = await self.deliver(self.first.port, domain="twoip.test")
        self.assertTrue(result.delivered, result)
        self.assertEqual(result.dialed, ("127.0.0.3", "127.0.0.1"))

    async def test_nothing_reachable(self) -> None:
        await self.first.stop()
        await self.second.stop()
        result = await self.multi()
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code), (False, False, 0))
        self.assertIn("connect", result.error)

    async def test_unresolvable_mx_host_skipped(self) -> None:
        self.zone.mx("partial.test", (10, "gone.partial.test"), (20, "mx1.multi.test"))
        result = await self.deliver(self.first.port, domain="partial.test")
        self.assertTrue(result.delivered, result)

    async def test_timeout_after_data_is_recorded_and_stops(self) -> None:
        self.first.replies["END"] = None  # never answers the final dot
        result = await self.multi()
        self.assertTrue(result.after_data_timeout)
        self.assertTrue(result.after_data)
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code), (False, False, 0))
        self.assertIn("timeout", r.error)
        self.assertEqual(self.second.sessions, [])  # not sent twice

    async def test_command_timeout(self) -> None:
        self.first.replies["RCPT"] = None
        self.second.greeting = None
        result = await self.multi()
        self.assertFalse(result.after_data_timeout)
        self.assertEqual(len(self.second.sessions), 1)
        self.assertIn("timeout", result.error)
        self.assertTrue(result.recipients[0].temporary)

    async def test_drop_mid_data(self) -> None:
        # The whole body (with its final dot) was written before the server hung up: the
        # client cannot know whether it arrived, so no other host is tried.
        self.first.drop_after_data_lines = 2
        result = await self.multi()
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code), (False, False, 0))
        self.assertIn("connection lost", r.error)
        self.assertTrue(result.after_data)
        self.assertFalse(result.after_data_timeout)
        self.assertEqual(self.first.messages, [])
        self.assertEqual(self.second.sessions, [])

    async def test_drop_before_body_tries_next_mx(self) -> None:
        self.first.replies["DATA"] = DROP
        result = await self.multi()
        self.assertTrue(result.delivered, result)
        self.assertEqual(result.host, "mx2.multi.test")
        self.assertEqual(len(self.second.messages), 1)


class DNSFailureTests(DeliveryTestBase):
    async def check(self, domain: str, permanent: bool, text: str) -> None:
        result = await self.deliver(25, ["a@" + domain, "b@" + domain], domain=domain)
        self.assertEqual([(r.ok, r.permanent, r.code) for r in result.recipients], [(False, permanent, 0)] * 2)
        self.assertIn(text, result.error)
        self.assertEqual(result.dialed, ())

    async def test_null_mx(self) -> None:
        self.zone.mx("nomail.test", (0, ""))
        await self.check("nomail.test", True, "does not accept mail")

    async def test_nxdomain(self) -> None:
        await self.check("missing.test", True, "NXDOMAIN")

    async def test_servfail(self) -> None:
        self.zone.servfail.add("broken.test")
        await self.check("broken.test", False, "SERVFAIL")

    async def test_implicit_mx_without_addresses(self) -> None:
        self.zone.add("bare.test", 16)  # a TXT-only name: exists, no MX, no A/AAAA
        await self.check("bare.test", True, "no address records")

    async def test_implicit_mx_delivery(self) -> None:
        srv = self.server()
        self.zone.a("plain.test", "127.0.0.1")
        result = await self.deliver(srv.port, domain="plain.test")
        self.assertTrue(result.delivered, result)
        self.assertEqual(result.host, "plain.test")


class TLSTests(DeliveryTestBase):
    async def test_starttls_refused_continues_in_plain_text(self) -> None:
        srv = self.server(certs=Certs(self, "localhost"), replies={"STARTTLS": "454 4.7.0 tls not available"})
        result = await self.deliver(srv.port)
        self.assertTrue(result.delivered, result)
        self.assertFalse(result.tls)
        self.assertEqual(len(srv.sessions), 1)

    async def test_handshake_failure_retries_in_plain_text(self) -> None:
        for require_tls in (None, False):
            srv = self.server(certs=Certs(self, "localhost"))
            srv.tls_garbage = True
            result = await self.deliver(srv.port, require_tls=require_tls)
            self.assertTrue(result.delivered, result)
            self.assertFalse(result.tls)
            self.assertEqual(len(srv.sessions), 2)
            self.assertNotIn("STARTTLS", srv.sessions[1].commands)

    async def test_require_tls_verified(self) -> None:
        certs = Certs(self, "mx.example.test")
        srv = self.server(certs=certs)
        result = await self.deliver(srv.port, require_tls=True, trust_root=certs.trust_root)
        self.assertTrue(result.delivered, result)
        self.assertTrue(result.tls)
        self.assertIn(f"MAIL FROM:<a@sender.test> SIZE={len(MESSAGE)} REQUIRETLS", srv.sessions[0].commands)

    async def test_require_tls_false_sends_no_requiretls(self) -> None:
        certs = Certs(self, "mx.example.test")
        srv = self.server(certs=certs)
        result = await self.deliver(srv.port, require_tls=False)
        self.assertTrue(result.tls)
        self.assertIn(f"MAIL FROM:<a@sender.test> SIZE={len(MESSAGE)}", srv.sessions[0].commands)

    async def test_require_tls_without_starttls_fails_permanently(self) -> None:
        srv = self.server()
        result = await self.deliver(srv.port, require_tls=True)
        r = result.recipients[0]
        self.assertEqual((r.permanent, r.code, r.enhanced), (True, 554, "5.7.30"))
        self.assertFalse(any(c.startswith("MAIL") for c in srv.sessions[0].commands))

    async def test_require_tls_without_requiretls_extension(self) -> None:
        certs = Certs(self, "mx.example.test")
        srv = self.server(certs=certs, tls_extensions=("PIPELINING",))
        result = await self.deliver(srv.port, require_tls=True, trust_root=certs.trust_root)
        self.assertEqual(result.recipients[0].enhanced, "5.7.30")
        self.assertTrue(result.recipients[0].permanent)

    async def test_require_tls_bad_certificate_is_temporary_no_plaintext(self) -> None:
        certs = Certs(self, "localhost")  # not the MX name
        srv = self.server(certs=certs)
        result = await self.deliver(srv.port, require_tls=True, trust_root=certs.trust_root)
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code), (False, False, 0))
        self.assertIn("tls", result.error)
        self.assertEqual(len(srv.sessions), 1)
        self.assertEqual(srv.messages, [])

    async def test_require_tls_untrusted_certificate(self) -> None:
        srv = self.server(certs=Certs(self, "mx.example.test"))
        other = Certs(self, "mx.example.test")
        result = await self.deliver(srv.port, require_tls=True, trust_root=other.trust_root)
        self.assertTrue(result.recipients[0].temporary)
        self.assertEqual(srv.messages, [])
