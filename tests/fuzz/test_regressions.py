"""Regression tests for the bugs the fuzzers found, one example each (see each docstring)."""

from __future__ import annotations

import base64
import email
import email.policy
import quopri
from datetime import UTC, datetime
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw import message as m
from moxtw.address import parse_address
from moxtw.config import ConfigError, parse_config, parse_duration
from moxtw.dsnparse import DeliveryReport, parse_report
from moxtw.smtp.incoming import special_code
from moxtw.webapi import compose as c
from tests.smtp.fixture import PASSWORD, SMTPFixture

# --- configuration ------------------------------------------------------------------------


class ConfigRegressions(SynchronousTestCase):
    def problems(self, text: str) -> list[str]:
        with self.assertRaises(ConfigError) as cm:
            parse_config('hostname = "localhost"\n' + text, base_dir=Path(self.mktemp()))
        return cm.exception.problems

    def test_unknown_home_directory(self) -> None:
        """``data_dir = "~nosuchuser/x"`` raised RuntimeError out of the loader."""
        (problem,) = self.problems('data_dir = "~nosuchuser_moxtw_zz/x"\n')
        self.assertTrue(problem.startswith("data_dir: expected a directory path"), problem)

    def test_nul_in_path(self) -> None:
        """A NUL in a path was accepted, and failed only when the daemon used it."""
        (problem,) = self.problems('data_dir = "a\\u0000b"\n')
        self.assertIn("NUL", problem)

    def test_nameserver_port_range(self) -> None:
        """A nameserver port beyond 65535 was accepted."""
        problems = self.problems('data_dir = "d"\n[dns]\nnameservers = ["127.0.0.1:99999", "127.0.0.1:0"]\n')
        self.assertEqual([p.split(":", 1)[0] for p in problems], ["dns.nameservers[0]", "dns.nameservers[1]"])

    def test_duration_overflow(self) -> None:
        """A duration of 400 digits was infinity, accepted as a webhook timeout."""
        with self.assertRaises(ValueError):
            parse_duration("1" * 400 + "h")
        (problem,) = self.problems('data_dir = "d"\n[webhooks]\ntimeout = "' + "1" * 400 + 'h"\n')
        self.assertTrue(problem.startswith("webhooks.timeout: expected a duration"), problem)


# --- the MIME parser (MessageGet, incoming webhooks) -------------------------------------


class MessageRegressions(SynchronousTestCase):
    def test_quoted_localpart_stays_quoted(self) -> None:
        """Found by the long fuzz profile: ``To: "."@0`` came back from the envelope as
        ``.@0`` (Python's addr_spec drops the quotes a lone dot needs)."""
        for written, want in (('"."@0', '"."@0'), ('"a..b"@x.example', '"a..b"@x.example'), ('"ab"@x', "ab@x")):
            env = m.envelope(m.parse(f"To: {written}\r\n\r\nbody\r\n".encode()))
            self.assertEqual([a.address for a in env.to], [want])

    def test_charset_that_is_no_text_encoding(self) -> None:
        """charset=hex/rot13/base64 (Python codecs that are no text encodings) and
        idna/undefined (no "replace" errors) made readable_parts raise."""
        for charset in ("hex", "rot13", "base64", "zlib", "idna", "undefined", "punycode"):
            data = f"Content-Type: text/plain; charset={charset}\r\n\r\n\xff body".encode("latin-1")
            text, _, found = m.readable_parts(m.parse(data))
            self.assertTrue(found)
            self.assertIn("body", text, charset)

    def test_encoded_words_with_odd_charsets(self) -> None:
        """RFC 2047 words and RFC 2231 parameters in such charsets raised UnicodeError."""
        self.assertEqual(m.decode_words("=?idna?q?=FF?= x"), "=?idna?q?=FF?= x")
        self.assertEqual(m.decode_words("=?undefined?b?QQ==?="), "=?undefined?b?QQ==?=")
        part = m.parse(b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename*=idna''%FF\r\n\r\nx")
        self.assertEqual(part.disposition_filename()[0], "attachment")

    def test_utf8_localpart_and_del_in_name(self) -> None:
        """From/To with a UTF-8 localpart (SMTPUTF8) or a DEL in the display name came
        out as [] in MessageGet and incoming webhooks."""
        env = m.envelope(m.parse("From: Jöhn <jöhn@example.org>\r\nTo: =?utf-8?q?a=7Fb?= <b@example.org>\r\n\r\n".encode()))
        self.assertEqual([(a.name, a.address) for a in env.from_], [("Jöhn", "jöhn@example.org")])
        self.assertEqual([(a.name, a.address) for a in env.to], [("a\x7fb", "b@example.org")])

    def test_whitespace_kept_after_plain_question_equals(self) -> None:
        """Plain text ending in "?=" before an encoded-word lost the space between them
        ("?= ü" read as "?=ü"): only whitespace between two encoded-words goes."""
        self.assertEqual(m.decode_words("?= =?utf-8?q?=C3=BC?="), "?= ü")
        self.assertEqual(m.decode_words("=?utf-8?q?a?= \t=?utf-8?q?b?="), "ab")
        self.assertEqual(m.decode_words("=?x-unknown?q?a?= =?utf-8?q?b?="), "=?x-unknown?q?a?= b")

    def test_display_name_decoded_once(self) -> None:
        """A display name reading "=?...?=" (sent encoded) was RFC 2047-decoded twice."""
        env = m.envelope(m.parse(b"To: =?utf-8?q?=3D=3Futf-8=3Fq=3Fx=3F=3D?= <b@example.org>\r\n\r\n"))
        self.assertEqual(env.to[0].name, "=?utf-8?q?x?=")


# --- DSN and ARF ------------------------------------------------------------------------------


def dsn(status_body: bytes, cte: str = "7bit") -> bytes:
    return (
        b'From: MAILER-DAEMON@mx.test\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\nContent-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n"
        + status_body + b"\r\n--B--\r\n"
    )


STATUS = (
    b"Reporting-MTA: dns; mx.test\r\n\r\n"
    b"Final-Recipient: rfc822; one@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
    b"Final-Recipient: rfc822; two-with-a-long-localpart-for-soft-line-breaks-in-quoted-printable@remote.test\r\n"
    b"Action: delayed\r\nStatus: 4.4.1\r\n"
)


class DSNRegressions(SynchronousTestCase):
    def test_xtext_beyond_unicode(self) -> None:
        """``\\x{FFFFFF}`` in a Final-Recipient raised ValueError (chr() out of range); a
        surrogate (``\\x{D800}``) gave a string that cannot be stored."""
        for escape in (b"\\x{FFFFFF}", b"\\x{D800}"):
            report = parse_report(dsn(STATUS.replace(b"one@", b"o" + escape + b"ne@")))
            assert isinstance(report, DeliveryReport)
            self.assertEqual(report.recipients[0].final_recipient, "o" + escape.decode() + "ne@remote.test")

    def test_transfer_encoded_status_part(self) -> None:
        """A base64 or quoted-printable status part with CRLF line ends lost its
        per-message block and merged all recipients into one; quoted-printable soft line
        breaks were broken by Python's parsing of message/delivery-status."""
        encoded = {
            "base64": base64.encodebytes(STATUS).replace(b"\n", b"\r\n"),
            "quoted-printable": quopri.encodestring(STATUS),
        }
        for cte, body in encoded.items():
            report = parse_report(dsn(body, cte))
            assert isinstance(report, DeliveryReport), cte
            self.assertEqual(report.reporting_mta, "mx.test", cte)
            self.assertEqual(
                [(r.final_recipient, r.action, r.status) for r in report.recipients],
                [("one@remote.test", "failed", "5.1.1"),
                 ("two-with-a-long-localpart-for-soft-line-breaks-in-quoted-printable@remote.test", "delayed", "4.4.1")],
                cte,
            )


# --- composing Sends ----------------------------------------------------------------------------


def composed(subject: str = "", name: str = "", localpart: str = "mox") -> bytes:
    sender = c.NameAddress("", parse_address(f"{localpart}@localhost"))
    to = c.NameAddress(name, parse_address("you@localhost"))
    return c.compose(
        c.ComposeInput(from_=sender, to=[to], subject=subject, text="x"),
        hostname="localhost", now=datetime(2026, 1, 1, tzinfo=UTC), max_size=0, version="t",
    ).data


class ComposeRegressions(SynchronousTestCase):
    def test_long_cjk_subject_is_folded(self) -> None:
        """A 400-character Japanese subject (no spaces) was one line of 3,600 octets (and
        raw 1,200 octets in SMTPUTF8 mode); a 1,200-character ASCII word likewise."""
        for subject, localpart in (("日" * 400, "mox"), ("日" * 400, "möx"), ("x" * 1200, "mox")):
            data = composed(subject, localpart=localpart)
            self.assertLessEqual(max(len(line) for line in data.split(b"\r\n")), 998)
            msg = email.message_from_bytes(data, policy=email.policy.default)
            self.assertEqual("".join(str(msg["Subject"]).split()), subject)

    def test_star_in_file_name_is_quoted(self) -> None:
        """``filename=a*b`` (a valid token) is read as "a" by Python's parser: quoted now."""
        self.assertEqual(c.format_media_type("attachment", {"filename": "a*b"}), 'attachment; filename="a*b"')
        msg = email.message_from_bytes(
            b"Content-Disposition: " + c.format_media_type("attachment", {"filename": "*"}).encode() + b"\r\n\r\n",
            policy=email.policy.default,
        )
        self.assertEqual(msg.get_filename(), "*")

    def test_apostrophe_in_file_name_is_quoted(self) -> None:
        """Found by the long fuzz profile: ``filename='`` and ``filename=a'b`` (valid tokens)
        have no filename at all for Python's parser (``'`` delimits RFC 2231 values)."""
        for name in ("'", "a'b", "''"):
            value = c.format_media_type("attachment", {"filename": name})
            self.assertEqual(value, 'attachment; filename="' + name + '"')
            msg = email.message_from_bytes(b"Content-Disposition: " + value.encode() + b"\r\n\r\n", policy=email.policy.default)
            self.assertEqual(msg.get_filename(), name)

    def test_encoded_word_lookalikes_are_encoded(self) -> None:
        """A Subject or name that reads like an encoded-word was written as is, so mail
        readers showed its decoded form ("\\r\\nBcc: ..."), not what was sent."""
        trick = "=?utf-8?q?=0D=0ABcc:_evil@example.org?="
        data = composed(trick, name=trick)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(str(msg["Subject"]), trick)
        self.assertEqual(msg["To"].addresses[0].display_name, trick)
        self.assertEqual(m.envelope(m.parse(data)).subject, trick)


# --- SMTP ----------------------------------------------------------------------------------------


class SMTPRegressions(TestCase):
    async def test_non_ascii_and_huge_numbers_in_mail_parameters(self) -> None:
        """SIZE=² / HOLDFOR=² ("²".isdigit() but int() refuses it) and 5,000-digit values
        (beyond int()'s 4,300-digit limit) raised out of the command handler: an
        "Unhandled Error" in the log and no reply at all, the client waiting forever."""
        f = SMTPFixture(self)
        conn = f.connect(f.factories.submission)
        await conn.command("EHLO client.example")
        plain = base64.b64encode(f"\0mox@localhost\0{PASSWORD}".encode()).decode()
        self.assertEqual(await conn.command(f"AUTH PLAIN {plain}"), b"235 2.7.0 nice")
        cases = {
            "SIZE=²": b"501 5.5.4 bad SIZE value",
            "SIZE=" + "9" * 5000: b"552 5.3.4 message too large",
            "HOLDFOR=²": b"501 5.5.4 bad HOLDFOR value",
            "HOLDFOR=" + "9" * 5000: b"554 5.5.4 requested future release time is too far in the future",
        }
        for param, want in cases.items():
            self.assertEqual(await conn.command(f"MAIL FROM:<mox@localhost> {param}"), want, param[:20])
        self.assertEqual(await conn.command("NOOP"), b"250 2.0.0 ok")

    def test_special_code(self) -> None:
        """``x²²²@`` raised ValueError at RCPT; ``x600@`` answered 600, no SMTP code."""
        self.assertIsNone(special_code("x²²²"))
        self.assertIsNone(special_code("x600"))
        self.assertEqual(special_code("x599"), 599)
