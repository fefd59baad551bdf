"""Header injection through Send is impossible.

Every string field of a Send request (Subject, the Name and Address of From/To/CC/BCC/
ReplyTo, MessageID, References, Headers names and values, Extra keys and values, and the
Name/ContentType/ContentID of JSON and uploaded files) gets CR, LF, CRLF, NUL, other
control characters, Unicode line separators and encoded-word tricks.  Each Send, over the
real webapi, either fails with a clear webapi error (the code mox uses: ``user`` for
control characters, ``badAddress``, ``malformedMessageID``) or queues a message whose
header has exactly the fields moxtw writes (no injected field, no Bcc, no early end of
the header), CRLF line ends only, and no NUL; the message parses without defects.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.address import parse_address
from moxtw.smtp.extra import header_fields
from moxtw.webapi import compose as c
from tests.fuzz import FUZZ, counted
from tests.webapi.fixture import WebAPIFixture, b64

NOW = datetime(2026, 1, 1, tzinfo=UTC)

#: What an attacker puts into a field.  "X-Injected" must never become a header field.
PAYLOADS = [
    "a\rX-Injected: 1",
    "a\nX-Injected: 1",
    "a\r\nX-Injected: 1",
    "a\r\n\r\nX-Injected: 1",
    "a\r\nBcc: evil@example.org",
    "a\x00X-Injected: 1",
    "a\x0bX-Injected: 1",
    "a\x0cX-Injected: 1",
    "a\tX-Injected: 1",
    "a\u2028X-Injected: 1",
    "a\u0085X-Injected: 1",
    "a\x7fX-Injected: 1",
    "=?utf-8?q?a=0D=0AX-Injected:_1?=",
    "=?utf-8?b?YQ0KWC1JbmplY3RlZDogMQ==?=",
    "<a@b>\r\nX-Injected: 1",
    "<a\r\nX-Injected: 1@b>",
]

#: The codes a refusal may have (mox's; spec §2.2.1).
REFUSALS = {"user", "badAddress", "malformedMessageID"}

#: Header fields moxtw writes in a Send's message (top level and MIME parts).
WRITTEN = {
    "from", "reply-to", "to", "cc", "subject", "date", "message-id", "references", "in-reply-to", "mime-version",
    "user-agent", "content-type", "content-transfer-encoding", "content-disposition", "content-id", "x-custom",
}

BASE: dict[str, Any] = {
    "From": [{"Name": "Sender", "Address": "mox@localhost"}],
    "To": [{"Name": "To", "Address": "you@localhost"}],
    "CC": [{"Name": "Cc", "Address": "cc@localhost"}],
    "BCC": [{"Name": "Bcc", "Address": "bcc@localhost"}],
    "ReplyTo": [{"Name": "Reply", "Address": "reply@localhost"}],
    "Subject": "subject",
    "Text": "text",
    "HTML": "<p>html</p>",
    "MessageID": "<id@localhost>",
    "References": ["<ref@localhost>"],
    "Headers": [["X-Custom", "value"]],
    "Extra": {"key": "value"},
    "AlternativeFiles": [{"Name": "alt.txt", "ContentType": "text/plain", "ContentID": "<alt@x>", "Data": b64(b"alt")}],
    "InlineFiles": [{"Name": "in.png", "ContentType": "image/png", "ContentID": "<in@x>", "Data": b64(b"png")}],
    "AttachedFiles": [{"Name": "at.pdf", "ContentType": "application/pdf", "ContentID": "", "Data": b64(b"pdf")}],
}


def _setter(*path: Any) -> Callable[[dict[str, Any], str], None]:
    def set_(req: dict[str, Any], value: str) -> None:
        target: Any = req
        for p in path[:-1]:
            target = target[p]
        target[path[-1]] = value

    return set_


def _extra_key(req: dict[str, Any], value: str) -> None:
    req["Extra"] = {value: "v"}


FIELDS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "Subject": _setter("Subject"),
    "MessageID": _setter("MessageID"),
    "References[0]": _setter("References", 0),
    "Headers name": _setter("Headers", 0, 0),
    "Headers value": _setter("Headers", 0, 1),
    "Extra key": _extra_key,
    "Extra value": _setter("Extra", "key"),
    **{f"{f} Name": _setter(f, 0, "Name") for f in ("From", "To", "CC", "BCC", "ReplyTo")},
    **{f"{f} Address": _setter(f, 0, "Address") for f in ("To", "CC", "BCC", "ReplyTo")},
    **{f"{files} {k}": _setter(files, 0, k) for files in ("AlternativeFiles", "InlineFiles", "AttachedFiles")
       for k in ("Name", "ContentType", "ContentID")},
}


class HeaderInjectionMixin:
    """The check on a composed message, shared by the webapi and compose-level tests."""

    def check_message(self: Any, data: bytes, label: str, allowed: frozenset[str] = frozenset()) -> None:
        """``allowed``: a header name the request itself chose (Headers)."""
        written = WRITTEN | allowed
        self.assertNotIn(b"\x00", data, label)
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""), f"{label}: bare CR/LF")
        self.assertNotIn(b"\r", data.replace(b"\r\n", b""), f"{label}: bare CR/LF")
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(msg.defects, [], label)
        for part in msg.walk():
            names = {k.lower() for k in part.keys()}
            self.assertTrue(names <= written, f"{label}: unexpected header fields {names - written}")
            self.assertEqual(part.defects, [], label)
        # The same from the raw header lines (a parser that split lines differently would
        # see different fields): the top-level header block, and every part's.
        for block in [data, *re.split(rb"\r\n--[0-9a-f]{60}\r\n", data)[1:]]:
            for name, _ in header_fields(block):
                self.assertIn(name.lower(), written, f"{label}: header field {name!r}")
        self.assertNotIn(b"\nX-Injected:", data, label)
        self.assertNotIn(b"\nBcc:", data, label)


class WebAPIHeaderInjectionTests(HeaderInjectionMixin, TestCase):
    timeout = 300

    async def test_every_field_every_payload(self) -> None:
        f = await WebAPIFixture(self).start()
        refused: dict[str, set[str]] = {}
        accepted = 0
        cases = 0
        for field, set_ in FIELDS.items():
            for payload in PAYLOADS:
                label = f"{field} = {payload!r}"
                req = json.loads(json.dumps(BASE))
                set_(req, payload)
                before = len(await f.queue_rows())
                reply = await f.call("Send", req)
                cases += 1
                rows = await f.queue_rows()
                if reply.status != 200:
                    self.assertEqual(reply.status, 400, label)
                    self.assertIn(reply.json["Code"], REFUSALS, (label, reply.json))
                    self.assertTrue(reply.json["Message"], label)
                    self.assertEqual(len(rows), before, f"{label}: refused but queued")
                    refused.setdefault(field, set()).add(reply.json["Code"])
                    continue
                accepted += 1
                new = rows[before:]
                self.assertEqual(len(new), 3, label)  # To, CC, BCC
                data = await f.raw(new[0])
                allowed = frozenset({payload.lower()}) if field == "Headers name" else frozenset()
                self.check_message(data[len(new[0]["prefix"]):], label, allowed)
                self.check_message(data, label + " (with prefix)", allowed | {"received", "dkim-signature"})
                if field.startswith("Extra"):
                    self.assertNotIn(payload.encode(), data, label)  # Extra never goes in the message
                    self.assertEqual(json.loads(new[0]["extra"]), req["Extra"], label)
        # What mox refuses is refused (control characters in header values; bad addresses).
        for field in ("Subject", "Headers name", "Headers value", "From Name", "To Name", "References[0]"):
            self.assertIn("user", refused.get(field, set()), field)
        self.assertIn("badAddress", refused.get("To Address", set()))
        print(f"\nheader injection: {cases} Sends, {accepted} accepted, refused per field: "
              f"{ {k: sorted(v) for k, v in refused.items()} }")

    async def test_uploaded_file_headers(self) -> None:
        """Multipart uploads: file names (also RFC 2231-encoded CR/LF), content types and
        content ids with folded or encoded line breaks."""
        f = await WebAPIFixture(self).start()
        request = json.dumps({"To": [{"Address": "you@localhost"}], "Text": "see file"})
        variants = [
            'filename="a\r\n X-Injected: 1.txt"',
            "filename*=utf-8''a%0D%0AX-Injected%3A%201.txt",
            "filename*=utf-8''a%00b.txt",
            'filename="=?utf-8?q?a=0D=0AX-Injected:_1?="',
        ]
        extra_headers = [
            b"",
            b"Content-Type: text/plain\r\n X-Injected: 1\r\n",
            b"Content-ID: <a@b>\r\n X-Injected: 1\r\n",
            b"Content-ID: <a@b\x00>\r\n",
        ]
        for disposition in variants:
            for extra in extra_headers:
                label = f"{disposition!r} {extra!r}"
                body = (
                    b"--BOUNDARY\r\nContent-Disposition: form-data; name=\"request\"\r\n\r\n" + request.encode()
                    + b"\r\n--BOUNDARY\r\nContent-Disposition: form-data; name=\"attachedfile\"; "
                    + disposition.encode() + b"\r\n" + extra + b"\r\nfile data\r\n--BOUNDARY--\r\n"
                )
                before = len(await f.queue_rows())
                reply = await f.post("v0/Send", data=body, headers={b"Content-Type": [b"multipart/form-data; boundary=BOUNDARY"]})
                rows = await f.queue_rows()
                if reply.status != 200:
                    self.assertEqual(reply.status, 400, (label, reply.body))
                    self.assertIn(reply.json["Code"], REFUSALS | {"protocol"}, (label, reply.json))
                    self.assertEqual(len(rows), before, label)
                    continue
                (row,) = rows[before:]
                data = await f.raw(row)
                self.check_message(data[len(row["prefix"]):], label)


#: Random text with the dangerous characters mixed in.
nasty = st.lists(
    st.one_of(
        st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x0b", "\x7f", "\u2028", "\u0085", ":", " ", "=?", "?=", "<",
                         ">", "X-Injected: 1", "=?utf-8?q?=0D=0A?="]),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=20,
).map("".join)


class ComposeHeaderInjectionProperties(HeaderInjectionMixin, SynchronousTestCase):
    @FUZZ
    @given(st.sampled_from(["subject", "name", "header", "name_of_file", "content_type", "content_id", "message_id",
                            "reference"]), nasty)
    @counted
    def test_random_injection(self, field: str, value: str) -> None:
        """Random strings with CR/LF/NUL in one field of a composition: a ComposeError
        (user or malformedMessageID), or a message with only the fields moxtw writes."""
        sender = c.NameAddress("", parse_address("mox@localhost"))
        kwargs: dict[str, Any] = {"from_": sender, "to": [sender], "text": "x"}
        file = {"name": "f", "content_type": "", "content_id": "", "data": b"x"}
        if field == "subject":
            kwargs["subject"] = value
        elif field == "name":
            kwargs["to"] = [c.NameAddress(value, sender.address)]
        elif field == "header":
            kwargs["headers"] = [("X-Custom", value)]
        elif field == "message_id":
            kwargs["message_id"] = f"<{value}>"
        elif field == "reference":
            kwargs["references"] = [f"<{value}>"]
        else:
            file["name" if field == "name_of_file" else field] = value
        kwargs["attached_files"] = [c.File(**file)]
        try:
            composed = c.compose(c.ComposeInput(**kwargs), hostname="localhost", now=NOW, max_size=0, version="t")
        except c.ComposeError as e:
            self.assertIn(e.code, REFUSALS)
            return
        self.check_message(composed.data, f"{field}={value!r}")
