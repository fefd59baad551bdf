"""Paging through queued and retired webhooks: the page queries use schema 0008's indexes
(no scan of the table, no sort of every matching row), keyset pages visit every row
exactly once in both directions, ties in the sort value included; migration 0008 (and a
missing lower migration applied later)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from moxtw.admin.types import to_time, to_us
from moxtw.store import webhooks as sw
from moxtw.store.database import _statements, migrate_sqlite, migrations

T0 = 1_800_000_000.0


def open_db(testcase: SynchronousTestCase) -> sqlite3.Connection:
    path = Path(testcase.mktemp()).absolute()
    path.mkdir(parents=True)
    db = str(path / "moxtw.db")
    migrate_sqlite(db)
    conn = sqlite3.connect(db, isolation_level=None)
    testcase.addCleanup(conn.close)
    return conn


def fill(conn: sqlite3.Connection, n: int, times: Callable[[int], tuple[float, float]]) -> None:
    """``n`` queued and ``n`` retired webhooks; ``times(i)`` gives webhook i's (submitted,
    next attempt or last activity) time.  Accounts, events and success alternate; a few
    events are not admitted yet (not queued webhooks)."""
    for i in range(1, n + 1):
        submitted, other = times(i)
        account = "mox" if i % 3 else "other"
        kind = "delivered" if i % 2 else "failed"
        conn.execute(
            "INSERT INTO event (account, kind, queue_msg_id, created, admitted, url, payload, attempts,"
            " next_attempt) VALUES (?, ?, ?, ?, 1, 'http://127.0.0.1/hook', '{}', 1, ?)",
            (account, kind, i, submitted, other),
        )
        conn.execute(
            "INSERT INTO hook_retired (id, account, kind, queue_msg_id, from_id, message_id, subject, url,"
            " authorization_set, payload, submitted, attempts, success, last_activity, keep_until)"
            " VALUES (?, ?, ?, ?, '', '', '', 'http://127.0.0.1/hook', 0, '{}', ?, 1, ?, ?, ?)",
            (100_000 + i, account, kind, i, submitted, i % 2, other, T0 + 1e6),
        )
        if i % 10 == 0:
            conn.execute("INSERT INTO event (account, kind, queue_msg_id, created) VALUES (?, 'delayed', ?, ?)",
                         (account, i, submitted))  # fmt: skip


def plan(conn: sqlite3.Connection, query: tuple[str, list[Any]]) -> list[str]:
    sql, args = query
    return [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


def us(t: float) -> int:
    """A time in µs as the store orders and compares it (and the pages show it)."""
    return to_us(to_time(t))


class PlanTests(SynchronousTestCase):
    """The query plans of pages: one step on the table, through an index that gives the
    order (no temporary B-tree sorting every matching row).  SQLite plans without
    statistics (moxtw never runs ANALYZE), so a small table plans like a big one."""

    def setUp(self) -> None:
        self.conn = open_db(self)
        fill(self.conn, 20, lambda i: (T0 + i, T0 + i % 4))

    def assertPaged(self, query: tuple[str, list[Any]], table: str, index: str, seek: bool) -> None:
        steps = plan(self.conn, query)
        self.assertEqual(len(steps), 1, steps)
        step = steps[0]
        if seek:
            # A page after a row, or with a bound on the sort field: the index is entered
            # there (a range on the sort expression), not walked from its start.
            self.assertTrue(step.startswith(f"SEARCH {table} USING INDEX {index} ("), step)
            self.assertRegex(step, r"<expr>[<>]\?")
        else:
            self.assertRegex(step, rf"^(SCAN|SEARCH) {table} USING INDEX {index}\b")
            self.assertNotRegex(step, r"<expr>")
        self.assertNotIn("TEMP B-TREE", step)

    def test_queued_pages(self) -> None:
        after = {"last_id": 7, "last": T0 + 2}
        for f, sort, index in (
            (sw.HookFilter(max=51), sw.HookSort(), "event_hook_page_next"),
            (sw.HookFilter(max=51), sw.HookSort(**after), "event_hook_page_next"),
            (sw.HookFilter(max=51), sw.HookSort(asc=True, **after), "event_hook_page_next"),
            (sw.HookFilter(max=51), sw.HookSort(field="submitted", **after), "event_hook_page_created"),
            (sw.HookFilter(max=51), sw.HookSort(field="submitted", asc=True), "event_hook_page_created"),
            (sw.HookFilter(max=51, next_attempt=("<", T0 + 3)), sw.HookSort(), "event_hook_page_next"),
            (sw.HookFilter(max=51, next_attempt=(">", T0 + 1)), sw.HookSort(asc=True, **after),
             "event_hook_page_next"),
            (sw.HookFilter(max=51, event="failed"), sw.HookSort(**after), "event_hook_page_next"),
            (sw.HookFilter(max=51, account="mox"), sw.HookSort(**after), "event_hook_page_account"),
            (sw.HookFilter(max=51, account="mox", submitted=("<", T0 + 5)), sw.HookSort(),
             "event_hook_page_account"),
        ):  # fmt: skip
            seek = sort.last_id > 0 or f.next_attempt is not None
            self.assertPaged(sw.hooks_query(f, sort), "event", index, seek)

    def test_retired_pages(self) -> None:
        after = {"last_id": 100_007, "last": T0 + 2}
        for f, sort, index in (
            (sw.HookRetiredFilter(max=51), sw.HookSort(), "hook_retired_page_last_activity"),
            (sw.HookRetiredFilter(max=51), sw.HookSort(**after), "hook_retired_page_last_activity"),
            (sw.HookRetiredFilter(max=51), sw.HookSort(asc=True, **after), "hook_retired_page_last_activity"),
            (sw.HookRetiredFilter(max=51), sw.HookSort("submitted", **after), "hook_retired_page_submitted"),
            (sw.HookRetiredFilter(max=51, last_activity=(">", T0 + 1)), sw.HookSort(),
             "hook_retired_page_last_activity"),
            (sw.HookRetiredFilter(max=51, success=False, event="failed"), sw.HookSort(**after),
             "hook_retired_page_last_activity"),
            (sw.HookRetiredFilter(max=51, account="mox"), sw.HookSort(**after), "hook_retired_page_account"),
            (sw.HookRetiredFilter(max=51, account="mox"), sw.HookSort(), "hook_retired_page_account"),
        ):  # fmt: skip
            seek = sort.last_id > 0 or f.last_activity is not None
            self.assertPaged(sw.retired_hooks_query(f, sort), "hook_retired", index, seek)

    def test_ids_are_looked_up(self) -> None:
        # A list of IDs (a detail page, the selected rows of a bulk action): rowid
        # lookups, whatever the sort.
        for steps in (plan(self.conn, sw.hooks_query(sw.HookFilter(ids=(3, 4)), sw.HookSort())),
                      plan(self.conn, sw.retired_hooks_query(sw.HookRetiredFilter(ids=(100_003,)),
                                                             sw.HookSort("submitted")))):  # fmt: skip
            self.assertIn("USING INTEGER PRIMARY KEY", steps[0])

    def test_time_bound_gives_the_same_rows(self) -> None:
        # The microsecond bound added for the index never changes the result, at the
        # edge of a microsecond included.
        cursor = self.conn.cursor()
        cursor.execute("UPDATE event SET next_attempt = ? WHERE id = 1", (T0 + 5 + 4e-7,))
        cursor.execute("UPDATE event SET next_attempt = ? WHERE id = 2", (T0 + 5 + 6e-7,))
        for op in ("<", ">"):
            for t in (T0 + 5, T0 + 5 + 5e-7, T0 + 5 + 1e-6, T0 + 2):
                got = [h.row.id for h in sw.list_hooks(cursor, sw.HookFilter(next_attempt=(op, t)), sw.HookSort())]
                cursor.execute(f"SELECT id FROM event WHERE admitted = 1 AND next_attempt {op} ?", (t,))
                self.assertEqual(sorted(got), sorted(r[0] for r in cursor.fetchall()), (op, t))


Listing = Callable[[sw.HookSort, int], list[tuple[int, int]]]


class KeysetTests(SynchronousTestCase):
    """Forward and backward over many rows with equal sort values."""

    def setUp(self) -> None:
        self.conn = open_db(self)
        # Five distinct times, and times that differ but are equal in microseconds: ties
        # are broken by ID, in the sort's direction.
        fill(self.conn, 240, lambda i: (T0 + (i % 5) * 10 + (i % 2) * 1e-8, T0 + (i * 7 % 3) + (i % 4) * 2e-7))

    def queued(self, field: str, **criteria: Any) -> Listing:
        attr = "next_attempt" if field == "next_attempt" else "created"

        def listing(sort: sw.HookSort, size: int) -> list[tuple[int, int]]:
            hooks = sw.list_hooks(self.conn.cursor(), sw.HookFilter(max=size, **criteria), sort)
            return [(us(getattr(h.row, attr)), h.row.id) for h in hooks]

        return listing

    def retired(self, field: str, **criteria: Any) -> Listing:
        def listing(sort: sw.HookSort, size: int) -> list[tuple[int, int]]:
            hooks = sw.list_retired_hooks(self.conn.cursor(), sw.HookRetiredFilter(max=size, **criteria), sort)
            return [(us(getattr(h, field)), h.id) for h in hooks]

        return listing

    def walk(self, listing: Listing, field: str, asc: bool, size: int) -> None:
        everything = listing(sw.HookSort(field, asc), 0)
        expected = sorted(everything, reverse=not asc)
        self.assertEqual(everything, expected)
        self.assertEqual(len({i for _, i in everything}), len(everything))
        self.assertGreater(len(everything), size * 3)
        self.assertLess(len({t for t, _ in everything}), len(everything) // 10)  # many ties
        # Forward, page by page, from the first row.
        pages = [listing(sw.HookSort(field, asc), size)]
        while len(pages[-1]) == size:
            last_us, last_id = pages[-1][-1]
            pages.append(listing(sw.HookSort(field, asc, last_id, last_us / 1_000_000), size))
            self.assertLess(len(pages), len(everything))
        self.assertEqual(sum(pages, []), expected)
        # Backward from the last row: the opposite order after the row, reversed.
        back: list[tuple[int, int]] = [expected[-1]]
        while True:
            first_us, first_id = back[0]
            page = listing(sw.HookSort(field, not asc, first_id, first_us / 1_000_000), size)
            back[:0] = page[::-1]
            if len(page) < size:
                break
        self.assertEqual(back, expected)

    def test_queued(self) -> None:
        for field in ("next_attempt", "submitted"):
            for asc in (False, True):
                self.walk(self.queued(field), field, asc, 17)
                self.walk(self.queued(field, account="mox"), field, asc, 13)
                self.walk(self.queued(field, event="failed"), field, asc, 11)

    def test_retired(self) -> None:
        for field in ("last_activity", "submitted"):
            for asc in (False, True):
                self.walk(self.retired(field), field, asc, 17)
                self.walk(self.retired(field, account="other"), field, asc, 7)
                self.walk(self.retired(field, success=True), field, asc, 11)


class MigrationTests(SynchronousTestCase):
    def build(self, versions: list[tuple[int, str, str]]) -> str:
        """A database with exactly ``versions`` applied, as an older moxtw left it."""
        path = str(Path(self.mktemp()).absolute())
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
        for version, name, sql in versions:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))
        conn.close()
        return path

    def indexes(self, path: str) -> set[str]:
        conn = sqlite3.connect(path)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        finally:
            conn.close()

    def test_0008_applies_on_an_older_database_and_uses_only_0005(self) -> None:
        everything = migrations()
        (m8,) = [m for m in everything if m[0] == 8]
        self.assertEqual(m8[1], "0008_hook_paging.sql")
        # Only the webhook tables of 0005 (and event of 0003).
        for other in ("queue_msg", "queue_retired", "hold_rule", "message"):
            self.assertNotRegex(m8[2], rf"\bON {other}\b")
        path = self.build([m for m in everything if m[0] < 8])
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("INSERT INTO event (account, kind, queue_msg_id, created) VALUES ('a', 'delivered', 1, 5.0)")
        conn.close()
        old, new = migrate_sqlite(path)
        self.assertEqual((old, new), (max(v for v, _, _ in everything if v < 8), max(v for v, _, _ in everything)))
        self.assertTrue({"event_hook_page_next", "hook_retired_page_account"} <= self.indexes(path))
