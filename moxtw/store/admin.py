"""Queue administration on the store (cursor functions): filters, listing, operations,
hold rules.

Everything here runs in a transaction handed over by :class:`~moxtw.store.Database`, in
whichever process serves the admin request (the daemon or a webapi worker): nothing
depends on the :class:`~moxtw.queue.QueueService` object.  Selection is done in SQL.
Operations that take messages out of the queue (Fail, Drop) write their event and
retirement in the same transaction (see :mod:`moxtw.store.outbox`).

Filters follow mox's ``queue.Filter`` (spec §4.6): only the criteria given apply, all
of them must match (moxtw's fix 17; mox matches either of From and To when both are set).
Times are UNIX seconds; listings compare and order them in whole microseconds, the
precision of the RFC 3339 times the API writes, so a page's last item can be handed back
as ``Last`` to continue exactly after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from .outbox import (
    _MSG_COLUMNS,
    _RETIRED_COLUMNS,
    AttemptRow,
    QueueRow,
    RetiredRow,
    _queue_row,
    _retired_row,
    drop_messages,
    hold_matching,
)


class FilterError(ValueError):
    """A filter, sort or operation argument is invalid (a user error); ``str()`` says why."""


# --- Go durations and time conditions --------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_go_duration(text: str) -> float:
    """Seconds of a Go ``time.ParseDuration`` string: ``1h30m``, ``-1.5h``, ``300ms``, ``0``."""
    s = text
    sign = 1.0
    if s[:1] in ("-", "+"):
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise FilterError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if m is None:
            raise FilterError(f"invalid duration {text!r} (use e.g. 30m, 1h, -2h30m)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


@attrs.frozen
class TimeCondition:
    """``field < now + offset`` (``op`` "<") or ``field > now + offset`` (">")."""

    op: str
    offset: float

    def threshold(self, now: float) -> float:
        return now + self.offset


def parse_time_condition(text: str, what: str = "time") -> TimeCondition | None:
    """mox's filter syntax: ``<`` or ``>`` then ``now`` or a Go duration, e.g. ``<now``,
    ``>-1h`` (queued within the last hour), ``<10m``.  "" means no condition."""
    text = text.strip()
    if not text:
        return None
    op, rest = text[0], text[1:].strip()
    if op not in "<>":
        raise FilterError(f"{what} filter {text!r} must start with < or > (e.g. <now, >-1h)")
    if rest == "now":
        return TimeCondition(op, 0.0)
    try:
        return TimeCondition(op, parse_go_duration(rest))
    except FilterError:
        raise FilterError(f"{what} filter {text!r}: expected now or a duration such as 10m, -1h") from None


# --- filters and sorting -----------------------------------------------------------------


@attrs.frozen
class Filter:
    """Which queued messages an operation applies to; empty criteria apply to all.

    ``sender``/``recipient`` are substrings of ``localpart@domain`` (Unicode domain) of the
    MAIL FROM and the recipient.  ``max`` (0: no limit) limits how many.
    """

    ids: tuple[int, ...] = ()
    account: str = ""
    sender: str = ""
    recipient: str = ""
    hold: bool | None = None
    submitted: TimeCondition | None = None
    next_attempt: TimeCondition | None = None
    transport: str | None = None
    max: int = 0


@attrs.frozen
class RetiredFilter:
    """Like :class:`Filter` for retired messages, with ``last_activity`` (the retire time)
    and ``success`` (delivered or not) instead of next attempt and hold."""

    ids: tuple[int, ...] = ()
    account: str = ""
    sender: str = ""
    recipient: str = ""
    submitted: TimeCondition | None = None
    last_activity: TimeCondition | None = None
    transport: str | None = None
    success: bool | None = None
    max: int = 0


@attrs.frozen
class Sort:
    """Order of a listing: ``field`` descending unless ``asc``, ties by ID the same way.

    Pagination: with ``last_id`` > 0, only items after the one with that ID, whose
    ``field`` value was ``last_us`` (microseconds since the epoch), are listed.
    """

    field: str = "next_attempt"
    asc: bool = False
    last_id: int = 0
    last_us: int | None = None


QUEUE_SORT_FIELDS = ("next_attempt", "queued")
RETIRED_SORT_FIELDS = ("last_activity", "queued")


def _us(column: str) -> str:
    """``column`` (a time) in whole microseconds: how listings order and compare times.
    Schema 0007's paging indexes hold exactly these expressions."""
    return f"CAST(round({column} * 1000000) AS BIGINT)"


def _common(
    ids: Sequence[int],
    account: str,
    sender: str,
    recipient: str,
    transport: str | None,
    recipient_column: str,
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    args: list[Any] = []
    if ids:
        where.append(f"id IN ({', '.join('?' * len(ids))})")
        args += list(ids)
    if account:
        where.append("account = ?")
        args.append(account)
    if sender:
        where.append("instr(sender_localpart || '@' || sender_domain, ?) > 0")
        args.append(sender)
    if recipient:
        where.append(f"instr({recipient_column}, ?) > 0")
        args.append(recipient)
    if transport is not None:
        where.append("transport = ?")
        args.append(transport)
    return where, args


def _time(
    where: list[str], args: list[Any], column: str, cond: TimeCondition | None, now: float, sort_column: str
) -> None:
    if cond is not None:
        threshold = cond.threshold(now)
        where.append(f"{column} {cond.op} ?")
        args.append(threshold)
        if column == sort_column:
            # The same bound in microseconds, implied by the condition (both sides are
            # rounded alike, and rounding is monotonic), so the sort index can seek to it
            # instead of walking past the rows the condition excludes.
            where.append(f"{_us(column)} {cond.op}= {_us('?')}")
            args.append(threshold)


def _max(value: int) -> int:
    if value < 0:
        raise FilterError(f"max must be 0 (no limit) or more, got {value}")
    return value


def _queue_where(f: Filter, now: float, sort_column: str = "") -> tuple[list[str], list[Any]]:
    where, args = _common(
        f.ids, f.account, f.sender, f.recipient, f.transport, "recipient_localpart || '@' || recipient_domain"
    )
    if f.hold is not None:
        where.append("hold = ?")
        args.append(int(f.hold))
    _time(where, args, "queued", f.submitted, now, sort_column)
    _time(where, args, "next_attempt", f.next_attempt, now, sort_column)
    return where, args


def _retired_where(f: RetiredFilter, now: float, sort_column: str = "") -> tuple[list[str], list[Any]]:
    where, args = _common(f.ids, f.account, f.sender, f.recipient, f.transport, "recipient_address")
    if f.success is not None:
        where.append("success = ?")
        args.append(int(f.success))
    _time(where, args, "queued", f.submitted, now, sort_column)
    _time(where, args, "last_activity", f.last_activity, now, sort_column)
    return where, args


def _sort_field(sort: Sort, fields: Sequence[str]) -> str:
    if sort.field not in fields:
        raise FilterError(f"cannot sort on {sort.field!r}")
    return sort.field


def _order(where: list[str], args: list[Any], sort: Sort) -> str:
    """ORDER BY, after adding the keyset condition of a page after (``sort.last_us``,
    ``sort.last_id``) to ``where``.

    "After (t, id)" is written ``us <= t AND (us < t OR id < id)`` (descending), not
    ``us < t OR (us = t AND ...)``: the first term is a range the paging index (schema
    0007) can seek to, so a page reads about a page of rows wherever it is.
    """
    key = _us(sort.field)
    direction, cmp = ("ASC", ">") if sort.asc else ("DESC", "<")
    if sort.last_id > 0:
        if sort.last_us is None:
            raise FilterError("pagination needs the last item's time (Last) with its ID (LastID)")
        where.append(f"{key} {cmp}= ? AND ({key} {cmp} ? OR id {cmp} ?)")
        args += [sort.last_us, sort.last_us, sort.last_id]
    return f" ORDER BY {key} {direction}, id {direction}"


def _sql(select: str, where: list[str], order: str, limit: int) -> str:
    sql = select
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += order
    if limit:
        sql += f" LIMIT {int(limit)}"
    return sql


# --- reading ---------------------------------------------------------------------------


@attrs.frozen
class QueueItem:
    row: QueueRow
    attempts: list[AttemptRow]


@attrs.frozen
class RetiredItem:
    row: RetiredRow
    attempts: list[AttemptRow]


def attempt_histories(cursor: Any, ids: Sequence[int]) -> dict[int, list[AttemptRow]]:
    """The attempts of several queued or retired messages, oldest first, by message ID."""
    out: dict[int, list[AttemptRow]] = {i: [] for i in ids}
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        cursor.execute(
            "SELECT msg_id, attempt, token, start, duration, success, code, secode, error, remote_host,"
            f" remote_ip, tls, timeout_after_body FROM queue_attempt WHERE msg_id IN ({', '.join('?' * len(chunk))})"
            " ORDER BY id",
            chunk,
        )
        for r in cursor.fetchall():
            out[int(r[0])].append(
                AttemptRow(
                    attempt=int(r[1]),
                    token=r[2],
                    start=float(r[3]),
                    duration=None if r[4] is None else float(r[4]),
                    success=bool(r[5]),
                    code=int(r[6]),
                    secode=r[7],
                    error=r[8],
                    remote_host=r[9],
                    remote_ip=r[10],
                    tls=bool(r[11]),
                    timeout_after_body=bool(r[12]),
                )
            )
    return out


def queue_size(cursor: Any) -> int:
    cursor.execute("SELECT count(*) FROM queue_msg")
    return int(cursor.fetchone()[0])


def queue_query(f: Filter, sort: Sort, now: float, columns: str = _MSG_COLUMNS) -> tuple[str, list[Any]]:
    """The SELECT of the queued messages matching ``f`` in ``sort`` order (one page)."""
    field = _sort_field(sort, QUEUE_SORT_FIELDS)
    where, args = _queue_where(f, now, field)
    order = _order(where, args, sort)
    # A list of IDs is a handful of rowid lookups (then sorted): keep the planner from
    # walking a sort index instead.
    table = "queue_msg NOT INDEXED" if f.ids else "queue_msg"
    return _sql(f"SELECT {columns} FROM {table}", where, order, _max(f.max)), args


def retired_query(
    f: RetiredFilter, sort: Sort, now: float, columns: str = _RETIRED_COLUMNS
) -> tuple[str, list[Any]]:
    """The SELECT of the retired messages matching ``f`` in ``sort`` order (one page)."""
    field = _sort_field(sort, RETIRED_SORT_FIELDS)
    where, args = _retired_where(f, now, field)
    order = _order(where, args, sort)
    table = "queue_retired NOT INDEXED" if f.ids else "queue_retired"
    return _sql(f"SELECT {columns} FROM {table}", where, order, _max(f.max)), args


def list_queue(cursor: Any, f: Filter, sort: Sort, now: float) -> list[QueueItem]:
    """Queued messages matching ``f`` in ``sort`` order, with their attempt history."""
    cursor.execute(*queue_query(f, sort, now))
    rows = [_queue_row(r) for r in cursor.fetchall()]
    history = attempt_histories(cursor, [r.id for r in rows])
    return [QueueItem(r, history[r.id]) for r in rows]


def list_retired(cursor: Any, f: RetiredFilter, sort: Sort, now: float) -> list[RetiredItem]:
    """Retired messages matching ``f`` in ``sort`` order, with their attempt history."""
    cursor.execute(*retired_query(f, sort, now))
    rows = [_retired_row(r) for r in cursor.fetchall()]
    history = attempt_histories(cursor, [r.id for r in rows])
    return [RetiredItem(r, history[r.id]) for r in rows]


def select_rows(cursor: Any, f: Filter, now: float) -> list[QueueRow]:
    """The queued messages an operation with filter ``f`` applies to, by ID (``max``: the
    lowest IDs)."""
    where, args = _queue_where(f, now)
    cursor.execute(_sql(f"SELECT {_MSG_COLUMNS} FROM queue_msg", where, " ORDER BY id", _max(f.max)), args)
    return [_queue_row(r) for r in cursor.fetchall()]


def select_ids(cursor: Any, f: Filter, now: float) -> list[int]:
    where, args = _queue_where(f, now)
    cursor.execute(_sql("SELECT id FROM queue_msg", where, " ORDER BY id", _max(f.max)), args)
    return [int(r[0]) for r in cursor.fetchall()]


# --- operations --------------------------------------------------------------------------


def _update(
    cursor: Any,
    f: Filter,
    now: float,
    assignment: str,
    values: Sequence[Any],
    condition: str = "",
    condition_args: Sequence[Any] = (),
) -> int:
    ids = select_ids(cursor, f, now)
    n = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        cursor.execute(
            f"UPDATE queue_msg SET {assignment} WHERE id IN ({', '.join('?' * len(chunk))}){condition}",
            [*values, *chunk, *condition_args],
        )
        n += int(cursor.rowcount)
    return n


def set_hold(cursor: Any, f: Filter, hold: bool, now: float) -> int:
    """Hold or release the matching messages; releasing keeps next_attempt (due at once if
    it passed).  Returns how many matched."""
    return _update(cursor, f, now, "hold = ?", [int(hold)])


#: Messages whose attempt is in progress: a lease that has not run out.  Their
#: next_attempt is the lease, which a reschedule must not shorten (another pass could
#: then start a second attempt while the first one runs); the attempt's own result sets
#: the next attempt.
_NOT_IN_PROGRESS = " AND (lease_token IS NULL OR next_attempt <= ?)"


def set_next_attempt(cursor: Any, f: Filter, minutes: int, now: float) -> int:
    """next_attempt = now + minutes for the matching messages not being attempted."""
    return _update(cursor, f, now, "next_attempt = ?", [now + minutes * 60.0], _NOT_IN_PROGRESS, [now])


def add_next_attempt(cursor: Any, f: Filter, minutes: int, now: float) -> int:
    """next_attempt += minutes for the matching messages not being attempted."""
    return _update(cursor, f, now, "next_attempt = next_attempt + ?", [minutes * 60.0], _NOT_IN_PROGRESS, [now])


def drop(cursor: Any, f: Filter, now: float, keep: Callable[[str], float]) -> tuple[list[int], list[str]]:
    """Admin Drop of the matching messages (see :func:`moxtw.store.outbox.drop_messages`),
    selected in the same transaction.  Returns (dropped IDs, released files)."""
    return drop_messages(cursor, select_ids(cursor, f, now), now, keep)


def set_require_tls(cursor: Any, f: Filter, require_tls: bool | None, now: float) -> int:
    """RequireTLS for the next attempts: True, False, or None (the default policy)."""
    return _update(cursor, f, now, "require_tls = ?", [None if require_tls is None else int(require_tls)])


# --- hold rules ----------------------------------------------------------------------------


@attrs.frozen
class StoredHoldRule:
    """A hold rule added through the admin API; domains in canonical Unicode form."""

    id: int
    account: str
    sender_domain: str
    recipient_domain: str
    created: float


def list_hold_rules(cursor: Any) -> list[StoredHoldRule]:
    cursor.execute("SELECT id, account, sender_domain, recipient_domain, created FROM hold_rule ORDER BY id")
    return [StoredHoldRule(int(r[0]), r[1], r[2], r[3], float(r[4])) for r in cursor.fetchall()]


def add_hold_rule(
    cursor: Any, account: str, sender_domain: str, recipient_domain: str, now: float
) -> tuple[StoredHoldRule, int]:
    """Store a rule and hold the queued messages it matches (every non-empty field must
    match; all empty: every message).  Returns the rule and how many messages it held."""
    cursor.execute(
        "INSERT INTO hold_rule (account, sender_domain, recipient_domain, created) VALUES (?, ?, ?, ?)",
        (account, sender_domain, recipient_domain, now),
    )
    rule = StoredHoldRule(int(cursor.lastrowid), account, sender_domain, recipient_domain, now)
    held = hold_matching(cursor, account, sender_domain, recipient_domain)
    return rule, held


def remove_hold_rule(cursor: Any, rule_id: int) -> bool:
    """Remove a stored rule (messages it held stay held); False if there is none."""
    cursor.execute("DELETE FROM hold_rule WHERE id = ?", (rule_id,))
    return bool(cursor.rowcount)
