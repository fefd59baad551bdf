"""The admin dashboard: queue by state, delivery attempts per hour (an SVG bar chart and
a table), retired messages, the webhook backlog, for a known set of messages; and the
store queries behind it (moxtw.store.stats): results and query plans."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from moxtw.settings import ConfigReloader
from moxtw.store import admin as sa
from moxtw.store import outbox, stats
from moxtw.store import webhooks as sw
from tests.webui.fixture import WebUIFixture

reactor: Any = _reactor
HOUR = 3600.0


def section(page: Any, heading: str) -> str:
    return page.text.split(f">{heading}</h2>", 1)[1].split("<h2", 1)[0]


def cells(html: str, caption: str) -> list[list[str]]:
    body = html.split(f"<caption>{caption}</caption>", 1)[1].split("</tbody>", 1)[0].split("<tbody>", 1)[1]
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td>(.*?)</td>", tr)] for tr in body.split("<tr>")[1:]]


class DashboardTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        reloader = ConfigReloader(self.f.parts.settings.live, reactor, install_signal=False)
        self.f.parts.settings.reload = reloader.request_reload
        self.b = self.f.browser()
        reply = await self.b.login_admin()
        self.assertEqual(reply.status, 303)
        # The page's "now": half past the next hour (the messages the test queues are
        # due by then), so every time below falls in a known hour.
        self.now = (time.time() // HOUR + 1) * HOUR + HOUR / 2
        clock = Clock()
        clock.advance(self.now)
        self.f.ui.clock = clock

    async def attempt(self, msg_id: int, at: float, kind: str | None, **finish: Any) -> None:
        """One delivery attempt of ``msg_id`` starting at ``at`` through the queue's store
        functions (claim, then finish with ``kind``; None: left in progress)."""
        token = f"t{msg_id}-{at}"

        def run(cursor: Any) -> None:
            # The message is due at ``at`` (the others are left alone).
            cursor.execute("UPDATE queue_msg SET next_attempt = ? WHERE id = ?", (at, msg_id))
            cursor.execute("SELECT id FROM queue_msg WHERE id != ?", (msg_id,))
            others = [int(r[0]) for r in cursor.fetchall()]
            result = outbox.claim_due(cursor, at, slots=10, domain_slots=lambda d: 10, exclude=others,
                                      backoff=lambda n: 60.0, lease_minimum=60.0, new_token=lambda: token)  # fmt: skip
            claimed = [c.row.id for batch in result.batches for c in batch]
            assert claimed == [msg_id], claimed
            if kind is not None:
                outbox.finish_attempt(cursor, None, outbox.Finish(msg_id=msg_id, token=token, kind=kind, duration=1.5,
                                                                  now=at + 1.5, keep=72 * HOUR, **finish))  # fmt: skip

        await self.f.parts.store.db.run("attempt", run)

    async def test_counts_and_chart(self) -> None:
        now = self.now
        sent = await self.f.send(*[f"r{i}@example.com" for i in range(10)])
        old, d1, f1, r1, d2, h1, h2, p1, q1, q2 = sent
        # In time order, as the queue writes them.
        await self.attempt(old, now - 30 * HOUR, outbox.DELIVERED)  # outside the 24 hours
        await self.attempt(d1, now - 3 * HOUR, outbox.DELIVERED)
        await self.attempt(f1, now - 3 * HOUR, outbox.FAILED, code=550, secode="1.1", error="no such user")
        for msg in (r1, d2, h2):
            await self.attempt(msg, now - 2 * HOUR, outbox.DELAYED, code=451, error="try later",
                               next_attempt=now + 600)  # fmt: skip
        (canceled,) = await self.f.send("c@example.com")
        await self.f.ui.queue.drop(sa.Filter(ids=(canceled,)))  # an admin's: no delivery attempt
        await self.attempt(d2, now - 1 * HOUR, outbox.DELIVERED)
        await self.f.ui.queue.set_hold(sa.Filter(ids=(h1, h2)), True)
        await self.attempt(p1, now, None)  # being delivered
        # Two queued webhooks.
        await self.f.parts.settings.save("mox", {"outgoing_webhook.url": "http://127.0.0.1:9/hooks"})
        await self.f.ui.queue.send_test_webhook("mox")
        await self.f.ui.queue.send_test_webhook("mox")

        page = await self.b.get("/admin/dashboard/")
        self.assertEqual(page.status, 200, page.text)
        self.assertIn('href="/admin/dashboard/" aria-current="page"', page.text)

        # The queue by state, and as the store's other reads see it.
        queue = dict((r[0], int(r[1])) for r in cells(page.text, "Queue by state"))
        self.assertEqual(queue, {"Queued": 6, "Held": 2, "Being delivered": 1, "Due now": 2, "Retrying": 1,
                                 "With failed attempts": 2})  # fmt: skip
        self.assertEqual(queue["Queued"], await self.f.ui.queue.size())
        held = await self.f.ui.queue.list_queue(sa.Filter(hold=True), sa.Sort("next_attempt", True, 0, None))
        self.assertEqual(sorted(i.row.id for i in held), sorted([h1, h2]))
        self.assertEqual(sorted(q for q in sent if q not in (old, d1, f1, d2)), sorted([r1, h1, h2, p1, q1, q2]))

        # Delivery attempts per hour: 24 hours, the last one the current hour.
        expected = [(0, 0)] * 24
        expected[20] = (1, 1)  # d1 delivered, f1 failed
        expected[21] = (0, 3)  # r1, d2, h2 delayed
        expected[22] = (1, 0)  # d2 delivered
        svg = page.text.split("<svg", 1)[1].split("</svg>", 1)[0]
        pairs = re.findall(r'<g class="hour">(.*?)</g>', svg)
        self.assertEqual(len(pairs), 24)
        bars = [tuple(int(v) for v in re.findall(r'data-value="(\d+)"', p)) for p in pairs]
        self.assertEqual(bars, expected)
        for p in pairs:
            self.assertEqual(re.findall(r'class="bar (\w+)"', p), ["delivered", "failed"])
        # Bar heights follow the values (the tallest bar is the whole plot).
        heights = [float(h) for h in re.findall(r'height="([\d.]+)" class="bar failed"', svg)]
        self.assertEqual(heights[21], max(heights))
        self.assertEqual(heights[20] * 3, heights[21])
        self.assertEqual(heights[22], 0)
        # Accessible: a title and a description, and the numbers as a table.
        self.assertIn('role="img"', page.text)
        self.assertIn('aria-labelledby="chart-title chart-desc"', page.text)
        self.assertIn('<title id="chart-title">Delivery attempts per hour, last 24 hours</title>', svg)
        self.assertIn("2 delivered and 4 failed delivery attempts", svg)
        table = cells(page.text, "Delivery attempts per hour (UTC), newest first")
        self.assertEqual(len(table), 24)
        self.assertEqual([(int(r[1]), int(r[2])) for r in reversed(table)], expected)
        first = now - HOUR / 2 - 23 * HOUR  # the oldest hour shown
        label = f"{datetime.fromtimestamp(first, UTC):%Y-%m-%d %H}:00–{datetime.fromtimestamp(first + HOUR, UTC):%H}:00Z"
        self.assertEqual((table[-1][0], table[0][0][:10]), (label, f"{datetime.fromtimestamp(now, UTC):%Y-%m-%d}"))
        # Retired in the same 24 hours (the canceled one too, the one from 30 hours ago not).
        self.assertIn("2 delivered, 1 failed, 0 suppressed, 1 canceled.", page.text)
        # No inline style: the CSP allows none; colours come from classes.
        self.assertNotIn(" style=", page.text)
        self.assertIn("style-src 'self';", page.header("content-security-policy") or "")

        # The webhook backlog.
        hooks = await self.f.ui.queue.list_hooks(sw.HookFilter(), sw.HookSort())
        oldest = min(h.row.created for h in hooks)
        webhooks = section(page, "Webhooks")
        self.assertIn("2 webhook(s) queued, 0 of them after failed attempts; the oldest is from", webhooks)
        self.assertIn(f'datetime="{datetime.fromtimestamp(oldest, UTC):%Y-%m-%dT%H:%M:%SZ}"', webhooks)
        # The DNSBL summary (none configured here).
        self.assertIn("No DNSBL zones configured.", section(page, "DNSBL"))

    async def test_empty(self) -> None:
        page = await self.b.get("/admin/dashboard/")
        self.assertEqual(page.status, 200)
        queue = dict((r[0], int(r[1])) for r in cells(page.text, "Queue by state"))
        self.assertEqual(set(queue.values()), {0})
        self.assertEqual(re.findall(r'data-value="(\d+)"', page.text), ["0"] * 48)
        self.assertIn("No webhooks are queued.", page.text)
        # Not for account sessions, nor without a session.
        mox = self.f.browser()
        await mox.login_account()
        reply = await mox.get("/admin/dashboard/")
        self.assertEqual(reply.status, 303)
        self.assertTrue((reply.header("location") or "").startswith("/admin/login"))


class StatsQueryTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()

    async def query(self, function: Any, *args: Any) -> Any:
        return await self.f.parts.store.db.run("test", function, *args)

    async def test_first_attempt_since(self) -> None:
        t0 = 1_800_000_000.0

        def fill(cursor: Any) -> list[tuple[int, float]]:
            for i in range(300):
                cursor.execute("INSERT INTO queue_attempt (msg_id, attempt, token, start) VALUES (?, 1, 'x', ?)",
                               (i, t0 + 10 * (i // 3)))  # fmt: skip
            # Gaps, as removed histories leave them.
            cursor.execute("DELETE FROM queue_attempt WHERE msg_id % 7 = 0 OR msg_id BETWEEN 100 AND 160")
            cursor.execute("SELECT id, start FROM queue_attempt ORDER BY id")
            return [(int(i), float(s)) for i, s in cursor.fetchall()]

        rows = await self.query(fill)
        for since in (t0 - 1, t0, t0 + 5, t0 + 10, t0 + 333, t0 + 340, t0 + 520, t0 + 990, t0 + 1000, t0 + 5000):
            brute = min((i for i, s in rows if s >= since), default=None)
            self.assertEqual(await self.query(stats.first_attempt_since, since), brute, since)

    async def test_query_plans(self) -> None:
        """Each query reads through an index (or the primary key), never a table scan of
        the history tables."""

        class Explaining:
            """A cursor that records the plan of each SELECT before running it."""

            def __init__(self, cursor: Any) -> None:
                self.cursor = cursor
                self.plans: dict[str, list[str]] = {}

            def execute(self, sql: str, args: Any = ()) -> Any:
                rows = self.cursor.execute("EXPLAIN QUERY PLAN " + sql, args).fetchall()
                self.plans.setdefault(sql, []).extend(str(r[3]) for r in rows)
                return self.cursor.execute(sql, args)

            def fetchone(self) -> Any:
                return self.cursor.fetchone()

            def fetchall(self) -> Any:
                return self.cursor.fetchall()

        def plans(cursor: Any) -> dict[str, list[str]]:
            explaining = Explaining(cursor)
            stats.hourly_attempts(explaining, 1_800_000_000.0, 24)
            stats.hourly_retired(explaining, 1_800_000_000.0, 1_800_086_400.0)
            stats.hook_backlog(explaining)
            return explaining.plans

        def has_rows(cursor: Any) -> None:
            # The binary search only runs with rows.
            cursor.execute("INSERT INTO queue_attempt (msg_id, attempt, token, start) VALUES (1, 1, 'x', 1800000100)")

        await self.query(has_rows)
        found = await self.query(plans)
        steps = {sql.split(" FROM ", 1)[1].split(" ", 1)[0] + (" ORDER" if "ORDER BY" in sql else ""): plan
                 for sql, plan in found.items() if "GROUP BY" in sql or "created" in sql or "LIMIT 1" in sql}  # fmt: skip
        for sql, plan in found.items():
            for step in plan:
                self.assertFalse(step.startswith("SCAN queue_attempt") or step.startswith("SCAN queue_retired")
                                 or step.startswith("SCAN event"), (sql, plan))  # fmt: skip
        self.assertIn("queue_attempt", steps)
        self.assertTrue(any("INTEGER PRIMARY KEY" in s for s in steps["queue_attempt"]), steps)
        self.assertTrue(any("queue_retired_page_last_activity" in s for s in steps["queue_retired"]), steps)
        self.assertTrue(any("event_hook_page_created" in s for s in steps["event ORDER"]), steps)
