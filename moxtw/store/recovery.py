"""Start-up recovery of delivery attempts a crash interrupted (single-daemon stores).

A claimed message carries a lease: when its daemon dies, the message becomes due again
once the lease runs out (at least 15 minutes, so that several daemons sharing a database
never deliver the same message at once).  A store that only one daemon uses (SQLite,
guarded by the data directory's lock) knows at start that every unfinished attempt was its
own and interrupted, so the messages are due at once instead: the attempt stays in the
history, marked as interrupted, and counts as an attempt (it may have delivered the
message; a new attempt may duplicate that one delivery, never more).
"""

from __future__ import annotations

from typing import Any

INTERRUPTED = "interrupted: the daemon stopped during this attempt, transient"


def recover_interrupted(cursor: Any, now: float) -> int:
    """End every unfinished attempt as interrupted; make its message due at ``now``.

    Returns how many queued messages were released.
    """
    cursor.execute(
        "UPDATE queue_attempt SET duration = max(0, ? - start), error = ? WHERE duration IS NULL",
        (now, INTERRUPTED),
    )
    cursor.execute(
        "UPDATE queue_msg SET lease_token = NULL, next_attempt = ?, last_result = ? WHERE lease_token IS NOT NULL",
        (now, INTERRUPTED),
    )
    return int(cursor.rowcount)


def recover_interrupted_hooks(cursor: Any, now: float) -> int:
    """The same for webhooks: a request a crash cut short is ended as interrupted and the
    webhook is due at ``now`` (it may have arrived; it goes again with the same webhook
    ID, so the receiver can tell).  Returns how many webhooks were released."""
    cursor.execute(
        "UPDATE hook_attempt SET duration = max(0, ? - start), error = ? WHERE duration IS NULL",
        (now, INTERRUPTED),
    )
    cursor.execute(
        "UPDATE event SET lease_token = NULL, next_attempt = ? WHERE lease_token IS NOT NULL",
        (now,),
    )
    return int(cursor.rowcount)
