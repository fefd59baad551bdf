"""Database engines: what differs between SQLite and (later) PostgreSQL.

Callers write SQL with ``?`` placeholders and portable syntax; the engine converts
placeholders, sets up each connection, opens transactions and says which errors are worth
retrying.  This is synapse's ``storage/engines`` split, kept small.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Protocol


class Engine(Protocol):
    #: DB-API module name handed to ``adbapi.ConnectionPool``.
    module: str
    #: How many connections (= database threads) the pool keeps.
    pool_size: int

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

    def __init__(self, path: str) -> None:
        self.path = path

    def connect_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (self.path,), {"check_same_thread": False, "isolation_level": None, "timeout": 10.0}

    def on_connect(self, conn: Any) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")

    def begin(self, cursor: Any) -> None:
        cursor.execute("BEGIN IMMEDIATE")

    def sql(self, statement: str) -> str:
        return statement

    def is_retryable(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.OperationalError) and (
            "locked" in str(error) or "busy" in str(error)
        )
