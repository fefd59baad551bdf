"""The webhook queue (cursor functions): admission, claims, results, retirement, admin.

An ``event`` row is the durable webhook record (schema 0005).  The queue writes events in
the same transaction as the state changes they describe; :func:`admit_events` turns them,
in ID order, into queued webhooks (or deletes those the account does not want), and makes
a new outgoing webhook supersede the queued, not-in-flight webhooks of the same queue
message (spec §3.4).  Incoming-message webhooks are inserted already queued by
:func:`insert_incoming`, in the transaction that stores the message.

Claims are leases, as for queue messages (several daemons may share one database):
:func:`claim_due` commits at once, increments the attempt counter, pushes ``next_attempt``
past the attempt and records a per-attempt token and an in-progress attempt row;
:func:`finish_attempt` writes the result only while the webhook still carries that token
(:class:`StaleHookLease` otherwise).  A webhook whose daemon died is due again when its
lease passes.  A message's webhooks never overtake each other: a webhook is not claimed
while an older queued webhook of the same queue message exists (that one is in flight;
when its attempt fails it is superseded by the newest).

Like the other store modules these functions may be re-run after a retryable error, so
they have no side effects outside the database.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import attrs

from ..config import WebhookConfig

__all__ = [
    "CANCELED_ERROR",
    "INCOMING",
    "MAX_ATTEMPTS",
    "ClaimResult",
    "Claimed",
    "Hook",
    "HookAttempt",
    "HookFilter",
    "HookFinish",
    "HookRetiredFilter",
    "HookRow",
    "HookSort",
    "IncomingHook",
    "RetiredHook",
    "StaleHookLease",
    "Target",
    "admit_events",
    "cancel_hooks",
    "claim_due",
    "finish_attempt",
    "get_hook",
    "get_retired_hook",
    "hook_attempts",
    "hook_queue_size",
    "hooks_query",
    "insert_incoming",
    "insert_test_hook",
    "list_hooks",
    "list_retired_hooks",
    "remove_expired_retired_hooks",
    "reschedule_hooks",
    "retired_hooks_query",
]

#: Kind of an incoming-message webhook (outgoing ones have the event name as kind).
INCOMING = "incoming"
#: mox §3.3: at most 12 attempts.
MAX_ATTEMPTS = 12
#: mox's text of the result added when an admin cancels a webhook.
CANCELED_ERROR = "canceled by admin"
SUPERSEDED_SUFFIX = " (superseded)"
#: Bytes of the response body kept per attempt.
RESPONSE_KEEP = 512


class StaleHookLease(Exception):
    """The webhook no longer carries the attempt's token: its lease ran out and another
    attempt took over, or it left the queue (superseded, canceled).  Not recorded."""

    def __init__(self, hook_id: int, token: str) -> None:
        super().__init__(f"webhook {hook_id}: attempt {token} is no longer current")
        self.hook_id = hook_id
        self.token = token


# --- records -------------------------------------------------------------------------

_COLUMNS = (
    "id, account, kind, queue_msg_id, from_id, message_id, subject, extra, smtp_code,"
    " smtp_enhanced_code, error, suppressing, dsn, created, admitted, url, auth_header, payload,"
    " webhook_id, attempts, next_attempt, lease_token"
)


@attrs.frozen
class HookRow:
    """An ``event`` row: an event not yet admitted, or a queued webhook (mox's Hook)."""

    id: int
    account: str
    #: The outgoing event name, or :data:`INCOMING`.
    kind: str
    queue_msg_id: int
    from_id: str
    message_id: str
    subject: str
    #: JSON object text, or None (DSN events without Extra).
    extra: str | None
    smtp_code: int
    smtp_enhanced_code: str
    error: str
    suppressing: bool
    dsn: bool
    #: When the event happened / the webhook was queued (mox's Submitted, WebhookQueued).
    created: float
    admitted: bool
    url: str
    auth_header: str
    payload: str
    webhook_id: str
    attempts: int
    next_attempt: float
    lease_token: str | None

    @property
    def is_incoming(self) -> bool:
        return self.kind == INCOMING

    @property
    def event(self) -> str:
        """mox's OutgoingEvent ("" for incoming webhooks)."""
        return "" if self.is_incoming else self.kind


def _hook_row(r: Sequence[Any]) -> HookRow:
    return HookRow(
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
        admitted=bool(r[14]),
        url=r[15],
        auth_header=r[16],
        payload=r[17],
        webhook_id=r[18],
        attempts=int(r[19]),
        next_attempt=float(r[20]),
        lease_token=r[21],
    )


@attrs.frozen
class HookAttempt:
    """One attempt (mox's HookResult, plus the attempt number and token)."""

    attempt: int
    token: str
    url: str
    start: float
    duration: float | None  # None: in progress
    success: bool
    code: int
    error: str
    #: The first :data:`RESPONSE_KEEP` bytes of the response body.
    response: bytes


@attrs.frozen
class Hook:
    """A queued webhook with its attempts (admin listing)."""

    row: HookRow
    attempts: list[HookAttempt]


@attrs.frozen
class RetiredHook:
    """mox's HookRetired, with its attempts."""

    id: int
    account: str
    kind: str
    queue_msg_id: int
    from_id: str
    message_id: str
    subject: str
    extra: str | None
    url: str
    authorization: bool
    payload: str
    submitted: float
    superseded_by_id: int
    attempts: int
    success: bool
    last_activity: float
    keep_until: float
    results: list[HookAttempt]

    @property
    def is_incoming(self) -> bool:
        return self.kind == INCOMING

    @property
    def event(self) -> str:
        return "" if self.is_incoming else self.kind


@attrs.frozen(order=True)
class Target:
    """Where webhooks go: requests in flight are limited per target."""

    account: str
    url: str
    incoming: bool


@attrs.frozen
class Claimed:
    row: HookRow
    token: str
    start: float
    #: The wait before the next attempt should this one fail (0 for the last attempt).
    backoff: float

    @property
    def final(self) -> bool:
        return self.row.attempts >= MAX_ATTEMPTS


@attrs.frozen
class ClaimResult:
    claimed: list[Claimed]
    #: The earliest ``next_attempt`` after ``now`` among queued webhooks (None: none).
    next_due: float | None
    #: Whether a superseded webhook was retired, which may make a newer one claimable:
    #: the caller should pass again at once.
    more: bool
    #: Whether due webhooks were left because targets had no free slots (a finishing
    #: request frees one and kicks).
    limited: bool
    #: Queued webhooks after the claim.
    queued: int
    #: Events admitted as webhooks / deleted (no webhook wanted) in this transaction.
    admitted: int = 0
    dropped: int = 0


# --- incoming ---------------------------------------------------------------------


@attrs.frozen
class IncomingHook:
    """What :func:`moxtw.store.messages.deliver` needs to queue an incoming webhook in the
    transaction that stores the message.  ``payload(msg_id)`` returns the JSON body for
    the stored message's ID; it must be pure (the transaction may be re-run)."""

    url: str
    authorization: str
    payload: Callable[[int], str]
    webhook_id: str
    from_id: str = ""


def insert_incoming(
    cursor: Any,
    *,
    account: str,
    url: str,
    authorization: str,
    payload: str,
    webhook_id: str,
    created: float,
    from_id: str = "",
    message_id: str = "",
    subject: str = "",
) -> int:
    """Queue an incoming-message webhook (QueueMsgID 0: never superseded); its ID."""
    cursor.execute(
        "INSERT INTO event (account, kind, queue_msg_id, from_id, message_id, subject, extra, created,"
        " admitted, url, auth_header, payload, webhook_id, attempts, next_attempt)"
        " VALUES (?, ?, 0, ?, ?, ?, NULL, ?, 1, ?, ?, ?, ?, 0, ?)",
        (account, INCOMING, from_id, message_id, subject, created, url, authorization, payload, webhook_id, created),
    )
    return int(cursor.lastrowid)


def insert_test_hook(
    cursor: Any,
    *,
    account: str,
    kind: str,
    url: str,
    authorization: str,
    webhook_id: str,
    created: float,
    compose: Callable[[HookRow], str],
    subject: str = "",
    error: str = "",
) -> int:
    """Queue an outgoing webhook that no message caused (the account page's "Send test
    webhook"): already admitted, so the account's event filter does not apply; QueueMsgID
    0, so it supersedes nothing and is never superseded.  ``compose(row)`` gives the
    payload.  Its ID."""
    cursor.execute(
        "INSERT INTO event (account, kind, queue_msg_id, subject, error, created, admitted, url, auth_header,"
        " payload, webhook_id, attempts, next_attempt) VALUES (?, ?, 0, ?, ?, ?, 1, ?, ?, '', ?, 0, ?)",
        (account, kind, subject, error, created, url, authorization, webhook_id, created),
    )
    hook_id = int(cursor.lastrowid)
    row = get_hook_row(cursor, hook_id)
    assert row is not None
    cursor.execute("UPDATE event SET payload = ? WHERE id = ?", (compose(row), hook_id))
    return hook_id


# --- retirement -----------------------------------------------------------------------


def _retire(
    cursor: Any, row: HookRow, *, success: bool, last_activity: float, keep: float, superseded_by: int = 0
) -> None:
    """Remove ``row`` from the queue, keeping a retired record for ``keep`` seconds."""
    if keep > 0:
        cursor.execute(
            "INSERT INTO hook_retired (id, account, kind, queue_msg_id, from_id, message_id, subject, extra,"
            " url, authorization_set, payload, submitted, superseded_by_id, attempts, success, last_activity,"
            " keep_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.id,
                row.account,
                row.kind,
                row.queue_msg_id,
                row.from_id,
                row.message_id,
                row.subject,
                row.extra,
                row.url,
                int(bool(row.auth_header)),
                row.payload,
                row.created,
                superseded_by,
                row.attempts,
                int(success),
                last_activity,
                last_activity + keep,
            ),
        )
    else:
        cursor.execute("DELETE FROM hook_attempt WHERE hook_id = ?", (row.id,))
    cursor.execute("DELETE FROM event WHERE id = ?", (row.id,))


def _newest_after(cursor: Any, row: HookRow) -> int:
    """The ID of the newest queued webhook of ``row``'s queue message after it (0: none)."""
    if not row.queue_msg_id:
        return 0
    cursor.execute(
        "SELECT max(id) FROM event WHERE admitted = 1 AND queue_msg_id = ? AND id > ?",
        (row.queue_msg_id, row.id),
    )
    (newest,) = cursor.fetchone()
    return int(newest or 0)


# --- admission ------------------------------------------------------------------------


def admit_events(
    cursor: Any,
    now: float,
    *,
    outgoing: Callable[[str], WebhookConfig | None],
    compose: Callable[[HookRow], str],
    keep: Callable[[str], float],
    new_webhook_id: Callable[[], str],
    limit: int = 500,
) -> tuple[int, int, bool]:
    """Turn new events into queued webhooks, in ID order; (admitted, dropped, more left).

    ``outgoing(account)`` is the account's outgoing webhook configuration (None: none):
    without one, or when its event filter excludes the event, the row is deleted (mox
    creates no webhook).  Otherwise URL and Authorization are copied into the row (later
    configuration changes do not affect it), ``compose(row)`` gives the payload, and
    older queued webhooks of the same queue message that are not in flight are retired
    as superseded by the new one (spec §3.4).
    """
    cursor.execute(f"SELECT {_COLUMNS} FROM event WHERE admitted = 0 ORDER BY id LIMIT ?", (limit,))
    rows = [_hook_row(r) for r in cursor.fetchall()]
    admitted = dropped = 0
    for row in rows:
        config = outgoing(row.account)
        if (
            row.is_incoming
            or config is None
            or not config.url
            or (config.events and row.kind not in config.events)
        ):
            cursor.execute("DELETE FROM event WHERE id = ?", (row.id,))
            dropped += 1
            continue
        row = attrs.evolve(
            row,
            admitted=True,
            url=config.url,
            auth_header=config.authorization,
            webhook_id=new_webhook_id(),
            attempts=0,
            next_attempt=now,
            lease_token=None,
        )
        row = attrs.evolve(row, payload=compose(row))
        cursor.execute(
            "UPDATE event SET admitted = 1, url = ?, auth_header = ?, payload = ?, webhook_id = ?, attempts = 0,"
            " next_attempt = ?, lease_token = NULL WHERE id = ?",
            (row.url, row.auth_header, row.payload, row.webhook_id, now, row.id),
        )
        admitted += 1
        if row.queue_msg_id:
            cursor.execute(
                f"SELECT {_COLUMNS} FROM event WHERE admitted = 1 AND queue_msg_id = ? AND id < ?"
                " AND (lease_token IS NULL OR next_attempt <= ?) ORDER BY id",
                (row.queue_msg_id, row.id, now),
            )
            for old in [_hook_row(r) for r in cursor.fetchall()]:
                _retire(cursor, old, success=False, last_activity=now, keep=keep(old.account), superseded_by=row.id)
    return admitted, dropped, len(rows) == limit


# --- claiming -------------------------------------------------------------------------


def _targets(cursor: Any, now: float) -> list[Target]:
    cursor.execute(
        "SELECT DISTINCT account, url, CASE WHEN kind = 'incoming' THEN 1 ELSE 0 END FROM event"
        " WHERE admitted = 1 AND next_attempt <= ?",
        (now,),
    )
    return sorted(Target(r[0], r[1], bool(r[2])) for r in cursor.fetchall())


def _due_for(cursor: Any, target: Target, now: float, limit: int) -> list[HookRow]:
    kind = "e.kind = 'incoming'" if target.incoming else "e.kind != 'incoming'"
    cols = ", ".join(f"e.{c.strip()}" for c in _COLUMNS.split(","))
    cursor.execute(
        f"SELECT {cols} FROM event e WHERE e.admitted = 1 AND e.account = ? AND e.url = ? AND {kind}"
        " AND e.next_attempt <= ? AND (e.queue_msg_id = 0 OR NOT EXISTS (SELECT 1 FROM event p"
        " WHERE p.queue_msg_id = e.queue_msg_id AND p.admitted = 1 AND p.id < e.id))"
        " ORDER BY e.next_attempt, e.id LIMIT ?",
        (target.account, target.url, now, limit),
    )
    return [_hook_row(r) for r in cursor.fetchall()]


def claim_due(
    cursor: Any,
    now: float,
    *,
    slots: Callable[[Target], int],
    exclude: Collection[int],
    backoff: Callable[[int], float],
    lease_minimum: float,
    new_token: Callable[[], str],
    keep: Callable[[str], float],
) -> ClaimResult:
    """Claim due webhooks, at most ``slots(target)`` per target, oldest due first.

    ``exclude`` are IDs this daemon is still sending; ``backoff(n)`` is the wait after
    the (n+1)th attempt fails; a claim's lease lasts at least ``lease_minimum``.  A due
    webhook with a newer queued webhook for the same message (its lease ran out while
    it was in flight when the newer one came) is retired as superseded instead.
    """
    claimed: list[Claimed] = []
    again = limited = False
    for target in _targets(cursor, now):
        n = slots(target)
        if n <= 0:
            limited = True
            continue
        rows = [r for r in _due_for(cursor, target, now, n + len(exclude) + 1) if r.id not in exclude]
        if len(rows) > n:
            limited = True
        for row in rows[:n]:
            newer = _newest_after(cursor, row)
            if newer:
                _retire(cursor, row, success=False, last_activity=now, keep=keep(row.account), superseded_by=newer)
                again = True
                continue
            claimed.append(_claim(cursor, row, now, new_token(), backoff, lease_minimum))
    cursor.execute("SELECT min(next_attempt) FROM event WHERE admitted = 1 AND next_attempt > ?", (now,))
    (next_due,) = cursor.fetchone()
    return ClaimResult(
        claimed, None if next_due is None else float(next_due), again, limited, hook_queue_size(cursor)
    )


def _claim(
    cursor: Any, row: HookRow, now: float, token: str, backoff: Callable[[int], float], lease_minimum: float
) -> Claimed:
    attempts = row.attempts + 1
    wait = backoff(row.attempts) if attempts < MAX_ATTEMPTS else 0.0
    lease_until = now + max(wait, lease_minimum)
    cursor.execute(
        "UPDATE event SET attempts = ?, next_attempt = ?, lease_token = ? WHERE id = ?",
        (attempts, lease_until, token, row.id),
    )
    cursor.execute(
        "INSERT INTO hook_attempt (hook_id, attempt, token, url, start) VALUES (?, ?, ?, ?, ?)",
        (row.id, attempts, token, row.url, now),
    )
    updated = attrs.evolve(row, attempts=attempts, next_attempt=lease_until, lease_token=token)
    return Claimed(updated, token, now, wait)


# --- results --------------------------------------------------------------------------


@attrs.frozen
class HookFinish:
    """What :func:`finish_attempt` writes for one attempt."""

    hook_id: int
    token: str
    start: float
    duration: float
    now: float
    success: bool
    code: int = 0
    error: str = ""
    response: bytes = b""
    #: When to try again after a failure (ignored after the last attempt).
    next_attempt: float = 0.0
    #: Keep period of the account's retired webhooks (seconds; 0: not kept).
    keep: float = 0.0


@attrs.frozen
class FinishResult:
    #: Whether the webhook left the queue (success, last attempt, superseded).
    retired: bool
    #: The newer webhook that superseded this one after a failed attempt (0: none).
    superseded_by: int = 0


def finish_attempt(cursor: Any, f: HookFinish) -> FinishResult:
    """Record the attempt's result and retire or reschedule the webhook, atomically.

    Success (or a failure of the last attempt) retires the webhook.  After a failed
    attempt, a newer queued webhook for the same queue message supersedes this one (the
    attempt's error then ends in " (superseded)", as mox records it).  Raises
    :class:`StaleHookLease` when the webhook no longer carries ``f.token``.
    """
    row = get_hook_row(cursor, f.hook_id)
    if row is None or row.lease_token != f.token:
        raise StaleHookLease(f.hook_id, f.token)
    newer = 0 if f.success else _newest_after(cursor, row)
    error = f.error + SUPERSEDED_SUFFIX if newer else f.error
    cursor.execute(
        "UPDATE hook_attempt SET duration = ?, success = ?, code = ?, error = ?, response = ?"
        " WHERE hook_id = ? AND token = ?",
        (f.duration, int(f.success), f.code, error, f.response[:RESPONSE_KEEP], f.hook_id, f.token),
    )
    if f.success or row.attempts >= MAX_ATTEMPTS:
        _retire(cursor, row, success=f.success, last_activity=f.start, keep=f.keep)
        return FinishResult(True)
    if newer:
        _retire(cursor, row, success=False, last_activity=f.now, keep=f.keep, superseded_by=newer)
        return FinishResult(True, newer)
    cursor.execute(
        "UPDATE event SET next_attempt = ?, lease_token = NULL WHERE id = ?", (f.next_attempt, f.hook_id)
    )
    return FinishResult(False)


# --- reading --------------------------------------------------------------------------


def get_hook_row(cursor: Any, hook_id: int) -> HookRow | None:
    cursor.execute(f"SELECT {_COLUMNS} FROM event WHERE id = ? AND admitted = 1", (hook_id,))
    r = cursor.fetchone()
    return None if r is None else _hook_row(r)


def hook_attempts(cursor: Any, hook_id: int) -> list[HookAttempt]:
    """The attempts of a queued or retired webhook, oldest first."""
    cursor.execute(
        "SELECT attempt, token, url, start, duration, success, code, error, response FROM hook_attempt"
        " WHERE hook_id = ? ORDER BY id",
        (hook_id,),
    )
    return [
        HookAttempt(
            attempt=int(r[0]),
            token=r[1],
            url=r[2],
            start=float(r[3]),
            duration=None if r[4] is None else float(r[4]),
            success=bool(r[5]),
            code=int(r[6]),
            error=r[7],
            response=bytes(r[8]) if not isinstance(r[8], str) else r[8].encode("utf-8"),
        )
        for r in cursor.fetchall()
    ]


def get_hook(cursor: Any, hook_id: int) -> Hook | None:
    row = get_hook_row(cursor, hook_id)
    return None if row is None else Hook(row, hook_attempts(cursor, hook_id))


def hook_queue_size(cursor: Any) -> int:
    """Number of queued webhooks (mox's HookQueueSize)."""
    cursor.execute("SELECT count(*) FROM event WHERE admitted = 1")
    (n,) = cursor.fetchone()
    return int(n)


_RETIRED_COLUMNS = (
    "id, account, kind, queue_msg_id, from_id, message_id, subject, extra, url, authorization_set,"
    " payload, submitted, superseded_by_id, attempts, success, last_activity, keep_until"
)


def _retired(cursor: Any, r: Sequence[Any]) -> RetiredHook:
    return RetiredHook(
        id=int(r[0]),
        account=r[1],
        kind=r[2],
        queue_msg_id=int(r[3]),
        from_id=r[4],
        message_id=r[5],
        subject=r[6],
        extra=r[7],
        url=r[8],
        authorization=bool(r[9]),
        payload=r[10],
        submitted=float(r[11]),
        superseded_by_id=int(r[12]),
        attempts=int(r[13]),
        success=bool(r[14]),
        last_activity=float(r[15]),
        keep_until=float(r[16]),
        results=hook_attempts(cursor, int(r[0])),
    )


def get_retired_hook(cursor: Any, hook_id: int) -> RetiredHook | None:
    cursor.execute(f"SELECT {_RETIRED_COLUMNS} FROM hook_retired WHERE id = ?", (hook_id,))
    r = cursor.fetchone()
    return None if r is None else _retired(cursor, r)


# --- admin: filters, listing, rescheduling, canceling ---------------------------------

@attrs.frozen
class HookFilter:
    """mox's HookFilter (spec §4.6); empty criteria match everything, all criteria apply."""

    max: int = 0
    ids: tuple[int, ...] = ()
    account: str = ""
    #: (op, time): ``("<", t)`` submitted before t.
    submitted: tuple[str, float] | None = None
    next_attempt: tuple[str, float] | None = None
    #: An outgoing event name or "incoming".
    event: str = ""


@attrs.frozen
class HookRetiredFilter:
    max: int = 0
    ids: tuple[int, ...] = ()
    account: str = ""
    submitted: tuple[str, float] | None = None
    last_activity: tuple[str, float] | None = None
    event: str = ""
    success: bool | None = None


@attrs.frozen
class HookSort:
    """Sort field ("" or "next_attempt"/"last_activity" (the default), "submitted"),
    descending unless ``asc``; ties by ID.  Pagination: ``last_id`` > 0 with ``last``
    the previous page's last sort value gives the rows strictly after it (times
    compared to the microsecond, the precision of the admin API's listings)."""

    field: str = ""
    asc: bool = False
    last_id: int = 0
    last: float | None = None


def _us(column: str) -> str:
    """``column`` (a time) in whole microseconds: how listings order and compare times.
    Schema 0008's paging indexes hold exactly these expressions."""
    return f"CAST(round({column} * 1000000) AS BIGINT)"


def _where(
    f: HookFilter | HookRetiredFilter,
    submitted_column: str,
    time_column: str,
    time_filter: tuple[str, float] | None,
    sort_column: str,
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if f.ids:
        where.append(f"id IN ({', '.join('?' for _ in f.ids)})")
        args += list(f.ids)
    if f.account:
        where.append("account = ?")
        args.append(f.account)
    if f.event:
        where.append("kind = ?")
        args.append(f.event)
    for column, tf in ((submitted_column, f.submitted), (time_column, time_filter)):
        if tf is not None:
            where.append(f"{column} {tf[0]} ?")
            args.append(tf[1])
            if column == sort_column:
                # The same bound in microseconds, implied by the condition (both sides
                # rounded alike, and rounding is monotonic), so the sort index can seek
                # to it instead of scanning the rows the condition excludes.
                where.append(f"{_us(column)} {tf[0]}= {_us('?')}")
                args.append(tf[1])
    return where, args


def _sort_column(sort: HookSort, default: str, columns: dict[str, str]) -> str:
    column = columns.get(sort.field or default)
    if column is None:
        raise ValueError(f"unknown sort field {sort.field!r}")
    return column


def _order(sort: HookSort, column: str) -> tuple[str, list[str], list[Any]]:
    """ORDER BY, and the keyset condition of a page after (``sort.last``, ``sort.last_id``).

    Ordered and compared in whole microseconds: the admin API lists times with
    microsecond precision, and a previous page's last value comes back in that form.
    "After (t, i)" is written ``us <= t AND (us < t OR id < i)`` (descending), not
    ``us < t OR (us = t AND id < i)``: its first term is a range the index can seek to.
    """
    direction = "ASC" if sort.asc else "DESC"
    us = _us(column)
    where: list[str] = []
    args: list[Any] = []
    if sort.last_id > 0 and sort.last is not None:
        op = ">" if sort.asc else "<"
        last_us = round(sort.last * 1_000_000)
        where.append(f"{us} {op}= ? AND ({us} {op} ? OR id {op} ?)")
        args += [last_us, last_us, sort.last_id]
    return f" ORDER BY {us} {direction}, id {direction}", where, args


def hooks_query(f: HookFilter, sort: HookSort) -> tuple[str, list[Any]]:
    """The SELECT of queued webhooks matching ``f`` in ``sort``'s order (one page)."""
    column = _sort_column(sort, "next_attempt", {"next_attempt": "next_attempt", "submitted": "created"})
    where, args = _where(f, "created", "next_attempt", f.next_attempt, column)
    where.insert(0, "admitted = 1")
    order, more_where, more_args = _order(sort, column)
    # A list of IDs is a handful of rowid lookups (then sorted): keep the planner from
    # walking a sort index instead.
    table = "event NOT INDEXED" if f.ids else "event"
    sql = f"SELECT {_COLUMNS} FROM {table} WHERE {' AND '.join(where + more_where)}{order}"
    if f.max > 0:
        sql += f" LIMIT {int(f.max)}"
    return sql, args + more_args


def retired_hooks_query(f: HookRetiredFilter, sort: HookSort) -> tuple[str, list[Any]]:
    """The SELECT of retired webhooks matching ``f`` in ``sort``'s order (one page)."""
    column = _sort_column(sort, "last_activity", {"last_activity": "last_activity", "submitted": "submitted"})
    where, args = _where(f, "submitted", "last_activity", f.last_activity, column)
    if f.success is not None:
        where.append("success = ?")
        args.append(int(f.success))
    order, more_where, more_args = _order(sort, column)
    where += more_where
    table = "hook_retired NOT INDEXED" if f.ids else "hook_retired"
    sql = f"SELECT {_RETIRED_COLUMNS} FROM {table}"
    if where:
        sql += f" WHERE {' AND '.join(where)}"
    sql += order
    if f.max > 0:
        sql += f" LIMIT {int(f.max)}"
    return sql, args + more_args


def _select_hooks(cursor: Any, f: HookFilter, sort: HookSort | None = None) -> list[HookRow]:
    cursor.execute(*hooks_query(f, sort or HookSort()))
    return [_hook_row(r) for r in cursor.fetchall()]


def list_hooks(cursor: Any, f: HookFilter = HookFilter(), sort: HookSort = HookSort()) -> list[Hook]:
    """Queued webhooks with their attempts (mox's HookList)."""
    return [Hook(row, hook_attempts(cursor, row.id)) for row in _select_hooks(cursor, f, sort)]


def list_retired_hooks(
    cursor: Any, f: HookRetiredFilter = HookRetiredFilter(), sort: HookSort = HookSort()
) -> list[RetiredHook]:
    """Retired webhooks with their attempts (mox's HookRetiredList)."""
    cursor.execute(*retired_hooks_query(f, sort))
    return [_retired(cursor, r) for r in cursor.fetchall()]


def reschedule_hooks(cursor: Any, f: HookFilter, now: float, minutes: float, *, relative: bool) -> int:
    """mox's HookNextAttemptSet (``now + minutes``) or, with ``relative``,
    HookNextAttemptAdd (``next_attempt + minutes``); the number changed.  Webhooks in
    flight (lease running) are left alone: their attempt's result decides."""
    n = 0
    for row in _select_hooks(cursor, f):
        if row.lease_token is not None and row.next_attempt > now:
            continue
        when = (row.next_attempt if relative else now) + minutes * 60
        cursor.execute("UPDATE event SET next_attempt = ? WHERE id = ?", (when, row.id))
        n += 1
    return n


def cancel_hooks(cursor: Any, f: HookFilter, now: float, keep: Callable[[str], float]) -> int:
    """mox's HookCancel: retire matching webhooks unsuccessfully, with a result "canceled
    by admin".  An attempt in flight loses its lease (its result is then ignored)."""
    rows = _select_hooks(cursor, f)
    for row in rows:
        cursor.execute(
            "INSERT INTO hook_attempt (hook_id, attempt, token, url, start, duration, error)"
            " VALUES (?, ?, '', ?, ?, 0, ?)",
            (row.id, row.attempts, row.url, now, CANCELED_ERROR),
        )
        _retire(cursor, row, success=False, last_activity=now, keep=keep(row.account))
    return len(rows)


def remove_expired_retired_hooks(cursor: Any, now: float) -> int:
    """Delete retired webhooks whose keep period ended, with their attempts."""
    cursor.execute("SELECT id FROM hook_retired WHERE keep_until < ?", (now,))
    ids = [int(r[0]) for r in cursor.fetchall()]
    for hook_id in ids:
        cursor.execute("DELETE FROM hook_attempt WHERE hook_id = ?", (hook_id,))
        cursor.execute("DELETE FROM hook_retired WHERE id = ?", (hook_id,))
    return len(ids)
