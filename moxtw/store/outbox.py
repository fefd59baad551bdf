"""Queue delivery bookkeeping (cursor functions): claims, attempt results, retirement, events.

A claim is a lease (several daemons may share one database): :func:`claim_due` commits at
once, increments the attempt counter, pushes ``next_attempt`` past the attempt (at least
the next backoff), records a per-attempt token and an in-progress attempt row.  Nothing is
locked while the message is being delivered.  :func:`finish_attempt` writes the result
only while the message still carries that token (:class:`StaleLease` otherwise), and emits
the event in the same transaction as the state change.  A message whose daemon died is
simply due again when its ``next_attempt`` passes.

These functions run inside a transaction handed over by :class:`~moxtw.store.Database`
and may be re-run, so they have no side effects outside the database: message files that
no row refers to any more are listed in ``blob_gc`` and removed after the commit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs

from ..address import Address, base_address, go_quote
from .messages import DeliveryMeta, insert_message
from .suppressions import suppression_present

DEFAULT_MAX_ATTEMPTS = 8

#: Outgoing event kinds the queue emits.
DELIVERED = "delivered"
DELAYED = "delayed"
FAILED = "failed"
SUPPRESSED = "suppressed"
CANCELED = "canceled"

#: mox §5.3: SMTP codes and (5xx) enhanced codes that suppress a recipient at once.
IMMEDIATE_CODES = frozenset({521, 550, 551, 553, 556})
IMMEDIATE_SECODES = frozenset({"1.1", "1.2", "1.3", "1.6", "2.1", "7.1"})

CANCELED_ERROR = "delivery canceled by admin"
#: The result of an attempt that was in progress when the admin failed or dropped its
#: message (the attempt lost its lease, so its real result is never recorded).
INTERRUPTED_ERROR = "attempt in progress when delivery was canceled by admin; its result is not recorded"


class StaleLease(Exception):
    """The message no longer carries the attempt's token: its lease ran out and another
    attempt took over, or it was removed from the queue.  The result is not recorded."""

    def __init__(self, msg_id: int, token: str) -> None:
        super().__init__(f"queue message {msg_id}: attempt {token} is no longer current")
        self.msg_id = msg_id
        self.token = token


# --- records -------------------------------------------------------------------------

_MSG_COLUMNS = (
    "id, base_id, account, queued, sender_localpart, sender_domain, recipient_localpart,"
    " recipient_domain, recipient_address, from_id, message_id, subject, blob, prefix, size,"
    " has_8bit, smtputf8, require_tls, future_release_request, extra, hold, attempts,"
    " max_attempts, next_attempt, last_attempt, last_result, lease_token, transport"
)


@attrs.frozen
class QueueRow:
    """A ``queue_msg`` row."""

    id: int
    base_id: int
    account: str
    queued: float
    sender_localpart: str
    sender_domain: str
    recipient_localpart: str
    recipient_domain: str
    recipient_address: str
    from_id: str
    message_id: str
    subject: str
    blob: str
    prefix: bytes
    size: int
    has_8bit: bool
    smtputf8: bool
    require_tls: bool | None
    future_release_request: str
    extra: str | None
    hold: bool
    attempts: int
    max_attempts: int
    next_attempt: float
    last_attempt: float | None
    last_result: str | None
    lease_token: str | None
    transport: str

    @property
    def sender(self) -> Address:
        return Address(self.sender_localpart, self.sender_domain)

    @property
    def recipient(self) -> Address:
        return Address(self.recipient_localpart, self.recipient_domain)

    @property
    def effective_max_attempts(self) -> int:
        return self.max_attempts or DEFAULT_MAX_ATTEMPTS


def _queue_row(r: Sequence[Any]) -> QueueRow:
    return QueueRow(
        id=int(r[0]),
        base_id=int(r[1]),
        account=r[2],
        queued=float(r[3]),
        sender_localpart=r[4],
        sender_domain=r[5],
        recipient_localpart=r[6],
        recipient_domain=r[7],
        recipient_address=r[8],
        from_id=r[9],
        message_id=r[10],
        subject=r[11],
        blob=r[12],
        prefix=bytes(r[13]),
        size=int(r[14]),
        has_8bit=bool(r[15]),
        smtputf8=bool(r[16]),
        require_tls=None if r[17] is None else bool(r[17]),
        future_release_request=r[18],
        extra=r[19],
        hold=bool(r[20]),
        attempts=int(r[21]),
        max_attempts=int(r[22]),
        next_attempt=float(r[23]),
        last_attempt=None if r[24] is None else float(r[24]),
        last_result=r[25],
        lease_token=r[26],
        transport=r[27],
    )


@attrs.frozen
class AttemptRow:
    """One delivery attempt (mox's MsgResult, plus remote host/IP and TLS)."""

    attempt: int
    token: str
    start: float
    duration: float | None  # None: in progress
    success: bool
    code: int
    secode: str
    error: str
    remote_host: str
    remote_ip: str
    tls: bool
    timeout_after_body: bool


@attrs.frozen
class RetiredRow:
    id: int
    base_id: int
    account: str
    queued: float
    sender_localpart: str
    sender_domain: str
    recipient_localpart: str
    recipient_domain: str
    recipient_address: str
    from_id: str
    message_id: str
    subject: str
    size: int
    extra: str | None
    transport: str
    attempts: int
    last_attempt: float | None
    last_activity: float
    success: bool
    event: str
    keep_until: float
    has_8bit: bool = False
    smtputf8: bool = False
    require_tls: bool | None = None
    future_release_request: str = ""
    max_attempts: int = 0


@attrs.frozen
class EventRow:
    """An outgoing event for the webhook sender (``extra`` is JSON text or None)."""

    id: int
    account: str
    kind: str
    queue_msg_id: int
    from_id: str
    message_id: str
    subject: str
    extra: str | None
    smtp_code: int
    smtp_enhanced_code: str
    error: str
    suppressing: bool
    dsn: bool
    created: float


@attrs.frozen
class Claimed:
    """A message claimed for an attempt: the row as updated, and whether its recipient is
    on the sending account's suppression list (then it is not handed to the transport)."""

    row: QueueRow
    token: str
    start: float
    #: The real wait before the next attempt should this one fail temporarily (the lease
    #: itself, ``row.next_attempt``, may be longer: see ``lease_minimum``).
    backoff: float
    suppressed: bool


@attrs.frozen
class ClaimResult:
    #: Groups of messages delivered together (same base_id, domain, attempt count,
    #: RequireTLS and transport: one SMTP transaction).
    batches: list[list[Claimed]]
    #: The earliest ``next_attempt`` after ``now`` among unheld messages (None: none).
    next_due: float | None
    #: Whether due messages were left because of the concurrency limits.
    limited: bool
    #: When the scan read every due message: (``now``, the full domains).  Every due
    #: message not claimed then was in one of these domains or excluded (see
    #: ``settled`` of :func:`claim_due`).  None when the slots ran out first.
    settled: Settled | None = None


# --- claiming ------------------------------------------------------------------------


#: (time, domains): at that time every due, unheld message outside these domains was
#: claimed or being delivered (see :func:`claim_due`).
Settled = tuple[float, frozenset[str]]

#: Where a claim's scan of due messages starts: the first page is small (a pass after one
#: delivery finished has one slot to fill) and each further page twice the size.
FIRST_PAGE = 8


def _select_due(
    cursor: Any,
    now: float,
    after: tuple[float, int],
    page: int,
    skip_domains: Collection[str] = (),
    since: float | None = None,
) -> list[tuple[int, float, str, int, int]]:
    """(id, next_attempt, recipient_domain, base_id, attempts) of due, unheld messages after
    ``after`` in (next_attempt, id) order, outside ``skip_domains``, due after ``since``:
    only what deciding a claim needs (the full rows of the claimed messages come back from
    their lease, see :func:`_lease`)."""
    skip = ""
    if skip_domains:
        skip = f" AND recipient_domain NOT IN ({', '.join('?' for _ in skip_domains)})"
    if since is not None:
        skip += " AND next_attempt > ?"
    cursor.execute(
        "SELECT id, next_attempt, recipient_domain, base_id, attempts FROM queue_msg"
        " WHERE hold = 0 AND next_attempt <= ?"
        f" AND (next_attempt > ? OR (next_attempt = ? AND id > ?)){skip}"
        " ORDER BY next_attempt, id LIMIT ?",
        (now, after[0], after[0], after[1], *skip_domains, *(() if since is None else (since,)), page),
    )
    rows: list[tuple[int, float, str, int, int]] = cursor.fetchall()
    return rows


def _siblings(cursor: Any, msg_id: int, now: float) -> list[int]:
    """IDs of the due, unheld messages that go in one transaction with ``msg_id``: the same
    submission (base_id), recipient domain, attempt count, transport and RequireTLS."""
    cursor.execute(
        "SELECT s.id FROM queue_msg l JOIN queue_msg s ON s.base_id = l.base_id"
        " WHERE l.id = ? AND s.id != l.id AND s.hold = 0 AND s.next_attempt <= ?"
        " AND s.recipient_domain = l.recipient_domain AND s.attempts = l.attempts AND s.transport = l.transport"
        " AND s.require_tls IS l.require_tls ORDER BY s.id",
        (msg_id, now),
    )
    return [int(r[0]) for r in cursor.fetchall()]


def _chunks(items: Sequence[Any], size: int = 500) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _suppressed(cursor: Any, rows: Sequence[QueueRow]) -> set[tuple[str, str]]:
    """(account, base address) of the recipients of ``rows`` on their account's
    suppression list (one query per account and 500 addresses)."""
    wanted: dict[str, set[str]] = {}
    for row in rows:
        wanted.setdefault(row.account, set()).add(base_address(row.recipient))
    found: set[tuple[str, str]] = set()
    for account, bases in wanted.items():
        for chunk in _chunks(sorted(bases)):
            cursor.execute(
                f"SELECT base_address FROM suppression WHERE account = ? AND base_address IN ({', '.join('?' * len(chunk))})",
                (account, *chunk),
            )
            found.update((account, r[0]) for r in cursor.fetchall())
    return found


def claim_due(
    cursor: Any,
    now: float,
    *,
    slots: int,
    domain_slots: Callable[[str], int],
    exclude: Collection[int],
    backoff: Callable[[int], float],
    lease_minimum: float,
    new_token: Callable[[], str],
    saturated: Collection[str] = (),
    settled: Settled | None = None,
    page: int = 200,
) -> ClaimResult:
    """Claim up to ``slots`` batches of due, unheld messages, by ascending next_attempt.

    ``domain_slots(domain)`` says how many more batches may go to a recipient domain now;
    ``saturated`` are domains known to have none.  Their messages are left out in the
    query itself, and a domain that fills up during the claim is added and the query
    resumed: a backlog for one busy domain is not read on every pass.  ``exclude`` are IDs
    this daemon is still delivering (their lease may have run out).  ``backoff(n)`` is the
    wait after the (n+1)th attempt fails.

    The scan reads a few columns of a page of due messages at a time (``FIRST_PAGE``
    rows, doubling up to ``page``); only the claimed messages' rows are read in full, once
    their leases are written.

    Leaving domains out of the query still makes SQLite step over their due messages,
    so a backlog would be read again by every pass.  ``settled`` avoids that: it is the
    ``settled`` of an earlier result, passed when the caller knows that nothing but time
    and its own claims has changed the queue since (no message queued, released,
    rescheduled or given back).  Once the domains full then are all full in this claim,
    messages outside them due by then were claimed then, so only messages due since are
    read.
    """
    limit = page
    page = min(limit, FIRST_PAGE)
    # (rows of the batch, token, backoff) of each batch claimed, in claim order.
    leased: list[tuple[list[QueueRow], str, float]] = []
    used: dict[str, int] = {}
    full: set[str] = set(saturated)
    claimed_ids: set[int] = set()
    limited = bool(full)
    # Whether every due message was read (what is left is in full domains or excluded).
    exhausted = False
    after = (-1e300, 0)
    while slots > len(leased):
        since = settled[0] if settled is not None and settled[1] <= full else None
        rows = _select_due(cursor, now, after, page, sorted(full), since)
        if not rows:
            exhausted = True
            break
        requery = stopped = False
        for msg_id, next_attempt, domain, base_id, attempts in rows:
            if msg_id in exclude or msg_id in claimed_ids:
                after = (next_attempt, msg_id)
                continue
            if len(leased) >= slots:
                limited = stopped = True
                break
            if used.get(domain, 0) >= domain_slots(domain):
                # Resume from this row with the domain left out.
                full.add(domain)
                limited = requery = True
                break
            after = (next_attempt, msg_id)
            ids = [msg_id]
            if base_id:
                ids += [s for s in _siblings(cursor, msg_id, now) if s not in exclude and s not in claimed_ids]
            claimed_ids.update(ids)
            used[domain] = used.get(domain, 0) + 1
            token, wait = new_token(), backoff(attempts)
            leased.append((_lease(cursor, ids, token, wait, now, lease_minimum), token, wait))
        if not requery and len(rows) < page:
            exhausted = not stopped
            break
        page = min(2 * page, limit)
    if not limited and len(leased) >= slots:
        cursor.execute(
            "SELECT 1 FROM queue_msg WHERE hold = 0 AND next_attempt <= ? LIMIT 1", (now,)
        )
        limited = cursor.fetchone() is not None
    batches = _claimed(cursor, leased, now)
    cursor.execute("SELECT min(next_attempt) FROM queue_msg WHERE hold = 0 AND next_attempt > ?", (now,))
    (next_due,) = cursor.fetchone()
    return ClaimResult(
        batches, None if next_due is None else float(next_due), limited, (now, frozenset(full)) if exhausted else None
    )


def _lease(cursor: Any, ids: list[int], token: str, wait: float, now: float, lease_minimum: float) -> list[QueueRow]:
    """Take the lease of a batch's messages: one attempt more, ``next_attempt`` pushed
    past the attempt (at least the backoff ``wait``), the batch's token, and an
    in-progress attempt row each.  Returns the rows as updated, in the order of ``ids``."""
    lease_until = now + max(wait, lease_minimum)
    rows: dict[int, QueueRow] = {}
    for chunk in _chunks(ids):
        marks = ", ".join("?" * len(chunk))
        cursor.execute(
            "UPDATE queue_msg SET attempts = attempts + 1, last_attempt = ?, next_attempt = ?, lease_token = ?,"
            f" last_result = 'delivering...' WHERE id IN ({marks}) RETURNING {_MSG_COLUMNS}",
            (now, lease_until, token, *chunk),
        )
        for r in cursor.fetchall():
            row = _queue_row(r)
            rows[row.id] = row
        cursor.execute(
            "INSERT INTO queue_attempt (msg_id, attempt, token, start)"
            f" SELECT id, attempts, ?, ? FROM queue_msg WHERE id IN ({marks}) ORDER BY id",
            (token, now, *chunk),
        )
    return [rows[i] for i in ids]


def _claimed(cursor: Any, leased: list[tuple[list[QueueRow], str, float]], now: float) -> list[list[Claimed]]:
    """The leased batches as :class:`Claimed` records, with their suppression status."""
    suppressed = _suppressed(cursor, [row for rows, _, _ in leased for row in rows])
    return [
        [
            Claimed(row, token, now, wait, (row.account, base_address(row.recipient)) in suppressed)
            for row in rows
        ]
        for rows, token, wait in leased
    ]


# --- results ---------------------------------------------------------------------------


@attrs.frozen
class Finish:
    """What :func:`finish_attempt` writes for one message of a batch."""

    msg_id: int
    token: str
    #: One of DELIVERED, DELAYED, FAILED, SUPPRESSED.
    kind: str
    duration: float
    now: float
    code: int = 0
    #: Short enhanced code, e.g. "1.1" ("" if none).
    secode: str = ""
    error: str = ""
    remote_host: str = ""
    remote_ip: str = ""
    tls: bool = False
    timeout_after_body: bool = False
    #: DELAYED: when the next attempt is due.
    next_attempt: float = 0.0
    #: How long a retired record is kept (0: not kept).
    keep: float = 0.0
    #: A DSN to put in the sender account's Inbox (the blob key is passed separately).
    dsn: DSNRecord | None = None


@attrs.frozen
class DSNRecord:
    account: str
    rcpt_to: str
    msg_from: str
    size: int
    message_id: str
    subject: str


@attrs.frozen
class FinishResult:
    event_id: int
    #: Whether this failure added the recipient to the suppression list.
    suppressing: bool
    #: Message files released (also listed in ``blob_gc``): remove after the commit.
    unreferenced: list[str]
    #: The account message ID of the DSN, if one was delivered.
    dsn_message_id: int | None


def enhanced_code(code: int, secode: str) -> str:
    """``"<code/100>.<secode>"`` if a secode is known, else "" (mox's SMTPEnhancedCode)."""
    return f"{code // 100}.{secode}" if secode and code else ""


def _get_row(cursor: Any, msg_id: int) -> QueueRow | None:
    cursor.execute(f"SELECT {_MSG_COLUMNS} FROM queue_msg WHERE id = ?", (msg_id,))
    r = cursor.fetchone()
    return None if r is None else _queue_row(r)


def finish_attempt(cursor: Any, dsn_blob: str | None, f: Finish) -> FinishResult:
    """Record the attempt's result and move the message on, with its event, atomically.

    Raises :class:`StaleLease` (rolling everything back, DSN included) when the message
    no longer carries ``f.token``.
    """
    success = f.kind == DELIVERED
    # The lease check is the state change's own WHERE clause, which also reads the row.
    if f.kind == DELAYED:
        cursor.execute(
            "UPDATE queue_msg SET next_attempt = ?, lease_token = NULL, last_result = ? WHERE id = ? AND lease_token = ?"
            f" RETURNING {_MSG_COLUMNS}",
            (f.next_attempt, f.error, f.msg_id, f.token),
        )
    else:
        cursor.execute(f"DELETE FROM queue_msg WHERE id = ? AND lease_token = ? RETURNING {_MSG_COLUMNS}", (f.msg_id, f.token))
    found = cursor.fetchall()
    if not found:
        raise StaleLease(f.msg_id, f.token)
    row = _queue_row(found[0])
    cursor.execute(
        "UPDATE queue_attempt SET duration = ?, success = ?, code = ?, secode = ?, error = ?,"
        " remote_host = ?, remote_ip = ?, tls = ?, timeout_after_body = ? WHERE msg_id = ? AND token = ?",
        (
            f.duration,
            int(success),
            f.code,
            f.secode,
            f.error,
            f.remote_host,
            f.remote_ip,
            int(f.tls),
            int(f.timeout_after_body),
            f.msg_id,
            f.token,
        ),
    )
    suppressing = False
    unreferenced: list[str] = []
    if f.kind != DELAYED:
        if f.kind == FAILED and f.code != 0:
            suppressing = auto_suppress(cursor, row, f.code, f.secode, "queue", f.now)
        _keep_retired(cursor, row, success=success, event=f.kind, now=f.now, keep=f.keep)
        unreferenced = _release_blob(cursor, row.blob, f.now)
    event_id = insert_event(
        cursor,
        account=row.account,
        kind=f.kind,
        queue_msg_id=row.id,
        from_id=row.from_id,
        message_id=row.message_id,
        subject=row.subject,
        extra=row.extra if row.extra is not None else "{}",
        smtp_code=f.code,
        smtp_enhanced_code=enhanced_code(f.code, f.secode),
        error=f.error,
        suppressing=suppressing,
        created=f.now,
    )
    dsn_message_id = None
    if f.dsn is not None and dsn_blob is not None:
        d = f.dsn
        dsn_message_id = insert_message(
            cursor,
            dsn_blob,
            d.account,
            "Inbox",
            d.size,
            f.now,
            frozenset(),
            (),
            DeliveryMeta(rcpt_to=d.rcpt_to, msg_from=d.msg_from),
            dsn=True,
            message_id=d.message_id,
            subject=d.subject,
        )
    return FinishResult(event_id, suppressing, unreferenced, dsn_message_id)


def auto_suppress(cursor: Any, row: QueueRow, code: int, secode: str, source: str, now: float) -> bool:
    """mox §5.3 for a final failure with an SMTP code; True if the recipient was added.

    The "three consecutive failures" rule counts the sending account's retired messages
    only (moxtw's fix 6).
    """
    base = base_address(row.recipient)
    if suppression_present(cursor, row.account, base):
        return False
    if code in IMMEDIATE_CODES or (code // 100 == 5 and secode in IMMEDIATE_SECODES):
        reason = f"delivery failure from {source} with smtp code {code}, enhanced code {go_quote(secode)}"
    else:
        cursor.execute(
            "SELECT success FROM queue_retired WHERE account = ? AND recipient_address = ? AND id != ?"
            " ORDER BY last_activity DESC, id DESC LIMIT 2",
            (row.account, str(row.recipient), row.id),
        )
        previous = cursor.fetchall()
        if len(previous) < 2 or any(r[0] for r in previous):
            return False
        reason = f"delivery failure from {source} and three consecutive failures"
    cursor.execute(
        "INSERT INTO suppression (created, account, base_address, original_address, manual, reason)"
        " VALUES (?, ?, ?, ?, 0, ?)",
        (now, row.account, base, str(row.recipient), reason),
    )
    return True


def retire(cursor: Any, row: QueueRow, *, success: bool, event: str, now: float, keep: float) -> list[str]:
    """Remove ``row`` from the queue, keeping a retired record for ``keep`` seconds.

    Returns the message files no queued message refers to any more (listed in blob_gc).
    """
    _keep_retired(cursor, row, success=success, event=event, now=now, keep=keep)
    cursor.execute("DELETE FROM queue_msg WHERE id = ?", (row.id,))
    return _release_blob(cursor, row.blob, now)


def _keep_retired(cursor: Any, row: QueueRow, *, success: bool, event: str, now: float, keep: float) -> None:
    """The retired record of ``row`` (kept ``keep`` seconds), or, when none is kept, the
    removal of its attempt history."""
    if keep > 0:
        cursor.execute(
            "INSERT INTO queue_retired (id, base_id, account, queued, sender_localpart, sender_domain,"
            " recipient_localpart, recipient_domain, recipient_address, from_id, message_id, subject,"
            " size, has_8bit, smtputf8, require_tls, future_release_request, extra, transport,"
            " attempts, max_attempts, last_attempt, last_activity, success, event, keep_until)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.base_id,
                row.account,
                row.queued,
                row.sender_localpart,
                row.sender_domain,
                row.recipient_localpart,
                row.recipient_domain,
                str(row.recipient),
                row.from_id,
                row.message_id,
                row.subject,
                row.size,
                int(row.has_8bit),
                int(row.smtputf8),
                None if row.require_tls is None else int(row.require_tls),
                row.future_release_request,
                row.extra,
                row.transport,
                row.attempts,
                row.max_attempts,
                row.last_attempt,
                now,
                int(success),
                event,
                now + keep,
            ),
        )
    else:
        cursor.execute("DELETE FROM queue_attempt WHERE msg_id = ?", (row.id,))


def _release_blob(cursor: Any, blob: str, now: float) -> list[str]:
    """``[blob]``, listed in blob_gc, if no queued message refers to it any more, else []
    (one statement: the upsert returns the blob_gc row whether it was new or not)."""
    cursor.execute(
        "INSERT INTO blob_gc (blob, created) SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM queue_msg WHERE blob = ?)"
        " ON CONFLICT (blob) DO UPDATE SET created = blob_gc.created RETURNING blob",
        (blob, now, blob),
    )
    return [str(r[0]) for r in cursor.fetchall()]


def insert_event(
    cursor: Any,
    *,
    account: str,
    kind: str,
    queue_msg_id: int = 0,
    from_id: str = "",
    message_id: str = "",
    subject: str = "",
    extra: str | None = None,
    smtp_code: int = 0,
    smtp_enhanced_code: str = "",
    error: str = "",
    suppressing: bool = False,
    dsn: bool = False,
    created: float,
) -> int:
    cursor.execute(
        "INSERT INTO event (account, kind, queue_msg_id, from_id, message_id, subject, extra, smtp_code,"
        " smtp_enhanced_code, error, suppressing, dsn, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            account,
            kind,
            queue_msg_id,
            from_id,
            message_id,
            subject,
            extra,
            smtp_code,
            smtp_enhanced_code,
            error,
            int(suppressing),
            int(dsn),
            created,
        ),
    )
    return int(cursor.lastrowid)


# --- admin operations -----------------------------------------------------------------


def _cancel(cursor: Any, row: QueueRow, kind: str, now: float, keep: float) -> list[str]:
    """Take ``row`` out of the queue by admin decision (Fail: ``kind`` FAILED, Drop:
    CANCELED): result "delivery canceled by admin", retirement and event, all here.

    An attempt in progress loses its lease with the row: its :func:`finish_attempt`
    raises :class:`StaleLease`.  Its history row is closed so it does not say
    "delivering..." forever.  Returns the released message files.
    """
    cursor.execute(
        "UPDATE queue_attempt SET duration = ? - start, error = ? WHERE msg_id = ? AND duration IS NULL",
        (now, INTERRUPTED_ERROR, row.id),
    )
    cursor.execute(
        "INSERT INTO queue_attempt (msg_id, attempt, token, start, duration, error) VALUES (?, ?, '', ?, 0, ?)",
        (row.id, row.attempts, now, CANCELED_ERROR),
    )
    unreferenced = retire(cursor, row, success=False, event=kind, now=now, keep=keep)
    insert_event(
        cursor,
        account=row.account,
        kind=kind,
        queue_msg_id=row.id,
        from_id=row.from_id,
        message_id=row.message_id,
        subject=row.subject,
        extra=row.extra if row.extra is not None else "{}",
        error=CANCELED_ERROR,
        created=now,
    )
    return unreferenced


def drop_messages(
    cursor: Any, ids: Sequence[int], now: float, keep: Callable[[str], float]
) -> tuple[list[int], list[str]]:
    """Remove queued messages without a DSN (admin Drop): result "delivery canceled by
    admin", event ``canceled``, retired if the account keeps them.  An attempt in progress
    loses its lease (its result is then ignored).  Returns (dropped IDs, released files)."""
    dropped: list[int] = []
    unreferenced: list[str] = []
    for msg_id in ids:
        row = _get_row(cursor, msg_id)
        if row is None:
            continue
        unreferenced += _cancel(cursor, row, CANCELED, now, keep(row.account))
        dropped.append(row.id)
    return dropped, unreferenced


@attrs.frozen
class AdminFailure:
    """A message to fail (admin Fail) with the failure DSN composed for it."""

    msg_id: int
    dsn: DSNRecord


def fail_messages(
    cursor: Any,
    dsn_blobs: Sequence[str],
    failures: Sequence[AdminFailure],
    now: float,
    keep: Callable[[str], float],
) -> tuple[list[int], list[str]]:
    """Fail queued messages permanently (admin Fail): result "delivery canceled by admin",
    a failure DSN (file ``dsn_blobs[i]`` for ``failures[i]``) into the sender account's
    Inbox, retirement and event ``failed``, per message in this transaction.  An attempt in
    progress loses its lease.  Messages no longer queued are skipped and their DSN file
    released.  Returns (failed IDs, released files)."""
    failed: list[int] = []
    unreferenced: list[str] = []
    for blob, failure in zip(dsn_blobs, failures, strict=True):
        row = _get_row(cursor, failure.msg_id)
        if row is None:
            cursor.execute("INSERT OR IGNORE INTO blob_gc (blob, created) VALUES (?, ?)", (blob, now))
            unreferenced.append(blob)
            continue
        unreferenced += _cancel(cursor, row, FAILED, now, keep(row.account))
        d = failure.dsn
        insert_message(
            cursor,
            blob,
            d.account,
            "Inbox",
            d.size,
            now,
            frozenset(),
            (),
            DeliveryMeta(rcpt_to=d.rcpt_to, msg_from=d.msg_from),
            dsn=True,
            message_id=d.message_id,
            subject=d.subject,
        )
        failed.append(row.id)
    return failed, unreferenced


def set_hold(cursor: Any, ids: Sequence[int], hold: bool) -> int:
    """Hold or release messages; releasing keeps next_attempt (due at once if past)."""
    n = 0
    for msg_id in ids:
        cursor.execute("UPDATE queue_msg SET hold = ? WHERE id = ?", (int(hold), msg_id))
        n += cursor.rowcount
    return n


def hold_matching(cursor: Any, account: str = "", sender_domain: str = "", recipient_domain: str = "") -> int:
    """Apply a hold rule to queued messages: every non-empty field must match (fix 4)."""
    where = ["hold = 0"]
    args: list[str] = []
    for column, value in (("account", account), ("sender_domain", sender_domain), ("recipient_domain", recipient_domain)):
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    cursor.execute(f"UPDATE queue_msg SET hold = 1 WHERE {' AND '.join(where)}", args)
    return int(cursor.rowcount)


# --- reading -------------------------------------------------------------------------


def get_queued(cursor: Any, msg_id: int) -> QueueRow | None:
    return _get_row(cursor, msg_id)


def list_queued(cursor: Any) -> list[QueueRow]:
    cursor.execute(f"SELECT {_MSG_COLUMNS} FROM queue_msg ORDER BY id")
    return [_queue_row(r) for r in cursor.fetchall()]


def queue_counts(cursor: Any, now: float) -> dict[str, int]:
    """Queued messages by state (for metrics): held; inflight (a delivery holds an
    unexpired lease); due (``next_attempt`` passed); waiting (for a retry or release)."""
    cursor.execute(
        "SELECT CASE WHEN hold != 0 THEN 'held'"
        " WHEN lease_token IS NOT NULL AND next_attempt > ? THEN 'inflight'"
        " WHEN next_attempt <= ? THEN 'due' ELSE 'waiting' END AS state, count(*)"
        " FROM queue_msg GROUP BY state",
        (now, now),
    )
    return {str(state): int(n) for state, n in cursor.fetchall()}


def attempt_history(cursor: Any, msg_id: int) -> list[AttemptRow]:
    """The attempts of a queued or retired message, oldest first."""
    cursor.execute(
        "SELECT attempt, token, start, duration, success, code, secode, error, remote_host, remote_ip,"
        " tls, timeout_after_body FROM queue_attempt WHERE msg_id = ? ORDER BY id",
        (msg_id,),
    )
    return [
        AttemptRow(
            attempt=int(r[0]),
            token=r[1],
            start=float(r[2]),
            duration=None if r[3] is None else float(r[3]),
            success=bool(r[4]),
            code=int(r[5]),
            secode=r[6],
            error=r[7],
            remote_host=r[8],
            remote_ip=r[9],
            tls=bool(r[10]),
            timeout_after_body=bool(r[11]),
        )
        for r in cursor.fetchall()
    ]


_RETIRED_COLUMNS = (
    "id, base_id, account, queued, sender_localpart, sender_domain, recipient_localpart,"
    " recipient_domain, recipient_address, from_id, message_id, subject, size, extra, transport,"
    " attempts, last_attempt, last_activity, success, event, keep_until, has_8bit, smtputf8,"
    " require_tls, future_release_request, max_attempts"
)


def _retired_row(r: Sequence[Any]) -> RetiredRow:
    return RetiredRow(
        id=int(r[0]),
        base_id=int(r[1]),
        account=r[2],
        queued=float(r[3]),
        sender_localpart=r[4],
        sender_domain=r[5],
        recipient_localpart=r[6],
        recipient_domain=r[7],
        recipient_address=r[8],
        from_id=r[9],
        message_id=r[10],
        subject=r[11],
        size=int(r[12]),
        extra=r[13],
        transport=r[14],
        attempts=int(r[15]),
        last_attempt=None if r[16] is None else float(r[16]),
        last_activity=float(r[17]),
        success=bool(r[18]),
        event=r[19],
        keep_until=float(r[20]),
        has_8bit=bool(r[21]),
        smtputf8=bool(r[22]),
        require_tls=None if r[23] is None else bool(r[23]),
        future_release_request=r[24],
        max_attempts=int(r[25]),
    )


def get_retired(cursor: Any, msg_id: int) -> RetiredRow | None:
    cursor.execute(f"SELECT {_RETIRED_COLUMNS} FROM queue_retired WHERE id = ?", (msg_id,))
    r = cursor.fetchone()
    return None if r is None else _retired_row(r)


def list_retired(cursor: Any) -> list[RetiredRow]:
    cursor.execute(f"SELECT {_RETIRED_COLUMNS} FROM queue_retired ORDER BY id")
    return [_retired_row(r) for r in cursor.fetchall()]


def list_events(cursor: Any, after_id: int = 0, limit: int = 1000) -> list[EventRow]:
    """Events with ID > ``after_id``, oldest first (for the webhook sender)."""
    cursor.execute(
        "SELECT id, account, kind, queue_msg_id, from_id, message_id, subject, extra, smtp_code,"
        " smtp_enhanced_code, error, suppressing, dsn, created FROM event WHERE id > ? ORDER BY id LIMIT ?",
        (after_id, limit),
    )
    return [
        EventRow(
            id=int(r[0]),
            account=r[1],
            kind=r[2],
            queue_msg_id=int(r[3]),
            from_id=r[4],
            message_id=r[5],
            subject=r[6],
            extra=r[7],
            smtp_code=int(r[8]),
            smtp_enhanced_code=r[9],
            error=r[10],
            suppressing=bool(r[11]),
            dsn=bool(r[12]),
            created=float(r[13]),
        )
        for r in cursor.fetchall()
    ]


def extra_of(row: QueueRow) -> Mapping[str, str]:
    return {} if row.extra is None else dict(json.loads(row.extra))


# --- cleanup -------------------------------------------------------------------------


def remove_expired_retired(cursor: Any, now: float) -> int:
    """Delete retired records whose keep period ended, with their attempt history."""
    cursor.execute("SELECT id FROM queue_retired WHERE keep_until < ?", (now,))
    ids = [int(r[0]) for r in cursor.fetchall()]
    for msg_id in ids:
        cursor.execute("DELETE FROM queue_attempt WHERE msg_id = ?", (msg_id,))
        cursor.execute("DELETE FROM queue_retired WHERE id = ?", (msg_id,))
    return len(ids)


def releasable_blobs(cursor: Any, limit: int = 1000) -> list[str]:
    """Message files listed in blob_gc that no queued message uses (account messages
    never share a queue message's file: delivery writes its own)."""
    cursor.execute(
        "SELECT blob FROM blob_gc g WHERE NOT EXISTS (SELECT 1 FROM queue_msg q WHERE q.blob = g.blob)"
        " ORDER BY created LIMIT ?",
        (limit,),
    )
    return [r[0] for r in cursor.fetchall()]


def forget_blobs(cursor: Any, keys: Sequence[str]) -> None:
    cursor.executemany("DELETE FROM blob_gc WHERE blob = ?", [(k,) for k in keys])
