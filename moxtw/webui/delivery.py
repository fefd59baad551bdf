"""Showing outgoing messages (queued or retired) and their delivery attempts: the pieces
the admin queue and retired pages share (facts lists, the attempt history table)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from twisted.web.template import Tag, tags

from ..store.outbox import AttemptRow, QueueRow, RetiredRow, enhanced_code
from .layout import Content, short, table, when

Row = QueueRow | RetiredRow


def sender(row: Row) -> str:
    return f"{row.sender_localpart}@{row.sender_domain}"


def recipient(row: Row) -> str:
    return f"{row.recipient_localpart}@{row.recipient_domain}"


def attempt_result(a: AttemptRow) -> str:
    if a.duration is None:
        return "in progress"
    return "ok" if a.success else "failed"


def enhanced(a: AttemptRow) -> str:
    """The attempt's enhanced status code in full (``5.1.1``; the store keeps mox's short
    form ``1.1``), "" if none."""
    if a.secode.count(".") == 2:
        return a.secode
    return enhanced_code(a.code, a.secode)


def smtp_text(a: AttemptRow) -> str:
    """The code, enhanced code and text of an attempt (``550 5.1.1 no such user``)."""
    return " ".join(p for p in (str(a.code) if a.code else "", enhanced(a), a.error) if p)


def last_result(attempts: Sequence[AttemptRow], width: int = 80) -> Content:
    """The last attempt's outcome: "-" (none yet), "in progress", "ok" or its error."""
    if not attempts:
        return "-"
    a = attempts[-1]
    if a.duration is None or a.success:
        return attempt_result(a)
    return short(smtp_text(a) or "failed", width)


def last_error(row: QueueRow, attempts: Sequence[AttemptRow]) -> str:
    """The error of the last failed attempt (or what recovery noted), "" if none."""
    for a in reversed(attempts):
        if a.duration is not None and not a.success:
            return smtp_text(a) or "failed"
    return row.last_result or ""


def require_tls(value: bool | None) -> str:
    if value is None:
        return "default (the policy decides)"
    return "yes (only over verified TLS)" if value else "no (TLS optional, TLS-Required: No)"


def retired_result(row: RetiredRow) -> str:
    """"delivered", or the event that retired the message (failed, canceled, ...)."""
    if row.success:
        return "delivered"
    return row.event or "failed"


def extra(text: str | None) -> Content:
    """mox's Extra (a JSON object of strings) as a list of key: value; "-" if none."""
    if not text:
        return "-"
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if not isinstance(value, dict):
        return text
    if not value:
        return "-"
    return tags.dl(class_="facts")([[tags.dt(str(k)), tags.dd(str(v))] for k, v in sorted(value.items())])


def facts(items: Sequence[tuple[str, Content]]) -> Tag:
    return tags.dl(class_="facts")([[tags.dt(k), tags.dd(v)] for k, v in items])


def common_facts(row: Row, now: float) -> list[tuple[str, Content]]:
    """What queued and retired messages both have, in page order (first part)."""
    return [
        ("Account", row.account),
        ("From", sender(row)),
        ("To", recipient(row)),
        ("Subject", row.subject or "-"),
        ("Message-ID", row.message_id or "-"),
        ("Queued", when(row.queued, now)),
    ]


def detail_facts(row: Row) -> list[tuple[str, Content]]:
    """What queued and retired messages both have, in page order (second part)."""
    out: list[tuple[str, Content]] = [
        ("RequireTLS", require_tls(row.require_tls)),
        ("Transport", row.transport or "default (direct delivery to the MX hosts)"),
        ("Size", f"{row.size} bytes"),
        ("8-bit / SMTPUTF8", f"{'yes' if row.has_8bit else 'no'} / {'yes' if row.smtputf8 else 'no'}"),
    ]
    if row.from_id:
        out.append(("FromID", row.from_id))
    if row.base_id:
        out.append(("First message of its submission", str(row.base_id)))
    if row.future_release_request:
        out.append(("FutureRelease request", row.future_release_request))
    out.append(("Extra", extra(row.extra)))
    return out


def history(attempts: Sequence[AttemptRow]) -> list[Content]:
    """The "Delivery history" section: every attempt, oldest first."""
    rows = [
        [
            str(a.attempt),
            when(a.start),
            "-" if a.duration is None else f"{a.duration:.1f}s",
            attempt_result(a),
            str(a.code) if a.code else "-",
            enhanced(a) or "-",
            (a.error or "-") + (" (timeout after the message data)" if a.timeout_after_body else ""),
            " ".join(p for p in (a.remote_host, f"({a.remote_ip})" if a.remote_ip else "") if p) or "-",
            "yes" if a.tls else "no",
        ]
        for a in attempts
    ]
    return [
        tags.h2("Delivery history"),
        table(
            "Delivery attempts",
            ["#", "Started", "Duration", "Result", "SMTP code", "Enhanced code", "Text", "Remote host", "TLS"],
            rows,
            empty="No delivery attempt yet.",
        ),
    ]
