"""The admin retired-messages pages: filters, keyset pages, a message's final result and
delivery history, unknown IDs and bad filters."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import TestCase

from moxtw.store import admin as sa
from moxtw.store import outbox
from tests.webui.fixture import OTHER, WebUIFixture
from tests.webui.test_queue import link, main


def listed(page: Any) -> list[int]:
    return [int(i) for i in re.findall(r'href="/admin/retired/(\d+)"', main(page))]


class RetiredPageTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()
        await self.b.login_admin()

    async def retire(self) -> tuple[int, int, int, int]:
        """A delivered, a failed and a dropped message of account mox, a failed one of
        account other."""
        delivered, failed, dropped = await self.f.send("d@example.com", "f@example.com", "x@example.org",
                                                       subject="<b>bold</b>")  # fmt: skip
        (theirs,) = await self.f.send("o@example.net", login=OTHER)
        await self.f.attempt(delivered, outbox.DELIVERED, code=250, secode="0.0", remote_host="mx.example.com")
        await self.f.attempt(failed, outbox.DELAYED, code=451, secode="2.0", error="try later")
        await self.f.attempt(failed, outbox.FAILED, code=550, secode="1.1", error="<no such user>",
                             remote_host="mx.example.com", remote_ip="192.0.2.7")  # fmt: skip
        await self.f.attempt(theirs, outbox.FAILED, code=554, error="rejected")
        await self.f.ui.queue.drop(sa.Filter(ids=(dropped,)))
        return delivered, failed, dropped, theirs

    async def test_list_and_filters(self) -> None:
        delivered, failed, dropped, theirs = await self.retire()
        (queued,) = await self.f.send("q@example.com")
        page = await self.b.get("/admin/retired/")
        self.assertEqual(page.status, 200)
        self.assertEqual(sorted(listed(page)), [delivered, failed, dropped, theirs])
        self.assertIn('<a href="/admin/retired/" aria-current="page">Retired</a>', page.text)
        self.assertIn("&lt;b&gt;bold&lt;/b&gt;", page.text)
        self.assertNotIn("<b>bold", page.text)
        self.assertIn("550 5.1.1 &lt;no such user&gt;", page.text)
        for query, expected in (
            ("success=yes", [delivered]),
            ("success=no", [failed, dropped, theirs]),
            ("account=other", [theirs]),
            ("from=mox%40", [delivered, failed, dropped]),
            ("to=example.com", [delivered, failed]),
            ("to=example.com&success=no", [failed]),
            (f"ids={failed},{theirs},{queued}", [failed, theirs]),
            ("activity=%3E-1h", [delivered, failed, dropped, theirs]),
            ("activity=%3C-1h", []),
            ("submitted=%3E-1h&transport=", [delivered, failed, dropped, theirs]),
            ("transport=relay", []),
        ):
            page = await self.b.get(f"/admin/retired/?{query}")
            self.assertEqual(page.status, 200, query)
            self.assertEqual(sorted(listed(page)), sorted(expected), query)
        # Sorted by last activity, latest first, unless asked otherwise; ties by ID.
        self.assertEqual(listed(await self.b.get("/admin/retired/?sort=queued&order=asc&account=mox")),
                         [delivered, failed, dropped])  # fmt: skip
        page = await self.b.get("/admin/retired/?to=%22%3E%3Cb%3E")
        self.assertIn('name="to" id="f-to" value="&quot;&gt;&lt;b&gt;"', page.text)

    async def test_bad_filter(self) -> None:
        for query, message in (("success=maybe", "result: expected yes"), ("activity=soon", "must start with &lt;"),
                               ("submitted=%3Cnever", "expected now or a duration"),
                               ("sort=next_attempt", "sort: expected one of last_activity, queued"),
                               ("order=up", "order: expected asc or desc"), ("n=501", "page size: must be from 1"),
                               ("ids=1,x", "message ID: expected a number"), ("after=1", "after_id: expected"),
                               ("after=1&after_id=1&before=1&before_id=2", "not both")):  # fmt: skip
            page = await self.b.get(f"/admin/retired/?{query}")
            self.assertEqual(page.status, 400, query)
            self.assertIn(message, page.text, query)
            self.assertIn('<form method="get" action="/admin/retired/"', page.text)
            self.assertNotIn("Traceback", page.text)

    async def test_keyset_pagination(self) -> None:
        sent = await self.f.send(*[f"r{i}@example.com" for i in range(8)])
        # Dropped in three groups: equal last-activity times within a group are ordered by ID.
        for group in (sent[:3], sent[3:5], sent[5:]):
            await self.f.ui.queue.drop(sa.Filter(ids=tuple(group)))
        rows = await self.f.rows("queue_retired", "CAST(round(last_activity * 1000000) AS BIGINT)")
        expected_desc = [i for i, _ in sorted(rows.items(), key=lambda r: (r[1][0], r[0]), reverse=True)]
        for order, expected in (("desc", expected_desc), ("asc", expected_desc[::-1])):
            url: str | None = f"/admin/retired/?n=3&order={order}&to=example.com"
            pages = []
            while url is not None:
                page = await self.b.get(url)
                self.assertEqual(page.status, 200, url)
                pages.append(listed(page))
                url = link(page, "next")
                self.assertLess(len(pages), 5)
            self.assertEqual([len(p) for p in pages], [3, 3, 2])
            self.assertEqual(sum(pages, []), expected, order)
            back = []
            url = link(page, "prev")
            while url is not None:
                page = await self.b.get(url)
                back.append(listed(page))
                url = link(page, "prev")
            self.assertEqual(back, pages[-2::-1])
            self.assertIn("to=example.com", link(page, "next") or "")

    async def test_detail(self) -> None:
        delivered, failed, dropped, _ = await self.retire()
        page = await self.b.get(f"/admin/retired/{failed}")
        self.assertEqual(page.status, 200, page.text)
        text = main(page)
        self.assertIn(f"<h1>Retired message {failed}</h1>", text)
        self.assertIn("<dt>Result</dt><dd>failed</dd>", text)
        self.assertIn("<dt>Final result</dt><dd>550 5.1.1 &lt;no such user&gt;</dd>", text)
        self.assertIn("<dt>Subject</dt><dd>&lt;b&gt;bold&lt;/b&gt;</dd>", text)
        self.assertIn("<dt>Attempts</dt><dd>2</dd>", text)
        for label in ("Account", "From", "To", "Message-ID", "Queued", "Last activity", "Last attempt",
                      "Kept until", "RequireTLS", "Transport", "Size", "Extra"):  # fmt: skip
            self.assertIn(f"<dt>{label}</dt>", text)
        self.assertEqual(re.findall(r"<tr><td>(\d)</td>", text), ["1", "2"])
        self.assertIn("<td>451</td><td>4.2.0</td><td>try later</td>", text)
        self.assertIn("<td>550</td><td>5.1.1</td><td>&lt;no such user&gt;</td>", text)
        self.assertIn("mx.example.com (192.0.2.7)", text)
        self.assertNotIn("<no such", page.text)
        page = await self.b.get(f"/admin/retired/{delivered}")
        self.assertIn("<dt>Result</dt><dd>delivered</dd>", page.text)
        self.assertIn("<td>250</td><td>2.0.0</td>", page.text)
        page = await self.b.get(f"/admin/retired/{dropped}")
        self.assertIn("<dt>Result</dt><dd>canceled</dd>", page.text)
        self.assertIn("<dt>Final result</dt><dd>delivery canceled by admin</dd>", page.text)
        # Unknown IDs: 404; a message still queued: its queue page.
        for path in ("/admin/retired/12345", "/admin/retired/0", "/admin/retired/99999999999999999999999",
                     "/admin/retired/x"):  # fmt: skip
            page = await self.b.get(path)
            self.assertEqual(page.status, 404, path)
            self.assertNotIn("Traceback", page.text)
        (queued,) = await self.f.send("q@example.com")
        reply = await self.b.get(f"/admin/retired/{queued}")
        self.assertEqual((reply.status, reply.header("location")), (303, f"/admin/queue/{queued}"))
        # Admin pages need the admin session.
        account = self.f.browser()
        await account.login_account()
        reply = await account.get(f"/admin/retired/{failed}")
        self.assertEqual(reply.status, 303)
        self.assertIn("/admin/login", reply.header("location") or "")
        self.assertEqual((await account.request("POST", "/admin/retired/")).status, 405)
