"""Read-only counts for the admin dashboard: the queue by state, delivery attempts and
retired messages per hour, and the webhook backlog.

Every query goes through an index or reads only the queue table (as the metrics'
queue count does), so a dashboard costs about the same with a large history:

- **Attempts per hour** come from ``queue_attempt``, which has no index on ``start``.
  Its IDs are AUTOINCREMENT and each row's ``start`` is the time it was inserted, so
  ``start`` grows with the ID; :func:`first_attempt_since` finds the first row of the
  window by binary search on the primary key (a few dozen point lookups), then the
  count reads only the rows from there on.  A margin (:data:`ORDER_SLACK`) covers
  writers whose clocks or batches disagree a little.
- **Retired messages per hour** use schema 0007's ``queue_retired_page_last_activity``
  (a range on the same microsecond expression).
- **Webhooks**: ``event_admitted`` counts the queued webhooks and
  ``event_hook_page_created`` (schema 0008) finds the oldest.

History is what the store keeps: a message's attempts are removed with it when its
account keeps no retired messages (``keep_retired_messages`` 0), so the hourly counts
cover the messages still queued and the retired messages kept.
"""

from __future__ import annotations

from typing import Any

import attrs

from .outbox import INTERRUPTED_ERROR

__all__ = [
    "HOUR",
    "Dashboard",
    "HookBacklog",
    "Hour",
    "QueueStates",
    "dashboard",
    "first_attempt_since",
    "hourly_attempts",
    "hourly_retired",
    "hook_backlog",
    "queue_states",
]

HOUR = 3600.0
#: How far an attempt's ``start`` may be out of ID order (seconds).
ORDER_SLACK = 3600.0


def _us(column: str) -> str:
    """``column`` in whole microseconds, exactly as schemas 0007 and 0008 index it."""
    return f"CAST(round({column} * 1000000) AS BIGINT)"


@attrs.frozen
class QueueStates:
    """Queued messages (one per recipient) by state."""

    #: Every queued message.
    total: int = 0
    #: On hold (by an admin or a hold rule).
    held: int = 0
    #: Being delivered now (an unexpired lease).
    delivering: int = 0
    #: Not held, not being delivered, due now.
    due: int = 0
    #: Not held, not being delivered, with failed attempts: waiting for the next retry
    #: (or due for it).
    retrying: int = 0
    #: With at least one failed attempt, held or not (a running attempt does not count).
    with_failures: int = 0


@attrs.frozen
class Hour:
    """One hour of the chart: [start, start + 1h)."""

    start: float
    #: Delivery attempts that delivered / that failed (temporarily or for good).
    delivered: int = 0
    failed: int = 0


@attrs.frozen
class HookBacklog:
    """Queued webhooks."""

    queued: int = 0
    #: Of them, those with failed attempts (being retried).
    retrying: int = 0
    #: When the oldest queued webhook's event happened (None: none queued).
    oldest: float | None = None


@attrs.frozen
class Dashboard:
    now: float
    queue: QueueStates
    #: Delivery attempts per hour, oldest first; the last is the current hour.
    hours: tuple[Hour, ...]
    #: Retired messages of the same window by outcome (event: delivered, failed,
    #: suppressed, canceled), as kept.
    retired: dict[str, int]
    hooks: HookBacklog


def queue_states(cursor: Any, now: float) -> QueueStates:
    """One scan of the queue table (what the queue metrics read too)."""
    inflight = "(lease_token IS NOT NULL AND next_attempt > :now)"
    # Attempts that failed: the count of attempts, less one running now.
    failures = f"(attempts - (CASE WHEN {inflight} THEN 1 ELSE 0 END) > 0)"
    cursor.execute(
        "SELECT count(*), coalesce(sum(hold != 0), 0),"
        f" coalesce(sum(hold = 0 AND {inflight}), 0),"
        f" coalesce(sum(hold = 0 AND NOT {inflight} AND next_attempt <= :now), 0),"
        f" coalesce(sum(hold = 0 AND NOT {inflight} AND {failures}), 0),"
        f" coalesce(sum({failures}), 0)"
        " FROM queue_msg",
        {"now": now},
    )
    total, held, delivering, due, retrying, with_failures = (int(v) for v in cursor.fetchone())
    return QueueStates(total, held, delivering, due, retrying, with_failures)


def first_attempt_since(cursor: Any, since: float) -> int | None:
    """The smallest ``queue_attempt`` ID whose ``start`` is at least ``since``, assuming
    starts grow with IDs (binary search on the primary key); None: no such row."""
    # Two statements: SQLite reads one end of the primary key for a lone min() or max().
    cursor.execute("SELECT min(id) FROM queue_attempt")
    (low,) = cursor.fetchone()
    if low is None:
        return None
    cursor.execute("SELECT max(id) FROM queue_attempt")
    (high,) = cursor.fetchone()
    low, high = int(low), int(high) + 1
    while low < high:
        middle = (low + high) // 2
        cursor.execute("SELECT id, start FROM queue_attempt WHERE id >= ? ORDER BY id LIMIT 1", (middle,))
        ident, start = cursor.fetchone()  # a row exists: middle <= max(id)
        if float(start) >= since:
            high = middle
        else:
            low = int(ident) + 1
    cursor.execute("SELECT id FROM queue_attempt WHERE id >= ? ORDER BY id LIMIT 1", (low,))
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def hourly_attempts(cursor: Any, start: float, hours: int) -> list[Hour]:
    """Finished delivery attempts (not the records of an admin's cancel, nor of a DSN
    that came in later: those have no token) per hour from ``start``."""
    end = start + hours * HOUR
    first = first_attempt_since(cursor, start - ORDER_SLACK)
    counts: dict[int, tuple[int, int]] = {}
    if first is not None:
        cursor.execute(
            "SELECT CAST((start - :start) / 3600 AS INTEGER) AS hour, coalesce(sum(success != 0), 0),"
            " coalesce(sum(success = 0), 0) FROM queue_attempt"
            " WHERE id >= :first AND start >= :start AND start < :end AND duration IS NOT NULL"
            " AND token != '' AND error != :interrupted GROUP BY hour",
            {"start": start, "end": end, "first": first, "interrupted": INTERRUPTED_ERROR},
        )
        counts = {int(h): (int(ok), int(bad)) for h, ok, bad in cursor.fetchall()}
    return [Hour(start + i * HOUR, *counts.get(i, (0, 0))) for i in range(hours)]


def hourly_retired(cursor: Any, start: float, end: float) -> dict[str, int]:
    """Retired messages whose last activity is in [start, end), by event."""
    cursor.execute(
        f"SELECT event, count(*) FROM queue_retired WHERE {_us('last_activity')} >= ?"
        f" AND {_us('last_activity')} < ? GROUP BY event",
        (round(start * 1_000_000), round(end * 1_000_000)),
    )
    return {str(event): int(n) for event, n in cursor.fetchall()}


def hook_backlog(cursor: Any) -> HookBacklog:
    cursor.execute("SELECT count(*), coalesce(sum(attempts > 0), 0) FROM event WHERE admitted = 1")
    queued, retrying = cursor.fetchone()
    cursor.execute(
        f"SELECT created FROM event WHERE admitted = 1 ORDER BY {_us('created')}, id LIMIT 1"
    )
    row = cursor.fetchone()
    return HookBacklog(int(queued), int(retrying), None if row is None else float(row[0]))


def dashboard(cursor: Any, now: float, hours: int = 24) -> Dashboard:
    """Everything the dashboard shows, in one read transaction: the last ``hours`` whole
    hours (UTC), the current one included."""
    current = now - now % HOUR
    start = current - (hours - 1) * HOUR
    return Dashboard(
        now=now,
        queue=queue_states(cursor, now),
        hours=tuple(hourly_attempts(cursor, start, hours)),
        retired=hourly_retired(cursor, start, current + HOUR),
        hooks=hook_backlog(cursor),
    )
