"""Message parsing against mox's recorded answers and the MIME shapes MessageGet meets."""

from __future__ import annotations

import ast
import base64
import json
from datetime import UTC, datetime
from typing import Any

from twisted.trial.unittest import SkipTest, TestCase

from moxtw import message as m
from tests.golden import GOLDEN_DIR

GOLDEN_DIR = GOLDEN_DIR


def golden(name: str) -> dict[str, Any]:
    path = GOLDEN_DIR / name
    if not path.is_file():
        raise SkipTest(f"golden {path} not available")
    doc: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return doc


def as_json(node: m.StructureNode) -> dict[str, Any]:
    return {
        "ContentType": node.content_type,
        "ContentTypeParams": node.content_type_params,
        "ContentID": node.content_id,
        "ContentDisposition": node.content_disposition,
        "Filename": node.filename,
        "DecodedSize": node.decoded_size,
        "Parts": [as_json(p) for p in node.parts],
    }


def golden_message_6() -> tuple[bytes, dict[str, Any]]:
    raw = golden("message_raw_get.json")["steps"][0]["response"]["body"]["text"].encode("utf-8")
    get = json.loads(golden("message_get.json")["steps"][0]["response"]["body"]["text"])
    return raw, get


class GoldenTests(TestCase):
    def test_message_get_structure_and_message(self) -> None:
        raw, get = golden_message_6()
        part = m.parse(raw)
        self.assertEqual(as_json(m.structure(part)), get["Structure"])
        text, html, found = m.readable_parts(part)
        self.assertTrue(found)
        self.assertEqual(text, get["Message"]["Text"])  # the untyped blob.bin part, as mox
        self.assertEqual(html, get["Message"]["HTML"])
        env = m.envelope(part)
        want = get["Message"]
        self.assertEqual([{"Name": a.name, "Address": a.address} for a in env.from_], want["From"])
        self.assertEqual([{"Name": a.name, "Address": a.address} for a in env.to], want["To"])
        self.assertEqual(env.cc, [])
        self.assertEqual(env.subject, want["Subject"])
        self.assertEqual(env.message_id, want["MessageID"])
        self.assertEqual(env.references, [])
        self.assertEqual(env.date, datetime(2026, 11, 24, 4, 35, 29, tzinfo=UTC))
        self.assertFalse(part.is_dsn())

    def test_message_part_get_contents_and_types(self) -> None:
        raw, _ = golden_message_6()
        part = m.parse(raw)
        checked = 0
        for step in golden("message_part_get.json")["steps"]:
            req = step["request"].get("request_json")
            if not req or req["MsgID"] != 6:
                continue
            response = step["response"]
            if response["status"] != 200:
                with self.assertRaises(m.PartNotFound) as e:
                    m.find_part(part, req["PartPath"])
                self.assertEqual(str(e.exception), json.loads(response["body"]["text"])["Message"])
                continue
            body = response["body"]
            want = body["text"].encode("utf-8") if "text" in body else base64.b64decode(body["base64"])
            got = m.find_part(part, req["PartPath"]).content()
            self.assertEqual(got, want, req)
            ctype = dict((k.lower(), v) for k, v in response["headers"])["content-type"]
            self.assertEqual(m.sniff_content_type(got), ctype)
            checked += 1
        self.assertEqual(checked, 5)

    def test_incoming_smtp_messages_match_webhooks(self) -> None:
        """The DATA of the recorded SMTP deliveries against their incoming webhooks."""
        doc = golden("smtp_incoming_port_1025.json")
        sent = []
        for step in doc["steps"]:
            for line in step.get("smtplib_debug_transcript", []):
                if line.startswith("send: b'From:"):
                    data = ast.literal_eval(line[len("send: ") :])
                    sent.append(data[: -len(b".\r\n")])
        hooks = [json.loads(h["body"]) for h in doc["webhooks"]]
        by_id = {h["MessageID"]: h for h in hooks}
        matched = 0
        for data in sent:
            part = m.parse(data)
            env = m.envelope(part)
            hook = by_id.get(env.message_id)
            if hook is None:
                continue
            matched += 1
            self.assertEqual(as_json(m.structure(part)), hook["Structure"])
            text, html, _ = m.readable_parts(part)
            self.assertEqual((text, html), (hook["Text"], hook["HTML"]))
            self.assertEqual([{"Name": a.name, "Address": a.address} for a in env.from_], hook["From"])
            self.assertEqual([{"Name": a.name, "Address": a.address} for a in env.to], hook["To"])
            self.assertEqual(env.subject, hook["Subject"])
            self.assertEqual(env.in_reply_to, hook["InReplyTo"])
            self.assertEqual(env.referenced_ids, hook["References"])
            self.assertEqual(env.date, datetime(2024, 4, 1, 10, tzinfo=UTC))
        self.assertEqual(matched, 2)


def msg(*lines: str) -> bytes:
    return "\r\n".join(lines).encode("utf-8")


class StructureTests(TestCase):
    def test_simple_message_without_content_type(self) -> None:
        part = m.parse(msg("From: a@localhost", "Subject: x", "", "line one", "line two", ""))
        s = m.structure(part)
        self.assertEqual(s.content_type, "/")
        self.assertEqual(s.content_type_params, {})
        self.assertEqual(s.parts, [])
        self.assertEqual(s.decoded_size, len(b"line one\r\nline two\r\n"))
        self.assertEqual(m.readable_parts(part), ("line one\nline two\n", "", True))

    def test_text_decoded_size_counts_crlf(self) -> None:
        body = base64.b64encode(b"a\nb\n").decode()
        part = m.parse(msg("Content-Type: text/plain", "Content-Transfer-Encoding: base64", "", body, ""))
        self.assertEqual(part.content(), b"a\r\nb\r\n")
        self.assertEqual(m.structure(part).decoded_size, 6)
        # Non-text parts are counted as decoded, without line end changes.
        part = m.parse(msg("Content-Type: application/x-y", "Content-Transfer-Encoding: base64", "", body, ""))
        self.assertEqual(m.structure(part).decoded_size, 4)

    def test_quoted_printable_and_charset(self) -> None:
        part = m.parse(
            msg(
                "Content-Type: text/plain; charset=ISO-8859-1",
                "Content-Transfer-Encoding: quoted-printable",
                "",
                "caf=E9 soft=",
                "break",
                "",
            )
        )
        self.assertEqual(part.content(), b"caf\xe9 softbreak\r\n")
        self.assertEqual(m.readable_parts(part)[0], "café softbreak\n")
        self.assertEqual(m.structure(part).content_type_params, {"charset": "ISO-8859-1"})

    def test_rfc2047_subject_and_names(self) -> None:
        part = m.parse(
            msg(
                "From: =?utf-8?q?J=C3=B6rg?= <jorg@Example.ORG>",
                "To: a@localhost, \"B, C\" <b@localhost>",
                "Cc: not a valid list <<",
                "Subject: =?utf-8?b?aMOpbGxv?= =?utf-8?q?_w=C3=B6rld?= plain",
                "Message-Id: <id@x>",
                "In-Reply-To: <parent@x>",
                "References: <Root@X>\t<parent@x>",
                "",
                "",
            )
        )
        env = m.envelope(part)
        self.assertEqual(env.subject, "héllo wörld plain")
        self.assertEqual(env.from_, [m.NameAddress("Jörg", "jorg@example.org")])
        self.assertEqual(env.to, [m.NameAddress("", "a@localhost"), m.NameAddress("B, C", "b@localhost")])
        self.assertEqual(env.cc, [])
        self.assertEqual(env.references, ["<Root@X>", "<parent@x>"])
        self.assertEqual(env.referenced_ids, ["<root@x>", "<parent@x>"])
        # In-Reply-To not among the references is prepended.
        part = m.parse(msg("In-Reply-To: <p@x>", "References: <r@x>", "", ""))
        self.assertEqual(m.envelope(part).references, ["<p@x>", "<r@x>"])
        self.assertIsNone(m.envelope(part).date)

    def test_filenames_rfc2231_and_rfc2047(self) -> None:
        data = msg(
            "Content-Type: multipart/mixed; boundary=b",
            "",
            "--b",
            "Content-Type: application/pdf; name=\"=?utf-8?q?r=C3=A9sum=C3=A9.pdf?=\"",
            "",
            "x",
            "--b",
            "Content-Type: application/octet-stream",
            "Content-Disposition: ATTACHMENT; filename*=UTF-8''na%C3%AFve%20file.txt",
            "",
            "y",
            "--b",
            "Content-Type: text/plain; charset=us-ascii",
            "Content-Disposition: attachment;",
            " filename*0=\"long \"; filename*1=\"name.txt\"",
            "Content-Id: <c@x>",
            "",
            "z",
            "--b--",
            "",
        )
        s = m.structure(m.parse(data))
        self.assertEqual(s.content_type, "multipart/mixed")
        self.assertEqual(s.decoded_size, 0)
        self.assertEqual([(p.content_disposition, p.filename) for p in s.parts], [
            ("", "résumé.pdf"),
            ("attachment", "naïve file.txt"),
            ("attachment", "long name.txt"),
        ])
        self.assertEqual(s.parts[2].content_id, "<c@x>")
        self.assertEqual([p.decoded_size for p in s.parts], [1, 1, 1])

    def test_nested_multiparts_and_rfc822(self) -> None:
        inner = msg("Subject: inner", "Content-Type: text/plain", "", "inner body", "")
        data = msg(
            "Content-Type: multipart/mixed; boundary=outer",
            "",
            "preamble",
            "--outer",
            "Content-Type: multipart/alternative; boundary=alt",
            "",
            "--alt",
            "Content-Type: text/plain",
            "",
            "plain",
            "--alt",
            "Content-Type: text/html",
            "",
            "<p>html</p>",
            "--alt--",
            "",
            "--outer",
            "Content-Type: message/rfc822",
            "Content-Disposition: attachment; filename=fwd.eml",
            "",
            inner.decode(),
            "--outer--",
            "epilogue",
        )
        part = m.parse(data)
        s = m.structure(part)
        self.assertEqual([p.content_type for p in s.parts], ["multipart/alternative", "message/rfc822"])
        self.assertEqual([p.content_type for p in s.parts[0].parts], ["text/plain", "text/html"])
        self.assertEqual(s.parts[0].parts[0].decoded_size, len(b"plain"))
        rfc822 = s.parts[1]
        self.assertEqual(rfc822.parts, [])  # not navigable
        self.assertEqual(rfc822.decoded_size, len(inner))
        self.assertEqual(m.find_part(part, [1]).content(), inner)
        # A nested multipart's body runs up to the parent's next boundary line.
        self.assertTrue(m.find_part(part, [0]).content().endswith(b"--alt--\r\n\r\n"))
        with self.assertRaises(m.PartNotFound):
            m.find_part(part, [1, 0])
        # Both alternatives are found; the top-level scan descends into the alternative.
        self.assertEqual(m.readable_parts(part), ("plain", "<p>html</p>", True))

    def test_first_readable_direct_child_wins_outside_alternative(self) -> None:
        data = msg(
            "Content-Type: multipart/mixed; boundary=b",
            "",
            "--b",
            "Content-Type: text/html",
            "",
            "<b>first</b>",
            "--b",
            "Content-Type: text/plain",
            "",
            "second",
            "--b--",
            "",
        )
        self.assertEqual(m.readable_parts(m.parse(data)), ("", "<b>first</b>", True))

    def test_readable_parts_are_capped(self) -> None:
        data = msg("Content-Type: text/plain", "", "x" * (m.MAX_READABLE + 10))
        text, _, _ = m.readable_parts(m.parse(data))
        self.assertEqual(len(text), m.MAX_READABLE)

    def test_malformed_multipart_is_one_opaque_part(self) -> None:
        part = m.parse(msg("Content-Type: multipart/mixed; boundary=b", "", "--b", "", "never closed", ""))
        s = m.structure(part)
        self.assertEqual((s.content_type, s.parts), ("application/octet-stream", []))
        part = m.parse(msg("Content-Type: multipart/mixed", "", "x"))
        self.assertEqual(m.structure(part).content_type, "application/octet-stream")

    def test_malformed_content_types(self) -> None:
        part = m.parse(msg("Content-Type: text/plain; charset", "", "x"))
        self.assertEqual((m.structure(part).content_type, m.structure(part).content_type_params), ("text/plain", {}))
        part = m.parse(msg("Content-Type: bogus", "", "x"))
        self.assertEqual(m.structure(part).content_type, "application/octet-stream")

    def test_dsn(self) -> None:
        data = msg(
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
            "",
            "--b",
            "Content-Type: text/plain",
            "",
            "failed",
            "--b",
            "Content-Type: message/delivery-status",
            "",
            "Reporting-MTA: dns; x",
            "--b--",
            "",
        )
        self.assertTrue(m.parse(data).is_dsn())

    def test_sniff(self) -> None:
        self.assertEqual(m.sniff_content_type(b"  <html><body>"), "text/html; charset=utf-8")
        self.assertEqual(m.sniff_content_type(b"\x00\x01binary"), "application/octet-stream")
        self.assertEqual(m.sniff_content_type(b""), "text/plain; charset=utf-8")
