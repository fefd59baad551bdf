"""Webhook bodies against mox's recorded webhooks (``shared/golden-mox``), field by field
and byte for byte, sent through the real service."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw import message as m
from moxtw.webapi.gojson import parse_time
from moxtw.webhooks.incoming import incoming_payload

from ..golden import GOLDEN_DIR
from .harness import Harness

OUTGOING_FIELDS = [
    "Version", "Event", "DSN", "Suppressing", "QueueMsgID", "FromID", "MessageID", "Subject",
    "WebhookQueued", "SMTPCode", "SMTPEnhancedCode", "Error", "Extra",
]  # fmt: skip
INCOMING_FIELDS = [
    "Version", "From", "To", "CC", "BCC", "ReplyTo", "Subject", "MessageID", "InReplyTo", "References",
    "Date", "Text", "HTML", "Structure", "Meta",
]  # fmt: skip


def golden(name: str) -> dict[str, Any]:
    path = Path(GOLDEN_DIR) / name
    if not path.exists():
        raise AssertionError(f"golden transcript {path} missing (set MOXTW_GOLDEN_DIR)")
    return json.loads(path.read_text("utf-8"))  # type: ignore[no-any-return]


def golden_webhooks(kind: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted(Path(GOLDEN_DIR).glob("*.json")):
        for w in json.loads(path.read_text("utf-8")).get("webhooks", []):
            if w["path"].endswith("/" + kind):
                out.append((path.name, w))
    return out


def timestamp(text: str) -> float:
    return parse_time(text).timestamp()


def without_queued(body: bytes) -> bytes:
    """The body with WebhookQueued's value blanked (nanoseconds are not kept)."""
    doc = body.decode("utf-8")
    start = doc.index('"WebhookQueued":"') + len('"WebhookQueued":"')
    return (doc[:start] + doc[doc.index('"', start) :]).encode("utf-8")


class OutgoingGoldenTests(TestCase):
    async def test_every_recorded_outgoing_webhook(self) -> None:
        """Each of mox's recorded outgoing webhooks, rebuilt from an event row carrying
        the same data, gives the same body: same fields in the same order, same values,
        same bytes (HTML-escaped JSON, no newline), except WebhookQueued's precision."""
        hooks = golden_webhooks("outgoing")
        self.assertGreater(len(hooks), 40)
        events = {w["body_json"]["Event"] for _, w in hooks}
        self.assertEqual(events, {"delivered", "delayed", "failed", "suppressed", "canceled"})
        h = Harness(self)
        h.open()
        svc = h.service()
        for i, (name, w) in enumerate(hooks):
            g = w["body_json"]
            self.assertEqual(list(g), OUTGOING_FIELDS, name)
            await h.event(
                kind=g["Event"], account="a", queue_msg_id=g["QueueMsgID"], from_id=g["FromID"],
                message_id=g["MessageID"], subject=g["Subject"], extra=json.dumps(g["Extra"]),
                smtp_code=g["SMTPCode"], smtp_enhanced_code=g["SMTPEnhancedCode"], error=g["Error"],
                suppressing=g["Suppressing"], dsn=g["DSN"], created=timestamp(g["WebhookQueued"]),
            )  # fmt: skip
            svc.kick()
            await svc.settle()
            self.assertEqual(len(h.receiver.requests), i + 1, name)
            got = h.receiver.requests[-1]
            ours = json.loads(got.body)
            self.assertEqual(list(ours), OUTGOING_FIELDS, name)
            for field in OUTGOING_FIELDS:
                if field == "WebhookQueued":
                    delta = abs(timestamp(ours[field]) - timestamp(g[field]))
                    self.assertLess(delta, 1e-5, f"{name}: {field}")
                else:
                    self.assertEqual(ours[field], g[field], f"{name}: {field}")
            self.assertEqual(without_queued(got.body), without_queued(w["body"].encode("utf-8")), name)
            self.assertEqual(int(got.header("Content-Length")), len(got.body))

    async def test_headers_as_mox_sends_them(self) -> None:
        """Same header names and values as mox's recorded webhook, apart from the
        User-Agent (moxtw's) and the ID (ours)."""
        name, w = next((n, w) for n, w in golden_webhooks("outgoing") if n == "webhook_retry_500.json")
        theirs = {k.lower(): v for k, v in w["headers"]}
        h = Harness(self)
        h.open()
        await h.event()
        svc = h.service()
        await svc.settle()
        (got,) = h.receiver.requests
        ours = {k: v[0] for k, v in got.headers.items()}
        for header in ("content-type", "authorization", "x-mox-webhook-attempt", "accept-encoding"):
            self.assertEqual(ours[header], theirs[header], header)
        self.assertEqual(ours["x-mox-webhook-id"], "1")
        self.assertEqual(ours["user-agent"], theirs["user-agent"].replace("mox/v0.0.17-go1.27.3", "moxtw/0.1.0.dev0"))
        self.assertTrue(ours["user-agent"].startswith("moxtw/"))
        self.assertEqual(int(ours["content-length"]), len(got.body))
        extra = set(ours) - set(theirs) - {"connection"}
        self.assertEqual(extra, set(), "no headers beyond mox's without a signing secret")

    async def test_dsn_event_without_extra_has_empty_object(self) -> None:
        """moxtw's fix 3: Extra is {} also for DSN events of messages without Extra."""
        h = Harness(self)
        h.open()
        await h.event(kind="relayed", extra=None, dsn=True, smtp_code=250, smtp_enhanced_code="2.0.0",
                      error="relayed to the next hop")  # fmt: skip
        svc = h.service()
        await svc.settle()
        body = json.loads(h.receiver.requests[0].body)
        self.assertEqual((body["Event"], body["DSN"], body["Extra"]), ("relayed", True, {}))
        self.assertEqual((body["SMTPCode"], body["SMTPEnhancedCode"]), (250, "2.0.0"))
        self.assertEqual(body["WebhookQueued"], "2023-11-14T22:13:20Z")


def smtp_data(transcript: list[str], subject: str) -> bytes:
    """The message an SMTP client sent, from a smtplib debug transcript."""
    for line in transcript:
        if line.startswith("send: b'") and subject in line:
            data: bytes = ast.literal_eval(line[len("send: ") :])
            assert data.endswith(b"\r\n.\r\n")
            return data[: -len(b".\r\n")]
    raise AssertionError(f"no message with {subject!r}")


class IncomingGoldenTests(SynchronousTestCase):
    def check(self, name: str, ours: str, theirs: str) -> None:
        mine, golden_doc = json.loads(ours), json.loads(theirs)
        self.assertEqual(list(mine), INCOMING_FIELDS)
        for field in INCOMING_FIELDS:
            self.assertEqual(mine[field], golden_doc[field], f"{name}: {field}")
        self.assertEqual(ours, theirs, name)

    def payload(self, data: bytes, meta: dict[str, Any]) -> str:
        return incoming_payload(
            data,
            msg_id=meta["MsgID"],
            mail_from=meta["MailFrom"],
            mail_from_validated=meta["MailFromValidated"],
            msg_from_validated=meta["MsgFromValidated"],
            rcpt_to=meta["RcptTo"],
            dkim_domains=meta["DKIMVerifiedDomains"],
            remote_ip=meta["RemoteIP"],
            received=parse_time(meta["Received"]),
            mailbox=meta["MailboxName"],
        )

    def test_multipart_message_with_attachments(self) -> None:
        """The message MessageRawGet returned as MsgID 6 gives, byte for byte, the
        incoming webhook mox sent for MsgID 6 (nested multiparts, Structure, Text)."""
        raw = golden("message_raw_get.json")["steps"][0]["response"]["body"]["text"].encode("utf-8")
        (w,) = [
            w for w in golden("send_attachments_json_base64.json")["webhooks"]
            if w["path"].endswith("/incoming") and w["body_json"]["Meta"]["MsgID"] == 6
        ]  # fmt: skip
        self.check("MsgID 6", self.payload(raw, w["body_json"]["Meta"]), w["body"])

    def test_smtp_incoming_automated_and_references(self) -> None:
        """Messages received on the SMTP port: Auto-Submitted makes Automated true;
        References lower-cased in <>; In-Reply-To raw; empty DKIM domains as []."""
        doc = golden("smtp_incoming_port_1025.json")
        transcript = [line for step in doc["steps"] for line in step.get("smtplib_debug_transcript", [])]
        hooks = {w["body_json"]["Subject"]: w for w in doc["webhooks"]}
        self.assertEqual(len(hooks), 2)
        for subject, w in hooks.items():
            data = smtp_data(transcript, subject)
            # mox prepends its own headers when it stores a message; they do not show.
            data = b"Received: from sender.example.org by localhost; 24 Nov 2026 04:41:58 +0000\r\n" + data
            self.check(subject, self.payload(data, w["body_json"]["Meta"]), w["body"])
        self.assertTrue(hooks["incoming over port 1025"]["body_json"]["Meta"]["Automated"])

    def test_automated(self) -> None:
        plain = b"From: a@x\r\nSubject: s\r\n\r\nbody\r\n"
        self.assertFalse(m.is_automated(m.parse(plain), "a@x"))
        self.assertTrue(m.is_automated(m.parse(plain), ""))
        for header in (b"List-Id: <l.x>", b"List-Unsubscribe: <mailto:u@x>", b"Precedence: bulk",
                       b"List-Unsubscribe-Post: List-Unsubscribe=One-Click", b"Auto-Submitted: auto-generated"):  # fmt: skip
            self.assertTrue(m.is_automated(m.parse(header + b"\r\n" + plain), "a@x"), header)
        self.assertFalse(m.is_automated(m.parse(b"Auto-Submitted: No\r\n" + plain), "a@x"))
        report = (b"Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n"
                  b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n")  # fmt: skip
        self.assertTrue(m.is_automated(m.parse(report), "a@x"))

    def test_empty_lists_and_null_date(self) -> None:
        body = json.loads(incoming_payload(b"Subject: x\r\n\r\nhi\r\n", msg_id=3, received=0.0))
        for field in ("From", "To", "CC", "BCC", "ReplyTo", "References"):
            self.assertEqual(body[field], [], field)
        self.assertIsNone(body["Date"])
        self.assertEqual(body["Meta"]["DKIMVerifiedDomains"], [])
        self.assertEqual(body["Meta"]["Received"], datetime.fromtimestamp(0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.assertEqual((body["Meta"]["MsgID"], body["Meta"]["MailboxName"]), (3, "Inbox"))
