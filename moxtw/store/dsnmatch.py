"""Matching incoming reports to the messages we sent, by FromID (spec §6.2).

A message sent with a FromID has the MAIL FROM ``base<sep><fromid>@domain``; what comes
back to that address concerns that one message to that one recipient.  When the FromID
belongs to a retired message (delivered, failed, ...), the incoming message becomes part
of that message's record instead of an ordinary incoming message:

* an attempt-history entry for the report (its codes and diagnostic text),
* an outgoing event (DSN=true) named after the DSN's action (``failed``, ``delayed``,
  ``delivered``, ``relayed``, ``expanded``), or ``unrecognized`` for something that is
  not a usable DSN, or ``complaint`` for an ARF feedback report (beyond mox),
* for a ``failed`` DSN with an SMTP code, mox's automatic suppression (source ``DSN``);
  for a complaint, the recipient is suppressed (beyond mox: do not mail someone who
  reported the message as spam).

The event and the suppression belong to the account that sent the message (moxtw's fix
8).  A report only counts when the account that received it is the one that sent the
message: mox looks the FromID up across all accounts, so mail to bob's address carrying
alice's FromID (or an ARF report naming it, or bob reusing alice's FromID for his own
submission) would change alice's message record, events and suppressions.  A failed DSN turns a message recorded as delivered into a failure for the "three
consecutive failures" rule (fix 6).  Everything happens in the caller's transaction, the
one that stores the incoming message.
"""

from __future__ import annotations

from typing import Any

import attrs

from ..address import Address, base_address
from ..dsnparse import DeliveryReport, FeedbackReport, Report
from . import outbox
from .suppressions import suppression_present

#: The event for an ARF feedback report about one of our messages (not an event of mox).
COMPLAINT = "complaint"
UNRECOGNIZED = "unrecognized"


@attrs.frozen
class Matched:
    """What an incoming report did to the message it matched."""

    msg_id: int
    account: str  # the sending account
    event: str
    event_id: int
    dsn: bool
    suppressing: bool


@attrs.frozen
class _Recipient:
    """The fields of a retired message that :func:`outbox.auto_suppress` reads."""

    id: int
    account: str
    recipient: Address


def _retired_by_fromid(cursor: Any, from_id: str, account: str) -> outbox.RetiredRow | None:
    cursor.execute(
        f"SELECT {outbox._RETIRED_COLUMNS} FROM queue_retired WHERE from_id = ? AND account = ?"
        " ORDER BY id DESC LIMIT 1",
        (from_id, account),
    )
    r = cursor.fetchone()
    return None if r is None else outbox._retired_row(r)


def match_report(
    cursor: Any, *, account: str, from_id: str, report: Report | None, problem: str = "", now: float
) -> Matched | None:
    """Record an incoming message for ``from_id`` against the retired message it concerns,
    among the messages sent by ``account`` (the account that received the report).

    ``report`` is what :func:`moxtw.dsnparse.parse_report` found (None: not a report, or a
    report it could not use, with its error in ``problem``).  Returns None when no retired
    message of ``account`` has that FromID: the message is an ordinary incoming message then.
    """
    if not from_id:
        return None
    row = _retired_by_fromid(cursor, from_id, account)
    if row is None:
        return None
    recipient = _Recipient(row.id, row.account, Address(row.recipient_localpart, row.recipient_domain))
    code, secode, error, success = 0, "", "", False
    suppressing = False
    if isinstance(report, DeliveryReport):
        status = report.primary()
        event, dsn = status.action, True
        code, secode = status.code, status.secode
        error = status.diagnostic or f"{status.action} ({status.status}) reported by {report.reporting_mta or 'remote mta'}"
        success = status.action != "delayed" and status.action != "failed"
        if status.action == "failed":
            if code:
                suppressing = outbox.auto_suppress(cursor, recipient, code, secode, "DSN", now)  # type: ignore[arg-type]
            # A bounce after "delivered" makes the message a failure for the
            # consecutive-failures rule (fix 6).
            cursor.execute("UPDATE queue_retired SET success = 0 WHERE id = ?", (row.id,))
    elif isinstance(report, FeedbackReport):
        event, dsn = COMPLAINT, False
        error = f"feedback report: {report.feedback_type}" + (f" from {report.user_agent}" if report.user_agent else "")
        suppressing = _suppress_complaint(cursor, recipient, report, now)
    else:
        event = UNRECOGNIZED
        dsn = bool(problem)
        error = f"parsing incoming dsn: {problem}" if problem else "incoming message not a dsn"
    cursor.execute(
        "INSERT INTO queue_attempt (msg_id, attempt, token, start, duration, success, code, secode, error)"
        " VALUES (?, ?, '', ?, 0, ?, ?, ?, ?)",
        (row.id, row.attempts, now, int(success), code, secode, f"incoming message: {error}"),
    )
    cursor.execute("UPDATE queue_retired SET last_activity = ? WHERE id = ?", (now, row.id))
    event_id = outbox.insert_event(
        cursor,
        account=row.account,
        kind=event,
        queue_msg_id=row.id,
        from_id=row.from_id,
        message_id=row.message_id,
        subject=row.subject,
        extra=row.extra if row.extra is not None else "{}",
        smtp_code=code,
        smtp_enhanced_code=outbox.enhanced_code(code, secode),
        error=error,
        suppressing=suppressing,
        dsn=dsn,
        created=now,
    )
    return Matched(row.id, row.account, event, event_id, dsn, suppressing)


def _suppress_complaint(cursor: Any, recipient: _Recipient, report: FeedbackReport, now: float) -> bool:
    if report.feedback_type == "not-spam":
        return False
    base = base_address(recipient.recipient)
    if suppression_present(cursor, recipient.account, base):
        return False
    cursor.execute(
        "INSERT INTO suppression (created, account, base_address, original_address, manual, reason)"
        " VALUES (?, ?, ?, ?, 0, ?)",
        (now, recipient.account, base, str(recipient.recipient), f"feedback report ({report.feedback_type})"),
    )
    return True
