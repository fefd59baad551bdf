"""Database engines: what differs between SQLite and (later) PostgreSQL.

Callers write SQL with ``?`` placeholders and portable syntax; the engine converts
placeholders, sets up each connection, opens transactions and says which errors are worth
retrying.  This is synapse's ``storage/engines`` split, kept small.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any, Protocol


class Engine(Protocol):
    #: DB-API module name handed to ``adbapi.ConnectionPool``.
    module: str
    #: How many connections (= database threads) the pool keeps.
    pool_size: int
    #: Whether several daemons may use the database at once (PostgreSQL, later).  When
    #: not, the one daemon that holds the data directory's lock may treat every
    #: unfinished delivery attempt it finds at start as interrupted by its own crash.
    shared: bool

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments for the DB-API ``connect``."""

    def on_connect(self, conn: Any) -> None:
        """Per-connection setup (PRAGMAs, session settings)."""

    def begin(self, cursor: Any) -> None:
        """Open a write transaction on ``cursor``."""

    def sql(self, statement: str) -> str:
        """Convert portable SQL (``?`` placeholders) to this engine's dialect."""

    def is_retryable(self, error: BaseException) -> bool:
        """True for errors that a re-run of the same transaction may not hit."""


class SqliteEngine:
    """SQLite, embedded: one connection, WAL, ``synchronous=FULL``, foreign keys on.

    ``synchronous=FULL`` makes every commit fsync the WAL, which is what "on disk before
    we answer 2xx/250" needs; group commit (``Database.run_batched``) keeps that affordable.
    The connection runs with ``isolation_level=None`` and :meth:`begin` issues
    ``BEGIN IMMEDIATE`` so transactions are explicit and savepoints behave.
    """

    module = "sqlite3"
    pool_size = 1
    shared = False

    def __init__(self, path: str) -> None:
        self.path = path

    #: How long :meth:`begin` waits for another process's write transaction.
    lock_timeout = 10.0

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.path,), {"check_same_thread": False, "isolation_level": None, "timeout": 10.0}

    def on_connect(self, conn: Any) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")

    def begin(self, cursor: Any) -> None:
        """``BEGIN IMMEDIATE``, waiting for other processes' writers with short sleeps.

        SQLite's own busy handler sleeps in steps of up to 100 ms, which made p99 latency
        jump when webapi workers share the database; this polls every 0.1 to 2 ms instead.
        Only the begin waits: once we hold the write lock, WAL mode lets the rest run.
        """
        cursor.execute("PRAGMA busy_timeout=0")
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.0001
        try:
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 0.002)
        finally:
            cursor.execute("PRAGMA busy_timeout=10000")

    def sql(self, statement: str) -> str:
        return statement

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and (
            "locked" in str(error) or "busy" in str(error)
        )
