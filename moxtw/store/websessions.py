"""Web interface sessions ended by logging out (cursor functions; table ``webui_logout``).

A session is identified by its kind (``admin`` or ``account``), its account (the
account's name, "" for admin sessions) and a random session ID.  Logging out stores the
session's ID until the session would have expired anyway; logging out everywhere stores
the time of it for the login (session ID ""), which ends every session issued until
then.  Rows that can no longer end a valid session are deleted whenever one is added, so
the table holds at most the logouts of one session lifetime (12 hours) before the last.
"""

from __future__ import annotations

from typing import Any

#: The session ID of a row that ends every earlier session of its login.
EVERYWHERE = ""


def session_ended(cursor: Any, kind: str, account: str, session: str, issued: float) -> bool:
    """Whether the session was logged out, or its login logged out everywhere at or after
    its issue time (one read of the primary key)."""
    cursor.execute(
        "SELECT session, at FROM webui_logout WHERE kind = ? AND account = ? AND session IN (?, ?)",
        (kind, account, session, EVERYWHERE),
    )
    for ended, at in cursor.fetchall():
        if ended != EVERYWHERE or issued <= at:
            return True
    return False


def end_session(cursor: Any, kind: str, account: str, session: str, at: float, expires: float) -> int:
    """Record that ``session`` ended at ``at`` (``session`` :data:`EVERYWHERE`: every
    session of the login issued until ``at``), kept until ``expires``; removes the rows
    expired by ``at`` and returns how many.  Of two ends of the same session or login
    (two tabs at once), the later one counts."""
    removed = remove_expired_logouts(cursor, at)
    cursor.execute(
        "INSERT INTO webui_logout (kind, account, session, at, expires) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (kind, account, session) DO UPDATE SET"
        " at = CASE WHEN excluded.at > webui_logout.at THEN excluded.at ELSE webui_logout.at END,"
        " expires = CASE WHEN excluded.expires > webui_logout.expires"
        " THEN excluded.expires ELSE webui_logout.expires END",
        (kind, account, session, at, expires),
    )
    return removed


def remove_expired_logouts(cursor: Any, now: float) -> int:
    """Delete the rows whose sessions have all expired by ``now``; how many."""
    cursor.execute("DELETE FROM webui_logout WHERE expires <= ?", (now,))
    return int(cursor.rowcount)
