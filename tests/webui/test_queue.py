"""The admin queue page: filters, keyset pagination, bulk hold/release, and that the
admin API and routing around it still work."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from moxtw.app import build_parts
from moxtw.localserve import ADMIN_PASSWORD
from moxtw.store import admin as sa
from tests.webui.fixture import OTHER, WebUIFixture


def ids(page: Any) -> list[int]:
    return [int(i) for i in re.findall(r'name="id" value="(\d+)"', page.text)]


def link(page: Any, rel: str) -> str | None:
    found = re.search(rf'href="([^"]*)" rel="{rel}"', page.text)
    return html.unescape(found.group(1)) if found else None


class QueuePageTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()
        await self.b.login_admin()
        self.changed: list[None] = []
        self.f.parts.admin.ops.on_changed = lambda: self.changed.append(None)

    async def bulk(self, query: str, fields: dict[str, Any]) -> Any:
        """Post the bulk form of the list at ``query`` as a browser would."""
        page = await self.b.get(f"/admin/queue/?{query}")
        self.assertEqual(page.status, 200, page.text)
        form = page.text.split('class="bulk">', 1)[1].split('<div class="table"', 1)[0]
        hidden = {k: html.unescape(v) for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form)}
        return await self.b.post("/admin/queue/", {**hidden, **fields})

    async def test_filters_and_escaping(self) -> None:
        com = await self.f.send("a1@example.com", "a2@example.com", subject="<script>alert(1)</script>")
        org = await self.f.send("b1@example.org")
        mine = await self.f.send("c1@example.net", login=OTHER)
        page = await self.b.get("/admin/queue/")
        self.assertEqual(sorted(ids(page)), sorted(com + org + mine))
        self.assertIn("4 message(s) in the queue.", page.text)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", page.text)
        self.assertNotIn("<script>alert", page.text)
        self.assertEqual(sorted(ids(await self.b.get("/admin/queue/?to=example.com"))), sorted(com))
        self.assertEqual(ids(await self.b.get("/admin/queue/?account=other")), mine)
        self.assertEqual(ids(await self.b.get("/admin/queue/?from=other%40")), mine)
        self.assertEqual(ids(await self.b.get(f"/admin/queue/?ids={org[0]},{mine[0]}&account=mox")), org)
        self.assertEqual(ids(await self.b.get("/admin/queue/?hold=yes")), [])
        self.assertEqual(len(ids(await self.b.get("/admin/queue/?hold=no&next=%3C1m&submitted=%3E-1h"))), 4)
        self.assertEqual(ids(await self.b.get("/admin/queue/?next=%3E10m")), [])
        self.assertEqual(ids(await self.b.get("/admin/queue/?transport=other")), [])
        # Filter values are kept in the form, escaped.
        page = await self.b.get("/admin/queue/?to=%22%3E%3Cb%3E")
        self.assertIn('name="to" id="f-to" value="&quot;&gt;&lt;b&gt;"', page.text)
        for query, message in (("next=soon", "must start with &lt; or &gt;"), ("hold=maybe", "held: expected yes"),
                               ("sort=subject", "sort: expected one of"), ("n=0", "page size: must be from 1"),
                               ("after=1", "after_id: expected a number"), ("ids=x", "message ID: expected")):  # fmt: skip
            page = await self.b.get(f"/admin/queue/?{query}")
            self.assertEqual(page.status, 400, query)
            self.assertIn(message, page.text)
            self.assertNotIn("Traceback", page.text)

    async def test_keyset_pagination(self) -> None:
        sent = await self.f.send(*[f"r{i}@example.com" for i in range(8)])
        # Spread the next attempts, with ties (equal times are ordered by ID).
        for i, msg in enumerate(sent):
            await self.f.parts.admin.ops.set_next_attempt(sa.Filter(ids=(msg,)), 10 * (i % 3))
        rows = await self.f.parts.store.db.run("rows", _next_attempts)
        expected_desc = [i for i, _ in sorted(rows, key=lambda r: (r[1], r[0]), reverse=True)]
        for order, expected in (("desc", expected_desc), ("asc", expected_desc[::-1])):
            url: str | None = f"/admin/queue/?n=3&order={order}"
            pages = []
            while url is not None:
                page = await self.b.get(url)
                pages.append(ids(page))
                if len(pages) == 1:
                    self.assertIsNone(link(page, "prev"))
                url = link(page, "next")
                self.assertLess(len(pages), 5)
            self.assertEqual([len(p) for p in pages], [3, 3, 2])
            self.assertEqual(sum(pages, []), expected, order)
            # And back again from the last page.
            back = []
            url = link(page, "prev")
            while url is not None:
                page = await self.b.get(url)
                back.append(ids(page))
                url = link(page, "prev")
            self.assertEqual(back, pages[-2::-1])
        # Links keep the filter; the sort field is honoured.
        page = await self.b.get("/admin/queue/?n=2&to=example.com&sort=queued")
        nxt = link(page, "next")
        assert nxt is not None
        params = parse_qs(urlsplit(nxt).query)
        self.assertEqual((params["to"], params["sort"], params["n"]), (["example.com"], ["queued"], ["2"]))

    async def test_bulk_hold_and_release(self) -> None:
        com = await self.f.send("a1@example.com", "a2@example.com", "a3@example.com")
        org = await self.f.send("b1@example.org", "b2@example.org")
        # Every message matching the filter.
        reply = await self.bulk("to=example.com", {"scope": "all", "action": "hold"})
        self.assertEqual(reply.status, 303)
        location = reply.header("location") or ""
        self.assertEqual(parse_qs(urlsplit(location).query),
                         {"to": ["example.com"], "done": ["held"], "count": ["3"]})  # fmt: skip
        self.assertEqual(await self.f.held(), {**{i: True for i in com}, **{i: False for i in org}})
        self.assertEqual(self.changed, [])  # holding makes nothing due
        page = await self.b.get(location)
        self.assertIn("3 message(s) held.", page.text)
        self.assertEqual(sorted(ids(await self.b.get("/admin/queue/?hold=yes"))), sorted(com))
        # Selected messages, which must also match the filter.
        reply = await self.bulk("to=example.com", {"scope": "selected", "action": "release", "id": [com[0], org[0]]})
        self.assertIn("count=1", reply.header("location") or "")
        self.assertEqual(await self.f.held(), {com[0]: False, com[1]: True, com[2]: True, org[0]: False, org[1]: False})
        self.assertEqual(self.changed, [None])  # a release kicks the queue
        # Nothing selected: nothing changes (not "every message").
        reply = await self.bulk("", {"scope": "selected", "action": "release"})
        self.assertIn("error=noselection", reply.header("location") or "")
        self.assertIn("No messages were selected", (await self.b.get(reply.header("location") or "")).text)
        reply = await self.bulk(f"ids={org[1]}", {"scope": "selected", "action": "hold", "id": [com[0]]})
        self.assertIn("error=noselection", reply.header("location") or "")
        self.assertEqual(await self.f.held(), {com[0]: False, com[1]: True, com[2]: True, org[0]: False, org[1]: False})
        # A bad action or filter changes nothing either.
        token = (await self.b.get("/admin/queue/")).csrf()
        for fields in ({"action": "drop", "scope": "all"}, {"action": "hold", "scope": "all", "next": "soon"},
                       {"action": "hold", "id": "x"}):  # fmt: skip
            reply = await self.b.post("/admin/queue/", {"csrf_token": token, **fields})
            self.assertEqual(reply.status, 400, fields)
        # Without the CSRF token: 403, nothing held.
        reply = await self.b.post("/admin/queue/", {"action": "hold", "scope": "all"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(await self.f.held(), {com[0]: False, com[1]: True, com[2]: True, org[0]: False, org[1]: False})

    async def test_account_session_cannot_act(self) -> None:
        sent = await self.f.send("a1@example.com")
        b = self.f.browser()
        await b.login_account()
        token = (await b.get("/account/suppressions/")).csrf()
        reply = await b.post("/admin/queue/", {"csrf_token": token, "action": "hold", "scope": "all"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(await self.f.held(), {sent[0]: False})


def _next_attempts(cursor: Any) -> list[tuple[int, int]]:
    cursor.execute("SELECT id, CAST(round(next_attempt * 1000000) AS BIGINT) FROM queue_msg")
    return [(int(r[0]), int(r[1])) for r in cursor.fetchall()]


class RoutingTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()

    async def test_admin_api_still_works(self) -> None:
        reply = await self.b.request("POST", "/admin/api/QueueSize", data=b'{"params": []}', origin=False,
                                     headers={"Content-Type": "application/json"}, auth=("admin", ADMIN_PASSWORD))  # fmt: skip
        self.assertEqual((reply.status, reply.json), (200, {"result": 0}))
        reply = await self.b.request("POST", "/admin/api/QueueSize", data=b'{"params": []}', origin=False,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        self.assertEqual(reply.status, 401)
        reply = await self.b.get("/admin/api")
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/api/"))
        self.assertIn("Admin API", (await self.b.get("/admin/api/")).text)

    async def test_routing(self) -> None:
        await self.b.login_admin()
        for path, location in (("/admin", "/admin/"), ("/admin/queue", "/admin/queue/"), ("/admin/", "/admin/queue/"),
                               ("/account", "/account/")):  # fmt: skip
            reply = await self.b.get(path)
            self.assertEqual((reply.status, reply.header("location")), (303, location), path)
        reply = await self.b.get("/admin/nothing/here")
        self.assertEqual(reply.status, 404)
        self.assertIn("There is no page at this address.", reply.text)
        reply = await self.b.get("/admin/queue/nothing")
        self.assertEqual(reply.status, 404)
        reply = await self.b.request("DELETE", "/admin/queue/")
        self.assertEqual(reply.status, 405)
        css = await self.b.get("/admin/static/webui.css")
        self.assertEqual((css.status, css.header("content-type")), (200, "text/css; charset=utf-8"))
        self.assertEqual((await self.b.get("/account/static/webui.js")).status, 200)
        self.assertEqual((await self.b.get("/admin/static/nothing.css")).status, 404)
        index = await self.b.get("/")
        self.assertIn('href="/admin/"', index.text)
        self.assertIn('href="/account/"', index.text)
        # Pages carry the security headers.
        page = await self.b.get("/admin/queue/")
        self.assertIn("script-src 'self'", page.header("content-security-policy") or "")
        self.assertEqual(page.header("x-frame-options"), "deny")
        self.assertEqual(page.header("cache-control"), "no-store")
        # The webapi is still where it was.
        reply = await self.b.post("/webapi/v0/SuppressionList", {"request": "{}"}, auth=("mox@localhost", "moxmoxmox"),
                                  origin=False)  # fmt: skip
        self.assertEqual((reply.status, reply.json), (200, {"Suppressions": []}))

    async def test_wiring(self) -> None:
        parts, _ = build_parts(self.f.config, reactor)
        # One failed-login limiter for the webapi, SMTP AUTH, the admin API and the pages.
        self.assertIs(parts.webui.auth_limiter, parts.webapi.auth_limiter)
        self.assertIs(parts.admin.auth_limiter, parts.webapi.auth_limiter)
        self.assertIs(parts.webui.verifier, parts.verifier)
        self.assertIs(parts.webui.queue, parts.admin.ops)
        self.assertIs(parts.webui.methods, parts.webapi.methods)
        self.assertIs(parts.webui.accounts, parts.webapi.accounts)
        self.assertEqual(parts.webui.sessions.key_path, self.f.config.data_dir / "webui-session.key")
        self.assertTrue(parts.webui.localserve)
