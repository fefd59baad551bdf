"""DSN and ARF parsing over a corpus in the formats of real MTAs (tests/dsn_corpus/)."""

from __future__ import annotations

from pathlib import Path

from twisted.trial.unittest import TestCase

from moxtw.dsnparse import DeliveryReport, FeedbackReport, ReportError, derive_codes, parse_report

CORPUS = Path(__file__).parent / "dsn_corpus"


def sample(name: str, from_id: str = "abc123") -> bytes:
    return (CORPUS / name).read_bytes().replace(b"FROMID", from_id.encode()).replace(b"\n", b"\r\n")


class CorpusTests(TestCase):
    def delivery(self, name: str) -> DeliveryReport:
        report = parse_report(sample(name))
        assert isinstance(report, DeliveryReport), report
        return report

    def test_bounces(self) -> None:
        """Each MTA's bounce gives the action, codes and diagnostic text a user sees."""
        cases = {
            # file: (reporting MTA, recipient, code, enhanced code, diagnostic starts with)
            "postfix_bounce.eml": ("mx.remote.test", "nobody@remote.test", 550, "5.1.1", "550 5.1.1 <nobody@remote.test>: Recipient address rejected"),
            "postfix_local_unknown.eml": ("mx.remote.test", "nobody@remote.test", 500, "5.1.1", 'unknown user: "nobody"'),
            "exim_bounce.eml": ("mx.exim.test", "nobody@exim.test", 550, "5.0.0", "550 Unrouteable address"),
            "exchange_ndr.eml": ("AM0PR01MB1234.eurprd01.prod.exchangelabs.com", "nobody@contoso.test", 550, "5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound"),
            "gmail_bounce.eml": ("googlemail.com", "nobody@gmail.test", 550, "5.1.1", "550-5.1.1 The email account that you tried to reach does not exist. Please try 550-5.1.1 double-checking"),
        }
        for name, (mta, rcpt, code, enhanced, diagnostic) in cases.items():
            report = self.delivery(name)
            r = report.primary()
            self.assertEqual((report.reporting_mta, r.final_recipient, r.action), (mta, rcpt, "failed"), name)
            self.assertEqual((r.code, r.enhanced_code), (code, enhanced), name)
            self.assertTrue(r.diagnostic.startswith(diagnostic), (name, r.diagnostic))

    def test_delay(self) -> None:
        r = self.delivery("gmail_delayed.eml").primary()
        self.assertEqual((r.action, r.status, r.code, r.enhanced_code), ("delayed", "4.4.1", 400, "4.4.1"))
        self.assertEqual(r.diagnostic, "The recipient server did not accept our requests to connect.")

    def test_unknown_action_skips_that_recipient_only(self) -> None:
        report = self.delivery("mixed_actions.eml")
        self.assertEqual(len(report.recipients), 1)
        r = report.primary()
        self.assertEqual((r.final_recipient, r.action, r.status, r.code, r.enhanced_code),
                         ("nobody@gw.test", "failed", "5.2.2", 552, "5.2.2"))

    def test_feedback_report(self) -> None:
        report = parse_report(sample("arf_abuse.eml", "f1d"))
        assert isinstance(report, FeedbackReport), report
        self.assertEqual(report.feedback_type, "abuse")
        self.assertEqual(report.user_agent, "SomeGenerator/1.0")
        self.assertEqual(report.original_mail_from, "app+f1d@example.org")
        self.assertEqual(report.original_rcpt_to, ("user@mailbox.test",))
        self.assertEqual(report.original_message_id, "<orig1@example.org>")
        self.assertEqual(report.original_return_path, "app+f1d@example.org")

    def test_not_a_report(self) -> None:
        self.assertIsNone(parse_report(sample("auto_reply.eml")))
        self.assertIsNone(parse_report(b"Subject: x\r\n\r\nbody\r\n"))
        self.assertIsNone(parse_report(b"\x00\xff garbage without headers"))

    def test_report_without_status_part(self) -> None:
        e = self.assertRaises(ReportError, parse_report, sample("report_without_status.eml"))
        self.assertIn("no message/delivery-status", str(e))

    def test_no_usable_recipient(self) -> None:
        data = sample("mixed_actions.eml").replace(b"Action: Failed", b"Action: bounced")
        e = self.assertRaises(ReportError, parse_report, data)
        self.assertEqual(str(e), "no usable recipient in delivery-status: unknown action 'deferred-forever'; unknown action 'bounced'")

    def test_base64_global_delivery_status(self) -> None:
        import base64

        status = (
            "Reporting-MTA: dns; mx.t\u00e9st.example\r\n\r\n"
            "Final-Recipient: utf-8; j\u00f6rg@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        ).encode()
        data = (
            b"From: x@y\r\nTo: app+abc@example.org\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="Z"\r\n\r\n'
            b"--Z\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
            b"--Z\r\nContent-Type: message/global-delivery-status\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            + base64.encodebytes(status).replace(b"\n", b"\r\n")
            + b"--Z--\r\n"
        )
        r = self.delivery_from(data).primary()
        self.assertEqual((r.final_recipient, r.code, r.enhanced_code), ("j\u00f6rg@remote.test", 500, "5.1.1"))

    def delivery_from(self, data: bytes) -> DeliveryReport:
        report = parse_report(data)
        assert isinstance(report, DeliveryReport), report
        return report


class DeriveCodesTests(TestCase):
    def test_mox_examples_and_liberal_forms(self) -> None:
        cases = [
            (("554 5.0.0 error", "5.0.0"), (554, "0.0")),  # spec §6.3 example
            (("550 4.1.1 x", "5.1.1"), (550, "1.1")),  # class digit from the code
            (("550-5.1.1 The email", "5.1.1"), (550, "1.1")),  # Gmail's continuation form
            (("550 Unrouteable address", "5.0.0"), (550, "0.0")),  # enhanced code from Status
            (("550 Unrouteable address", "4.0.0"), (550, "")),  # classes disagree: none
            (("unknown user", "5.1.1"), (500, "1.1")),
            (("", "4.4.1"), (400, "4.1")),
            (("", "2.0.0"), (0, "")),
        ]
        for args, expected in cases:
            self.assertEqual(derive_codes(*args), expected, args)
