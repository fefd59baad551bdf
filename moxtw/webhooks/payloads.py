"""Outgoing webhook bodies: mox's ``webhook.Outgoing`` (spec §3.5), byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ..store.webhooks import HookRow
from ..webapi import types as t
from ..webapi.gojson import encode_webhook

__all__ = ["TEST_ERROR", "TEST_EVENT", "TEST_SUBJECT", "outgoing_body", "outgoing_payload", "sample_outgoing"]

#: The account page's test webhook: an outgoing webhook with a known event that needs no
#: action, for no message (QueueMsgID 0, no FromID, MessageID or Extra), recognisable by
#: its QueueMsgID and its Subject and Error texts.
TEST_EVENT = "unrecognized"
TEST_SUBJECT = "moxtw test webhook"
TEST_ERROR = "test webhook sent from the account's web page; no message is involved"


def _extra(text: str | None) -> dict[str, str]:
    """moxtw's fix 3: Extra is always an object (``{}`` when none, DSN events too)."""
    if text is None:
        return {}
    value = json.loads(text)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def outgoing_body(row: HookRow) -> t.Outgoing:
    """The ``Outgoing`` of an event; WebhookQueued is when the event was recorded (the
    transaction that queued the webhook), in UTC."""
    return t.Outgoing(
        Version=0,
        Event=row.kind,
        DSN=row.dsn,
        Suppressing=row.suppressing,
        QueueMsgID=row.queue_msg_id,
        FromID=row.from_id,
        MessageID=row.message_id,
        Subject=row.subject,
        WebhookQueued=datetime.fromtimestamp(row.created, UTC),
        SMTPCode=row.smtp_code,
        SMTPEnhancedCode=row.smtp_enhanced_code,
        Error=row.error,
        Extra=_extra(row.extra),
    )


def outgoing_payload(row: HookRow) -> str:
    """The JSON body (Go's ``json.Marshal``: HTML-escaped, no newline)."""
    return encode_webhook(outgoing_body(row)).decode("utf-8")


def sample_outgoing(now: float) -> t.Outgoing:
    """The event ``moxtw hooks test`` sends (like mox's example: a delivered message)."""
    return t.Outgoing(
        Version=0,
        Event="delivered",
        QueueMsgID=101,
        FromID="MDEyMzQ1Njc4OWFiY2RlZg",
        MessageID="<QnxzgulZK51utga6agH_rg@mox.example>",
        Subject="Hello world",
        WebhookQueued=datetime.fromtimestamp(now, UTC),
        SMTPCode=250,
        SMTPEnhancedCode="2.0.0",
        Extra={"userid": "456"},
    )
