"""The async database: transactions in adbapi's thread, group commit, migrations.

Callers never see a connection.  They hand a plain synchronous function of a cursor to
:meth:`Database.run` (its own transaction) or :meth:`Database.run_batched` (shares a
transaction, and so one fsync, with whatever else is waiting), and await the result.
Transaction functions may be re-run after a retryable error, so they must have no side
effects outside the database.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import attrs
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import metrics
from .engines import Engine

P = ParamSpec("P")
T = TypeVar("T")

Cursor = Any
TxnFunction = Callable[..., T]

_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


_UNSET: Any = object()


@attrs.define(eq=False)
class _Pending:
    description: str
    function: Callable[..., Any]
    args: tuple[Any, ...]
    deferred: Deferred[Any]
    prepare: Callable[[], Any] | None = None
    undo: Callable[[Any], None] | None = None
    prepared: Any = _UNSET
    #: When the request was made (``time.monotonic()``, for metrics).
    queued: float = attrs.Factory(time.monotonic)

    def discard(self) -> None:
        """Undo the prepared side effect (the row that needed it did not commit)."""
        if self.undo is not None and self.prepared is not _UNSET:
            self.undo(self.prepared)
            self.prepared = _UNSET


@attrs.define(eq=False)
class Database:
    """Runs transactions on an :class:`Engine` through a ``twisted.enterprise.adbapi`` pool.

    ``run_batched`` implements group commit: requests that arrive while a batch is being
    committed wait and form the next batch; each request runs inside its own SAVEPOINT so
    one failing request does not undo the others; the batch commits once (one fsync) and
    its callbacks fire right after, before the next batch starts.
    """

    engine: Engine
    reactor: Any
    max_batch: int = 500
    _pool: adbapi.ConnectionPool | None = None
    _pending: list[_Pending] = attrs.Factory(list)
    _committing: bool = False
    #: A batch start is scheduled for the end of this reactor turn.
    _starting: bool = False
    #: Number of batches and requests committed, for metrics and tests.
    batches: int = 0
    batched_requests: int = 0
    #: Called in the database thread once per batch after its ``prepare`` steps and before
    #: its transaction begins (the blob store fsyncs the directories of files written).
    before_commit: list[Callable[[], None]] = attrs.Factory(list)

    log = Logger()

    def start(self) -> None:
        args, kwargs = self.engine.connect_args()
        self._pool = adbapi.ConnectionPool(
            self.engine.module,
            *args,
            cp_min=self.engine.pool_size,
            cp_max=self.engine.pool_size,
            cp_openfun=self.engine.on_connect,
            cp_reactor=self.reactor,
            cp_noisy=False,
            **kwargs,
        )
        # Start the pool's threads now instead of waiting for callWhenRunning: the
        # service tree starts while the reactor is already running.
        if self._pool.startID is not None:
            self.reactor.removeSystemEventTrigger(self._pool.startID)
            self._pool.startID = None
        self._pool.start()

    async def stop(self) -> None:
        """Wait for queued batches, then close the pool."""
        while self._pending or self._committing or self._starting:
            await deferLater(self.reactor, 0.01, lambda: None)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    def _require_pool(self) -> adbapi.ConnectionPool:
        if self._pool is None:
            raise RuntimeError("database is not started")
        return self._pool

    async def run(self, description: str, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function(cursor, *args, **kwargs)`` in a transaction of its own."""
        if kwargs:
            function = functools.partial(function, **kwargs)
        return await self._run(description, function, args)

    async def _run(
        self,
        description: str,
        function: Callable[..., T],
        args: tuple[Any, ...],
        before: Callable[[], None] | None = None,
    ) -> T:
        """The transaction with retries; ``before()`` runs in the thread ahead of BEGIN."""
        pool = self._require_pool()
        delay = 0.01
        for attempt in range(6):
            try:
                start = time.monotonic()
                result: T = await pool.runInteraction(self._transaction, function, args, before)
                kind = "single" if before is None else "batch"
                metrics.store_transaction_duration.labels(kind).observe(time.monotonic() - start)
                return result
            except Exception as e:
                if attempt == 5 or not self.engine.is_retryable(e):
                    raise
                self.log.warn("retrying {description} after {error}", description=description, error=e)
                await deferLater(self.reactor, delay, lambda: None)
                delay *= 2
        raise AssertionError("unreachable")

    def _transaction(
        self,
        cursor: Cursor,
        function: Callable[..., T],
        args: tuple[Any, ...],
        before: Callable[[], None] | None,
    ) -> T:
        if before is not None:
            before()
        self.engine.begin(cursor)
        return function(cursor, *args)

    def _prepare_batch(self, batch: list[_Pending]) -> None:
        for item in batch:
            if item.prepare is not None and item.prepared is _UNSET:
                try:
                    item.prepared = item.prepare()
                except Exception:
                    item.prepared = Failure()
        for hook in self.before_commit:
            hook()

    def run_batched(
        self,
        description: str,
        function: Callable[..., T],
        *args: Any,
        prepare: Callable[[], Any] | None = None,
        undo: Callable[[Any], None] | None = None,
        **kwargs: Any,
    ) -> Deferred[T]:
        """Run ``function(cursor, *args, **kwargs)`` in a transaction shared with others.

        With ``prepare``, ``prepare()`` runs first, once, in the database thread, and its
        result is passed as the first argument after the cursor: a durable side effect
        (writing a message file) that the row refers to.  If the row does not commit,
        ``undo(result)`` is called.
        """
        if kwargs:
            function = functools.partial(function, **kwargs)
        d: Deferred[T] = Deferred()
        self._pending.append(_Pending(description, function, args, d, prepare, undo))
        if not self._committing and not self._starting:
            # Start at the end of this reactor turn, not now: the requests one event
            # leads to (a delivery's results and the claim of its successor, say) then
            # share a transaction instead of the first one committing on its own.
            self._starting = True
            self.reactor.callLater(0, self._start)
        return d

    def _start(self) -> None:
        self._starting = False
        if not self._committing:
            self._next_batch()

    def _next_batch(self) -> None:
        if not self._pending:
            return
        batch = self._pending[: self.max_batch]
        del self._pending[: self.max_batch]
        self._committing = True
        # Durable side effects (message files) are written before BEGIN, outside the
        # write lock, so they do not keep other processes' commits waiting.
        d = Deferred.fromCoroutine(
            self._run("batch", self._run_batch, (batch,), functools.partial(self._prepare_batch, batch))
        )
        d.addBoth(self._batch_done, batch)

    def _run_batch(self, cursor: Cursor, batch: list[_Pending]) -> list[Any]:
        results: list[Any] = []
        for item in batch:
            args = item.args
            if item.prepare is not None:
                if isinstance(item.prepared, Failure):
                    results.append(item.prepared)
                    item.prepared = _UNSET
                    continue
                args = (item.prepared, *args)
            cursor.execute("SAVEPOINT request")
            try:
                results.append(item.function(cursor, *args))
            except Exception:
                cursor.execute("ROLLBACK TO SAVEPOINT request")
                results.append(Failure())
                item.discard()
            cursor.execute("RELEASE SAVEPOINT request")
        return results

    def _batch_done(self, results: list[Any] | Failure, batch: list[_Pending]) -> None:
        self.batches += 1
        self.batched_requests += len(batch)
        metrics.store_batch([item.queued for item in batch], time.monotonic())
        # Still "committing" while the callbacks run: what they submit (the next claim
        # after a finished delivery, say) waits and goes into the next batch together,
        # instead of the first request starting a transaction of its own and the rest
        # another one queued behind it.
        try:
            if isinstance(results, Failure):
                for item in batch:
                    item.discard()
                    item.deferred.errback(results)
            else:
                for item, result in zip(batch, results, strict=True):
                    if isinstance(result, Failure):
                        item.deferred.errback(result)
                    else:
                        item.deferred.callback(result)
        finally:
            self._committing = False
            self._next_batch()


# --- migrations --------------------------------------------------------------------


def migrations() -> list[tuple[int, str, str]]:
    """The numbered schema files shipped in ``moxtw/store/schema``: (version, name, sql)."""
    found = []
    for entry in importlib.resources.files("moxtw.store.schema").iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort()
    for i, (version, name, _) in enumerate(found, start=1):
        if version != i:
            raise RuntimeError(f"schema files are not numbered 1..n: {name}")
    return found


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name='schema_version'"
    ).fetchone()
    if row is None:
        return 0
    (version,) = conn.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(version or 0)


def migrate_sqlite(path: str) -> tuple[int, int]:
    """Bring the SQLite database at ``path`` to the newest schema; (old, new) version.

    Runs synchronously at startup, before any listener opens: each migration is applied
    with its version row in one transaction, so a crash leaves the previous version.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        old = schema_version(conn)
        available = migrations()
        if old > len(available):
            raise RuntimeError(
                f"database schema version {old} is newer than this moxtw knows ({len(available)})"
            )
        for version, name, sql in available[old:]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if version == 1:
                    conn.execute(
                        "CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)"
                    )
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied) VALUES (?, ?, julianday('now'))",
                    (version, name),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return old, len(available)
    finally:
        conn.close()


def _statements(sql: str) -> list[str]:
    """Split a schema file into statements (no semicolons inside our statements)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
