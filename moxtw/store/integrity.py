"""Store consistency: the integrity check behind ``moxtw checkstore`` and the start-up
sweep of message files a crash left without a row.

A message file is written and fsynced before the row that refers to it commits
(:mod:`moxtw.store.blobs`).  A crash between the two leaves a file no row refers to: it
holds no accepted message (the client got no answer), so it is garbage.  Files released by
a commit are listed in ``blob_gc`` and removed by the queue's cleanup; files of a batch
that never committed are not listed anywhere, so a single-daemon store sweeps them at
start: every file older than this start that no queued message and no (unexpunged)
mailbox message refers to is removed.  Files written since the start, by this process
or its webapi worker processes, are never candidates.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import attrs

#: Keys looked up per statement (SQLite's default limit on variables is 32766).
CHUNK = 500


def referenced_blobs(cursor: Any, keys: Sequence[str]) -> set[str]:
    """Those of ``keys`` that a queued message or an unexpunged mailbox message refers to."""
    marks = ",".join("?" * len(keys))
    cursor.execute(
        f"SELECT blob FROM queue_msg WHERE blob IN ({marks})"
        f" UNION SELECT blob FROM message WHERE blob IN ({marks}) AND expunged = 0",
        (*keys, *keys),
    )
    return {row[0] for row in cursor.fetchall()}


def chunks(keys: Sequence[str], size: int = CHUNK) -> Iterable[Sequence[str]]:
    for i in range(0, len(keys), size):
        yield keys[i : i + size]


@attrs.frozen
class IntegrityReport:
    """``problems``: inconsistencies that lose or corrupt data (the check fails);
    ``notes``: harmless leftovers that the daemon cleans up itself; ``counts``: sizes."""

    problems: list[str]
    notes: list[str]
    counts: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.problems


def check(data_dir: Path) -> IntegrityReport:
    """Check the SQLite store in ``data_dir`` (read-only; safe while the daemon runs, though
    rows and files that change during the check may then be reported as notes).

    Problems: SQLite's own integrity and foreign-key checks; a queued or mailbox message
    whose file is missing; a message both queued and retired; an attempt left open
    (no duration) whose message holds no lease.  Notes: files no row refers to (removed at
    the next start), leases held (attempts in progress, or interrupted by a crash and
    ended at the next start), files released but not yet removed.
    """
    db_path = data_dir / "moxtw.sqlite3"
    blob_root = data_dir / "msgs"
    if not db_path.exists():
        return IntegrityReport([f"no database at {db_path}"], [], {})
    problems: list[str] = []
    notes: list[str] = []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if result != ["ok"]:
            problems += [f"sqlite integrity_check: {line}" for line in result[:20]]
        for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
            problems.append(f"foreign key: {table} row {rowid} refers to a missing {parent} row")
        counts = {
            "queued": conn.execute("SELECT count(*) FROM queue_msg").fetchone()[0],
            "retired": conn.execute("SELECT count(*) FROM queue_retired").fetchone()[0],
            "mailbox messages": conn.execute("SELECT count(*) FROM message WHERE expunged = 0").fetchone()[0],
            "webhooks queued": conn.execute("SELECT count(*) FROM event WHERE admitted = 1").fetchone()[0],
            "webhooks retired": conn.execute("SELECT count(*) FROM hook_retired").fetchone()[0],
        }
        files = _blob_files(blob_root)
        counts["message files"] = len(files)
        wanted: dict[str, str] = {}
        for (blob, msg_id) in conn.execute("SELECT blob, id FROM queue_msg"):
            wanted.setdefault(blob, f"queued message {msg_id}")
        for (blob, msg_id) in conn.execute("SELECT blob, id FROM message WHERE expunged = 0"):
            wanted.setdefault(blob, f"mailbox message {msg_id}")
        for blob, owner in wanted.items():
            if blob not in files:
                problems.append(f"{owner}: message file {blob} is missing")
        gc = {row[0] for row in conn.execute("SELECT blob FROM blob_gc")}
        stray = files - wanted.keys() - gc
        if stray:
            notes.append(f"{len(stray)} message file(s) no row refers to (left by a crash; removed at the next start)")
        released = files & gc
        if released:
            notes.append(f"{len(released)} released message file(s) not removed yet (removed by the hourly cleanup)")
        both = conn.execute("SELECT count(*) FROM queue_msg JOIN queue_retired USING (id)").fetchone()[0]
        if both:
            problems.append(f"{both} message(s) both queued and retired")
        open_attempts = conn.execute(
            "SELECT a.msg_id FROM queue_attempt a LEFT JOIN queue_msg m ON m.id = a.msg_id"
            " WHERE a.duration IS NULL AND m.lease_token IS NULL"
        ).fetchall()
        if open_attempts:
            ids = ", ".join(str(r[0]) for r in open_attempts[:10])
            problems.append(f"{len(open_attempts)} delivery attempt(s) left open without a lease (messages {ids})")
        leased = conn.execute("SELECT count(*) FROM queue_msg WHERE lease_token IS NOT NULL").fetchone()[0]
        if leased:
            notes.append(f"{leased} queued message(s) leased: attempts in progress (or interrupted, ended at start)")
        hook_leased = conn.execute("SELECT count(*) FROM event WHERE lease_token IS NOT NULL").fetchone()[0]
        if hook_leased:
            notes.append(f"{hook_leased} webhook(s) leased: requests in progress (or interrupted, ended at start)")
    finally:
        conn.close()
    return IntegrityReport(problems, notes, counts)


def _blob_files(root: Path) -> set[str]:
    if not root.exists():
        return set()
    return {p.name for d in root.iterdir() if d.is_dir() for p in d.iterdir() if not p.name.startswith(".")}
