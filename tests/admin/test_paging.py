"""Paging through queued and retired messages: the page queries use schema 0007's indexes
(no scan of the table, no sort of every matching row), and keyset pages visit every row
exactly once in both directions, ties in the sort value included."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from moxtw.admin.types import to_time, to_us
from moxtw.store import admin as sa
from moxtw.store.database import migrate_sqlite

T0 = 1_800_000_000.0
NOW = T0 + 1000


def open_db(testcase: SynchronousTestCase) -> sqlite3.Connection:
    path = Path(testcase.mktemp()).absolute()
    path.mkdir(parents=True)
    db = str(path / "moxtw.db")
    migrate_sqlite(db)
    conn = sqlite3.connect(db, isolation_level=None)
    testcase.addCleanup(conn.close)
    return conn


def fill(conn: sqlite3.Connection, n: int, times: Callable[[int], tuple[float, float]]) -> None:
    """``n`` queued and ``n`` retired messages; ``times(i)`` gives message i's (queued,
    next attempt or last activity) time.  Accounts, hold and success alternate."""
    for i in range(1, n + 1):
        queued, other = times(i)
        account = "mox" if i % 3 else "other"
        conn.execute(
            "INSERT INTO queue_msg (account, queued, sender_localpart, sender_domain, recipient_localpart,"
            " recipient_domain, recipient_address, blob, prefix, size, hold, next_attempt)"
            " VALUES (?, ?, 'mox', 'example.org', ?, 'example.com', ?, 'blob', x'', 10, ?, ?)",
            (account, queued, f"r{i}", f"r{i}@example.com", i % 2, other),
        )
        conn.execute(
            "INSERT INTO queue_retired (id, base_id, account, queued, sender_localpart, sender_domain,"
            " recipient_localpart, recipient_domain, recipient_address, from_id, message_id, subject, size,"
            " has_8bit, smtputf8, future_release_request, transport, attempts, max_attempts, last_activity,"
            " success, event, keep_until)"
            " VALUES (?, 0, ?, ?, 'mox', 'example.org', ?, 'example.com', ?, '', '', '', 10, 0, 0, '', '', 1, 0,"
            " ?, ?, 'delivered', ?)",
            (100_000 + i, account, queued, f"r{i}", f"r{i}@example.com", other, i % 2, T0 + 1e6),
        )


def plan(conn: sqlite3.Connection, query: tuple[str, list[Any]]) -> list[str]:
    sql, args = query
    return [str(row[3]) for row in conn.execute("EXPLAIN QUERY PLAN " + sql, args)]


class PlanTests(SynchronousTestCase):
    """The query plans of pages: every step on the table goes through an index, and the
    index gives the order (no temporary B-tree sorting every matching row).  SQLite plans
    without statistics (moxtw never runs ANALYZE), so a small table plans like a big one."""

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
            self.assertTrue(step.startswith(f"SCAN {table} USING INDEX {index}"), step)
        self.assertNotIn("TEMP B-TREE", step)

    def test_queue_pages(self) -> None:
        cond = sa.parse_time_condition
        after = {"last_id": 7, "last_us": round((T0 + 2) * 1_000_000)}
        for f, sort, index in (
            (sa.Filter(max=51), sa.Sort(), "queue_msg_page_next"),
            (sa.Filter(max=51), sa.Sort(**after), "queue_msg_page_next"),
            (sa.Filter(max=51), sa.Sort(asc=True, **after), "queue_msg_page_next"),
            (sa.Filter(max=51), sa.Sort(field="queued", **after), "queue_msg_page_queued"),
            (sa.Filter(max=51), sa.Sort(field="queued", asc=True, **after), "queue_msg_page_queued"),
            (sa.Filter(max=51, next_attempt=cond("<1h")), sa.Sort(**after), "queue_msg_page_next"),
            (sa.Filter(max=51, sender="mox@", transport=""), sa.Sort(**after), "queue_msg_page_next"),
            (sa.Filter(max=51, account="mox"), sa.Sort(**after), "queue_msg_page_account"),
            (sa.Filter(max=51, account="mox"), sa.Sort(field="queued", **after), "queue_msg_page_account_queued"),
            (sa.Filter(max=51, hold=True), sa.Sort(**after), "queue_msg_page_hold"),
            (sa.Filter(max=51, hold=False, next_attempt=cond("<now")), sa.Sort(), "queue_msg_page_hold"),
        ):
            seek = sort.last_id > 0 or f.next_attempt is not None
            self.assertPaged(sa.queue_query(f, sort, NOW), "queue_msg", index, seek)

    def test_retired_pages(self) -> None:
        cond = sa.parse_time_condition
        after = {"last_id": 100_007, "last_us": round((T0 + 2) * 1_000_000)}
        la = "last_activity"
        for f, sort, index in (
            (sa.RetiredFilter(max=51), sa.Sort(la), "queue_retired_page_last_activity"),
            (sa.RetiredFilter(max=51), sa.Sort(la, **after), "queue_retired_page_last_activity"),
            (sa.RetiredFilter(max=51), sa.Sort(la, asc=True, **after), "queue_retired_page_last_activity"),
            (sa.RetiredFilter(max=51), sa.Sort("queued", **after), "queue_retired_page_queued"),
            (sa.RetiredFilter(max=51, last_activity=cond(">-1h")), sa.Sort(la, **after),
             "queue_retired_page_last_activity"),
            (sa.RetiredFilter(max=51, account="mox"), sa.Sort(la, **after), "queue_retired_page_account"),
            (sa.RetiredFilter(max=51, account="mox"), sa.Sort("queued", asc=True, **after),
             "queue_retired_page_account_queued"),
            (sa.RetiredFilter(max=51, success=False), sa.Sort(la, **after), "queue_retired_page_success"),
        ):  # fmt: skip
            seek = sort.last_id > 0 or f.last_activity is not None
            self.assertPaged(sa.retired_query(f, sort, NOW), "queue_retired", index, seek)

    def test_ids_are_looked_up(self) -> None:
        # A list of IDs: rowid lookups, whatever the sort.
        for steps in (plan(self.conn, sa.queue_query(sa.Filter(ids=(3, 4)), sa.Sort(), NOW)),
                      plan(self.conn, sa.retired_query(sa.RetiredFilter(ids=(100_003,)), sa.Sort("queued"), NOW))):  # fmt: skip
            self.assertIn("USING INTEGER PRIMARY KEY", steps[0])

    def test_old_indexes_went_where_new_ones_cover_them(self) -> None:
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self.assertNotIn("queue_msg_account", names)
        self.assertIn("queue_msg_next_attempt", names)  # the queue's own (hold, next_attempt)
        # Lookups by account alone still use an index.
        (step,) = [r[3] for r in self.conn.execute("EXPLAIN QUERY PLAN SELECT id FROM queue_msg WHERE account = ?",
                                                   ("mox",))]  # fmt: skip
        self.assertIn("USING COVERING INDEX queue_msg_page_account", step)


Listing = Callable[[sa.Sort, int], list[tuple[int, int]]]


class KeysetTests(SynchronousTestCase):
    """Forward and backward over many rows with equal sort values."""

    def setUp(self) -> None:
        self.conn = open_db(self)
        # Five distinct times, and times that differ but are equal in microseconds: ties
        # are broken by ID, in the sort's direction.
        fill(self.conn, 240, lambda i: (T0 + (i % 5) * 10 + (i % 2) * 1e-8, T0 + (i * 7 % 3) + (i % 4) * 2e-7))

    def queue(self, field: str, **criteria: Any) -> Listing:
        def listing(sort: sa.Sort, size: int) -> list[tuple[int, int]]:
            items = sa.list_queue(self.conn.cursor(), sa.Filter(max=size, **criteria), sort, NOW)
            return [(to_us(to_time(getattr(i.row, field))), i.row.id) for i in items]

        return listing

    def retired(self, field: str, **criteria: Any) -> Listing:
        def listing(sort: sa.Sort, size: int) -> list[tuple[int, int]]:
            items = sa.list_retired(self.conn.cursor(), sa.RetiredFilter(max=size, **criteria), sort, NOW)
            return [(to_us(to_time(getattr(i.row, field))), i.row.id) for i in items]

        return listing

    def walk(self, listing: Listing, field: str, asc: bool, size: int) -> None:
        everything = listing(sa.Sort(field, asc), 0)
        expected = sorted(everything, reverse=not asc)
        self.assertEqual(everything, expected)
        self.assertGreater(len(everything), size * 3)
        self.assertLess(len({us for us, _ in everything}), len(everything) // 10)  # many ties
        # Forward, page by page, from the first row.
        pages = [listing(sa.Sort(field, asc), size)]
        while len(pages[-1]) == size:
            last_us, last_id = pages[-1][-1]
            pages.append(listing(sa.Sort(field, asc, last_id, last_us), size))
            self.assertLess(len(pages), len(everything))
        self.assertEqual(sum(pages, []), expected)
        # Backward from the last row: the opposite order after the row, reversed.
        back: list[tuple[int, int]] = [expected[-1]]
        while True:
            first_us, first_id = back[0]
            page = listing(sa.Sort(field, not asc, first_id, first_us), size)
            back[:0] = page[::-1]
            if len(page) < size:
                break
        self.assertEqual(back, expected)

    def test_queue(self) -> None:
        for field in sa.QUEUE_SORT_FIELDS:
            for asc in (False, True):
                self.walk(self.queue(field), field, asc, 17)
                self.walk(self.queue(field, account="mox"), field, asc, 13)
                self.walk(self.queue(field, hold=True), field, asc, 11)

    def test_retired(self) -> None:
        for field in sa.RETIRED_SORT_FIELDS:
            for asc in (False, True):
                self.walk(self.retired(field), field, asc, 17)
                self.walk(self.retired(field, account="other"), field, asc, 7)
                self.walk(self.retired(field, success=True), field, asc, 11)

