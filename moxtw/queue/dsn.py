"""Delivery status notifications to the sender: RFC 3464 ``multipart/report``.

The queue delivers these into the sending account's Inbox (never over SMTP), in the same
transaction that records the failure.  Part 1 is text for people, part 2 the
``message/delivery-status`` (``message/global-delivery-status`` for non-ASCII addresses),
part 3 the original message's headers (``text/rfc822-headers``).
"""

from __future__ import annotations

import email.utils
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime

import attrs

from ..address import Address
from ..store.outbox import DSNRecord, QueueRow

FAILED_SUBJECT = "mail delivery failed"
DELAYED_SUBJECT = "mail delivery delayed"


@attrs.frozen
class DSN:
    data: bytes
    message_id: str  # with <>
    subject: str
    #: The From address (the postmaster of this host).
    msg_from: str


def _date(t: float) -> str:
    return email.utils.format_datetime(datetime.fromtimestamp(t, UTC))


def original_headers(prefix: bytes, data: bytes) -> bytes:
    """The header section of ``prefix + data`` (without the blank line)."""
    message = prefix + data
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = message.find(sep)
        if end >= 0:
            return message[: end + len(sep) // 2]
    return message


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def compose(
    *,
    hostname: str,
    failed: bool,
    sender: Address,
    recipient: Address,
    queued: float,
    now: float,
    last_attempt: float,
    attempts: int,
    code: int,
    secode: str,
    error: str,
    remote_host: str,
    headers: bytes,
    next_attempts: Sequence[float] = (),
    token: str | None = None,
) -> DSN:
    """A failure (``failed``) or delayed-delivery DSN for one recipient.

    For a delayed DSN, ``next_attempts`` are the times of the remaining attempts; the
    text and ``Will-Retry-Until`` state them (moxtw's fix 16).
    """
    token = token or secrets.token_urlsafe(16)
    message_id = f"<{token}@{hostname}>"
    postmaster = f"postmaster@{hostname}"
    subject = FAILED_SUBJECT if failed else DELAYED_SUBJECT
    utf8 = not recipient.localpart.isascii() or not sender.localpart.isascii()
    rcpt = str(recipient) if utf8 else recipient.to_ascii()
    status = f"{5 if failed else 4}.{secode or '0.0'}"
    boundary = "dsn-" + secrets.token_hex(12)

    lines = []
    if failed:
        lines.append(f"Delivery of your message to {rcpt} failed permanently after {attempts} attempt(s).")
        lines.append("The message has been removed from the queue and will not be delivered.")
    else:
        lines.append(f"Delivery of your message to {rcpt} has been delayed: attempt {attempts} failed.")
        if next_attempts:
            lines.append("")
            lines.append("The remaining delivery attempts are scheduled for (approximately):")
            lines += [f"  {_date(t)}" for t in next_attempts]
            lines.append("")
            lines.append(f"If the last attempt fails too, you will receive a failure notice after {_date(next_attempts[-1])}.")
        lines.append("No action is needed on your part.")
    lines.append("")
    lines.append(f"Last error: {error or '(none)'}")
    if remote_host:
        lines.append(f"Remote host: {remote_host}")
    lines.append("")
    lines.append("The headers of your message are attached.")
    text = "\n".join(lines) + "\n"

    kind = "utf-8" if utf8 else "rfc822"
    status_fields = [
        f"Reporting-MTA: dns; {hostname}",
        f"Arrival-Date: {_date(queued)}",
        "",
        f"Final-Recipient: {kind}; {rcpt}",
        f"Action: {'failed' if failed else 'delayed'}",
        f"Status: {status}",
    ]
    if remote_host:
        status_fields.append(f"Remote-MTA: dns; {remote_host}")
    if code:
        diagnostic = f"{code} {code // 100}.{secode} " if secode else f"{code} "
        status_fields.append(f"Diagnostic-Code: smtp; {diagnostic}{error}".rstrip())
    status_fields.append(f"Last-Attempt-Date: {_date(last_attempt)}")
    if not failed and next_attempts:
        status_fields.append(f"Will-Retry-Until: {_date(next_attempts[-1])}")
    status_type = "message/global-delivery-status" if utf8 else "message/delivery-status"

    head = [
        f"From: Mail Delivery Subsystem <{postmaster}>",
        f"To: <{sender if utf8 else sender.to_ascii()}>",
        f"Subject: {subject}",
        f"Message-Id: {message_id}",
        f"Date: {_date(now)}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type="delivery-status"; boundary="{boundary}"',
        "Auto-Submitted: auto-replied",
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        text,
        f"--{boundary}",
        f"Content-Type: {status_type}",
        "",
        "\n".join(status_fields),
        "",
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "Content-Transfer-Encoding: 8bit",
        "",
    ]
    data = _crlf("\n".join(head) + "\n") + headers.rstrip(b"\r\n") + b"\r\n\r\n" + _crlf(f"--{boundary}--\n")
    return DSN(data=data, message_id=message_id, subject=subject, msg_from=postmaster)


def for_message(
    row: QueueRow,
    *,
    hostname: str,
    failed: bool,
    now: float,
    last_attempt: float,
    data: bytes | None,
    code: int = 0,
    secode: str = "",
    error: str = "",
    remote_host: str = "",
    next_attempts: Sequence[float] = (),
) -> tuple[DSN, DSNRecord]:
    """The DSN about queue message ``row`` (whose file holds ``data``, None if missing)
    for its sender, and the record that puts it in the sender account's Inbox.

    Used by the queue after a final or fifth failed attempt and by the admin Fail.
    """
    composed = compose(
        hostname=hostname,
        failed=failed,
        sender=row.sender,
        recipient=row.recipient,
        queued=row.queued,
        now=now,
        last_attempt=last_attempt,
        attempts=row.attempts,
        code=code,
        secode=secode,
        error=error,
        remote_host=remote_host,
        headers=original_headers(row.prefix, data or b""),
        next_attempts=next_attempts,
    )
    record = DSNRecord(
        account=row.account,
        rcpt_to=str(row.sender),
        msg_from=composed.msg_from,
        size=len(composed.data),
        message_id=composed.message_id,
        subject=composed.subject,
    )
    return composed, record
