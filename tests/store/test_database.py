"""Store contract tests: migrations, durability across reopening, group commit.

``StoreContractMixin`` runs against the embedded SQLite store always; a PostgreSQL engine
will run the same tests when ``MOXTW_TEST_POSTGRES`` is set.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from moxtw.store import Store, sqlite_store
from moxtw.store.database import migrate_sqlite, migrations


def insert_suppression(cursor, account: str, address: str) -> int:
    cursor.execute(
        "INSERT INTO suppression (created, account, base_address, original_address, manual, reason)"
        " VALUES (?, ?, ?, ?, 1, '')",
        (0.0, account, address, address),
    )
    return int(cursor.lastrowid)


def count(cursor, table: str) -> int:
    cursor.execute(f"SELECT count(*) FROM {table}")
    return int(cursor.fetchone()[0])


class StoreContractMixin:
    """Behaviour every store engine must have."""

    def make_store(self, directory: Path) -> Store:
        raise NotImplementedError

    def open_store(self, directory: Path) -> Store:
        store = self.make_store(directory)
        store.open()
        self.addCleanup(store.close)  # type: ignore[attr-defined]
        return store

    async def test_committed_row_and_blob_survive_reopen(self) -> None:
        directory = Path(self.mktemp())  # type: ignore[attr-defined]
        store = self.make_store(directory)
        store.open()
        def insert(cursor, key):
            return key, insert_suppression(cursor, "mox", key)

        key, row_id = await store.run_with_blob("insert", b"Subject: hi\r\n\r\nbody\r\n", insert)
        await store.close()

        again = self.open_store(directory)
        self.assertEqual(await again.blobs.get(key), b"Subject: hi\r\n\r\nbody\r\n")  # type: ignore[attr-defined]

        def read(cursor):
            cursor.execute("SELECT id FROM suppression WHERE base_address = ?", (key,))
            return cursor.fetchone()[0]

        self.assertEqual(await again.db.run("read", read), row_id)  # type: ignore[attr-defined]

    async def test_run_returns_result_and_raises(self) -> None:
        store = self.open_store(Path(self.mktemp()))  # type: ignore[attr-defined]
        first = await store.db.run("insert", insert_suppression, "mox", "a@example.org")
        with self.assertRaises(sqlite3.IntegrityError):  # type: ignore[attr-defined]
            await store.db.run("duplicate", insert_suppression, "mox", "a@example.org")
        self.assertEqual(await store.db.run("count", count, "suppression"), 1)  # type: ignore[attr-defined]
        self.assertGreater(first, 0)  # type: ignore[attr-defined]

    async def test_group_commit_shares_transactions(self) -> None:
        """Concurrent batched requests commit in fewer transactions than requests."""
        store = self.open_store(Path(self.mktemp()))  # type: ignore[attr-defined]
        ds = [store.db.run_batched("insert", insert_suppression, "mox", f"{i}@x") for i in range(200)]
        ids = await defer.gatherResults(ds)
        self.assertEqual(sorted(ids), list(range(1, 201)))  # type: ignore[attr-defined]
        self.assertEqual(store.db.batched_requests, 200)  # type: ignore[attr-defined]
        self.assertLess(store.db.batches, 20)  # type: ignore[attr-defined]

    async def test_failing_request_does_not_undo_its_batch(self) -> None:
        store = self.open_store(Path(self.mktemp()))  # type: ignore[attr-defined]
        await store.db.run("insert", insert_suppression, "mox", "dup@x")
        ok1 = store.db.run_batched("insert", insert_suppression, "mox", "one@x")
        bad = store.db.run_batched("insert", insert_suppression, "mox", "dup@x")
        ok2 = store.db.run_batched("insert", insert_suppression, "mox", "two@x")
        await ok1
        await ok2
        with self.assertRaises(sqlite3.IntegrityError):  # type: ignore[attr-defined]
            await bad
        self.assertEqual(await store.db.run("count", count, "suppression"), 3)  # type: ignore[attr-defined]

    async def test_blob_of_failed_row_is_removed(self) -> None:
        store = self.open_store(Path(self.mktemp()))  # type: ignore[attr-defined]
        await store.db.run("insert", insert_suppression, "mox", "dup@x")

        def insert(cursor, key, address):
            insert_suppression(cursor, "mox", address)
            return key

        good = store.run_with_blob("insert", b"good", insert, "new@x")
        bad = store.run_with_blob("insert", b"bad", insert, "dup@x")
        key = await good
        with self.assertRaises(sqlite3.IntegrityError):  # type: ignore[attr-defined]
            await bad
        self.assertEqual(await store.blobs.keys(), [key])  # type: ignore[attr-defined]

    async def test_blobs_share_directory_syncs(self) -> None:
        store = self.open_store(Path(self.mktemp()))  # type: ignore[attr-defined]

        def noop(cursor, key):
            return key

        keys = await defer.gatherResults([store.run_with_blob("w", b"%d" % i, noop) for i in range(50)])
        self.assertEqual(len(set(keys)), 50)  # type: ignore[attr-defined]
        # One shard directory per batch.
        self.assertLessEqual(len({k[:2] for k in keys}), store.db.batches)  # type: ignore[attr-defined]
        for i, key in enumerate(keys):
            self.assertEqual(await store.blobs.get(key), b"%d" % i)  # type: ignore[attr-defined]

    async def test_blob_missing_and_delete(self) -> None:
        store = self.open_store(Path(self.mktemp()))  # type: ignore[attr-defined]

        def noop(cursor, key):
            return key

        key = await store.run_with_blob("w", b"x", noop)
        self.assertEqual(await store.blobs.keys(), [key])  # type: ignore[attr-defined]
        await store.blobs.delete([key, "0" * 32])
        with self.assertRaises(KeyError):  # type: ignore[attr-defined]
            await store.blobs.get(key)
        with self.assertRaises(KeyError):  # type: ignore[attr-defined]
            await store.blobs.get("../../etc/passwd")


class SqliteStoreTests(StoreContractMixin, TestCase):
    def make_store(self, directory: Path) -> Store:
        return sqlite_store(directory, reactor)

    def test_pragmas(self) -> None:
        store = self.open_store(Path(self.mktemp()))

        def pragmas(cursor):
            return [cursor.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous", "foreign_keys")]

        d = defer.Deferred.fromCoroutine(store.db.run("pragmas", pragmas))
        d.addCallback(self.assertEqual, ["wal", 2, 1])
        return d


class MigrationTests(TestCase):
    def test_new_database(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        db = str(path / "db.sqlite3")
        self.assertEqual(migrate_sqlite(db), (0, len(migrations())))
        conn = sqlite3.connect(db)
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        conn.close()
        self.assertTrue({"schema_version", "queue_msg", "suppression", "outgoing"} <= tables)

    def test_existing_database_is_left_alone(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        db = str(path / "db.sqlite3")
        migrate_sqlite(db)
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO outgoing (account, recipient, first_time, submitted) VALUES ('a', 'b', 1, 0)")
        conn.commit()
        conn.close()
        n = len(migrations())
        self.assertEqual(migrate_sqlite(db), (n, n))
        conn = sqlite3.connect(db)
        self.assertEqual(conn.execute("SELECT count(*) FROM outgoing").fetchone()[0], 1)
        conn.close()

    def test_newer_database_refused(self) -> None:
        path = Path(self.mktemp())
        path.mkdir()
        db = str(path / "db.sqlite3")
        migrate_sqlite(db)
        conn = sqlite3.connect(db)
        conn.execute("INSERT INTO schema_version VALUES (999, 'future', 0)")
        conn.commit()
        conn.close()
        self.assertRaises(RuntimeError, migrate_sqlite, db)

    def test_migrations_numbered(self) -> None:
        versions = [v for v, _, _ in migrations()]
        self.assertEqual(versions, list(range(1, len(versions) + 1)))
