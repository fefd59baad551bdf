"""The admin queue page: filters, keyset pagination, bulk hold/release, and that the
admin API and routing around it still work."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from moxtw.app import build_parts
from moxtw.localserve import ADMIN_PASSWORD
from moxtw.store import admin as sa
from moxtw.store import outbox
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
        for fields in ({"action": "frobnicate", "scope": "all"}, {"action": "hold", "scope": "all", "next": "soon"},
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
        for path, location in (("/admin", "/admin/"), ("/admin/queue", "/admin/queue/"), ("/admin/", "/admin/dashboard/"),
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


def form_fields(page: Any, css_class: str, index: int = 0) -> dict[str, Any]:
    """The hidden fields (repeated ones as lists) of the ``index``-th form with class
    ``css_class`` on ``page``, as a browser would send them."""
    form = page.text.split(f'class="{css_class}">')[index + 1].split("</form>", 1)[0]
    fields: dict[str, Any] = {}
    for name, value in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form):
        value = html.unescape(value)
        if name in fields:
            fields[name] = [*(fields[name] if isinstance(fields[name], list) else [fields[name]]), value]
        else:
            fields[name] = value
    return fields


def main(page: Any) -> str:
    return page.text.split("<main", 1)[1].split("</main>", 1)[0]


class QueueDetailTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()
        await self.b.login_admin()

    async def send_with_extra(self) -> int:
        request = {"To": [{"Address": "a&b@example.com"}], "Subject": "<i>hello</i>", "Text": "hi",
                   "Extra": {"order": "<42>"}}  # fmt: skip
        reply = await self.f.browser().post("/webapi/v0/Send", {"request": json.dumps(request)}, origin=False,
                                            auth=("mox@localhost", "moxmoxmox"))  # fmt: skip
        self.assertEqual(reply.status, 200, reply.text)
        msg_id: int = reply.json["Submissions"][0]["QueueMsgID"]
        return msg_id

    async def test_detail_shows_fields_and_history(self) -> None:
        msg = await self.send_with_extra()
        (other,) = await self.f.send("c@example.org")
        await self.f.attempt(msg, outbox.DELAYED, code=451, secode="2.0", error="<script>alert(1)</script> later",
                             remote_host="mx.example.com", remote_ip="192.0.2.1", tls=True)  # fmt: skip
        # The list links each row to its page.
        listing = await self.b.get("/admin/queue/")
        self.assertIn(f'href="/admin/queue/{msg}"', listing.text)
        self.assertIn(f'href="/admin/queue/{other}"', listing.text)
        page = await self.b.get(f"/admin/queue/{msg}")
        self.assertEqual(page.status, 200, page.text)
        text = main(page)
        self.assertIn(f"Queued message {msg}", text)
        for label, value in (("State", "queued"), ("Account", "mox"), ("From", "mox@localhost"),
                             ("To", "a&amp;b@example.com"), ("Subject", "&lt;i&gt;hello&lt;/i&gt;"),
                             ("Attempts", "1 of at most 8"), ("Last error", "451 4.2.0 &lt;script&gt;alert(1)"),
                             ("RequireTLS", "default"), ("Transport", "default"), ("Extra", "<dt>order</dt>"),
                             ("Extra", "<dd>&lt;42&gt;</dd>")):  # fmt: skip
            self.assertRegex(text, rf"<dt>{re.escape(label)}</dt><dd>[^\n]*{re.escape(value)}", label)
        for label in ("Next attempt", "Last attempt", "Queued", "Message-ID", "Size"):
            self.assertIn(f"<dt>{label}</dt>", text)
        self.assertNotIn("<script>alert", page.text)
        self.assertNotIn("<i>hello", page.text)
        self.assertIn("<caption>Delivery attempts</caption>", text)
        self.assertIn("<td>451</td><td>4.2.0</td><td>&lt;script&gt;alert(1)&lt;/script&gt; later</td>", text)
        self.assertIn("mx.example.com (192.0.2.1)", text)
        # The actions post to the list's bulk endpoint for this message alone.
        fields = form_fields(page, "bulk")
        self.assertEqual((fields["ids"], fields["scope"], fields["back"]), (str(msg), "all", str(msg)))
        for button in ("Hold", "Release", "Fail", "Drop", "Reschedule", "Set RequireTLS"):
            self.assertIn(f">{button}</button>", text)

    async def test_unknown_and_retired_ids(self) -> None:
        (msg,) = await self.f.send("a@example.com")
        for path in ("/admin/queue/999", "/admin/queue/0", "/admin/queue/99999999999999999999999"):
            page = await self.b.get(path)
            self.assertEqual(page.status, 404, path)
            self.assertNotIn("Traceback", page.text)
        self.assertIn("There is no message 999 in the queue.", (await self.b.get("/admin/queue/999")).text)
        # A message that left the queue: to its retired record.
        await self.f.ui.queue.drop(sa.Filter(ids=(msg,)))
        reply = await self.b.get(f"/admin/queue/{msg}")
        self.assertEqual((reply.status, reply.header("location")), (303, f"/admin/retired/{msg}"))
        # Not logged in: to the login page.
        reply = await self.f.browser().get(f"/admin/queue/{msg}")
        self.assertEqual(reply.status, 303)
        self.assertIn("/admin/login", reply.header("location") or "")

    async def test_detail_actions(self) -> None:
        msg, other = await self.f.send("a@example.com", "b@example.com")
        page = await self.b.get(f"/admin/queue/{msg}")
        reply = await self.b.post("/admin/queue/", {**form_fields(page, "bulk"), "action": "hold"})
        self.assertEqual((reply.status, reply.header("location")), (303, f"/admin/queue/{msg}?done=held&count=1"))
        self.assertEqual(await self.f.held(), {msg: True, other: False})
        page = await self.b.get(reply.header("location") or "")
        self.assertIn("1 message(s) held.", page.text)
        self.assertIn("<dt>State</dt><dd>held</dd>", page.text)
        reply = await self.b.post("/admin/queue/", {**form_fields(page, "bulk"), "action": "requiretls",
                                                    "require_tls": "yes"})  # fmt: skip
        self.assertEqual(reply.status, 303)
        self.assertEqual(await self.f.rows("queue_msg", "require_tls"), {msg: (1,), other: (None,)})
        # Drop from the message's page: confirm, then back to the list (the message is gone).
        page = await self.b.get(f"/admin/queue/{msg}")
        confirm = await self.b.post("/admin/queue/", {**form_fields(page, "bulk"), "action": "drop"})
        self.assertEqual(confirm.status, 200)
        self.assertIn(f'href="/admin/queue/{msg}">Cancel</a>', confirm.text)
        reply = await self.b.post("/admin/queue/", {**form_fields(confirm, "confirm"), "action": "drop"})
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/queue/?done=dropped&count=1"))
        self.assertEqual(list(await self.f.held()), [other])
        self.assertEqual((await self.f.rows("queue_retired", "event"))[msg], ("canceled",))


class BulkActionTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()
        await self.b.login_admin()
        self.com = await self.f.send("a1@example.com", "a2@example.com")
        self.org = await self.f.send("b1@example.org")
        self.changed: list[None] = []
        self.f.parts.admin.ops.on_changed = lambda: self.changed.append(None)

    async def bulk(self, query: str, fields: dict[str, Any]) -> Any:
        page = await self.b.get(f"/admin/queue/?{query}")
        self.assertEqual(page.status, 200, page.text)
        return await self.b.post("/admin/queue/", {**form_fields(page, "bulk"), **fields})

    async def next_attempts(self) -> dict[int, float]:
        return {k: v[0] for k, v in (await self.f.rows("queue_msg", "next_attempt")).items()}

    async def test_reschedule(self) -> None:
        before = await self.next_attempts()
        start = time.time()
        reply = await self.bulk("to=example.com", {"scope": "all", "action": "reschedule", "minutes": "30",
                                                   "how": "set"})  # fmt: skip
        end = time.time()
        self.assertEqual(parse_qs(urlsplit(reply.header("location") or "").query),
                         {"to": ["example.com"], "done": ["rescheduled"], "count": ["2"]})  # fmt: skip
        after = await self.next_attempts()
        for i in self.com:
            self.assertTrue(start + 1800 - 1 <= after[i] <= end + 1800 + 1, (after[i], start))
        self.assertEqual(after[self.org[0]], before[self.org[0]])
        self.assertEqual(self.changed, [None])
        self.assertIn("Next attempt of 2 message(s) changed.", (await self.b.get(reply.header("location") or "")).text)
        # Add minutes (may be negative), to the selected rows.
        reply = await self.bulk("", {"scope": "selected", "id": [self.com[0]], "action": "reschedule",
                                     "minutes": "-10", "how": "add"})  # fmt: skip
        self.assertIn("count=1", reply.header("location") or "")
        moved = await self.next_attempts()
        self.assertAlmostEqual(moved[self.com[0]], after[self.com[0]] - 600, places=3)
        self.assertEqual(moved[self.com[1]], after[self.com[1]])
        # Bad input: 400, nothing changes.
        for fields in ({"minutes": "soon", "how": "set"}, {"minutes": "", "how": "set"}, {"minutes": "5", "how": "x"},
                       {"minutes": str(10**9), "how": "add"}):  # fmt: skip
            reply = await self.bulk("", {"scope": "all", "action": "reschedule", **fields})
            self.assertEqual(reply.status, 400, fields)
            self.assertNotIn("Traceback", reply.text)
        self.assertEqual(await self.next_attempts(), moved)

    async def test_require_tls(self) -> None:
        msgs = [*self.com, *self.org]
        for value, stored in (("yes", 1), ("no", 0), ("default", None)):
            reply = await self.bulk("", {"scope": "all", "action": "requiretls", "require_tls": value})
            self.assertIn("done=requiretls&count=3", reply.header("location") or "")
            self.assertEqual(await self.f.rows("queue_msg", "require_tls"), {i: (stored,) for i in msgs})
        reply = await self.bulk("account=mox", {"scope": "selected", "id": self.org, "action": "requiretls",
                                                "require_tls": "yes"})  # fmt: skip
        self.assertEqual(await self.f.rows("queue_msg", "require_tls"),
                         {**{i: (None,) for i in self.com}, self.org[0]: (1,)})  # fmt: skip
        reply = await self.bulk("", {"scope": "all", "action": "requiretls", "require_tls": "maybe"})
        self.assertEqual(reply.status, 400)
        self.assertIn("RequireTLS: expected yes, no or default", reply.text)

    async def test_fail_and_drop_ask_first(self) -> None:
        # Fail: a confirmation page, nothing changed yet.
        confirm = await self.bulk("to=example.com", {"scope": "all", "action": "fail"})
        self.assertEqual(confirm.status, 200)
        self.assertIn("<h1>Fail messages?</h1>", confirm.text)
        self.assertIn("This applies to 2 message(s):", confirm.text)
        self.assertEqual(sorted(int(i) for i in re.findall(r'href="/admin/queue/(\d+)"', main(confirm))), self.com)
        self.assertEqual(list(await self.f.held()), [*self.com, *self.org])
        fields = form_fields(confirm, "confirm")
        self.assertEqual((fields["confirm"], fields["scope"], fields["to"]), ("yes", "all", "example.com"))
        # Without the CSRF token the confirmed form changes nothing either.
        no_token = {k: v for k, v in fields.items() if k != "csrf_token"}
        reply = await self.b.post("/admin/queue/", {**no_token, "action": "fail"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(list(await self.f.held()), [*self.com, *self.org])
        reply = await self.b.post("/admin/queue/", {**fields, "action": "fail"})
        self.assertEqual(parse_qs(urlsplit(reply.header("location") or "").query),
                         {"to": ["example.com"], "done": ["failed"], "count": ["2"]})  # fmt: skip
        self.assertEqual(list(await self.f.held()), self.org)
        retired = await self.f.rows("queue_retired", "event, success")
        self.assertEqual({i: retired[i] for i in self.com}, {i: ("failed", 0) for i in self.com})
        self.assertIn("2 message(s) failed", (await self.b.get(reply.header("location") or "")).text)
        # A failure DSN went to the sender's Inbox, as with moxtw queue fail.
        inbox = await self.f.parts.store.db.run("dsns", _message_count, "mox")
        self.assertEqual(inbox, 2)
        # Drop of a selection: the confirmation keeps the selection.
        confirm = await self.bulk("", {"scope": "selected", "id": self.org, "action": "drop"})
        self.assertIn("<h1>Drop messages?</h1>", confirm.text)
        self.assertIn("This applies to 1 message(s):", confirm.text)
        fields = form_fields(confirm, "confirm")
        self.assertEqual((fields["scope"], fields["id"]), ("selected", str(self.org[0])))
        reply = await self.b.post("/admin/queue/", {**fields, "action": "drop"})
        self.assertIn("done=dropped&count=1", reply.header("location") or "")
        self.assertEqual(await self.f.held(), {})
        self.assertEqual((await self.f.rows("queue_retired", "event"))[self.org[0]], ("canceled",))
        # Nothing left to apply to: the confirmation says so.
        confirm = await self.bulk("", {"scope": "all", "action": "drop"})
        self.assertIn("No queued message matches any more", confirm.text)

    async def test_without_csrf_token_nothing_changes(self) -> None:
        before = await self.f.rows("queue_msg", "hold, next_attempt, require_tls")
        for fields in ({"action": "hold"}, {"action": "release"}, {"action": "fail", "confirm": "yes"},
                       {"action": "drop", "confirm": "yes"}, {"action": "reschedule", "minutes": "5", "how": "set"},
                       {"action": "requiretls", "require_tls": "yes"}):  # fmt: skip
            reply = await self.b.post("/admin/queue/", {"scope": "all", **fields})
            self.assertEqual(reply.status, 403, fields)
            reply = await self.b.post("/admin/queue/", {"scope": "all", "csrf_token": "wrong", **fields})
            self.assertEqual(reply.status, 403, fields)
        self.assertEqual(await self.f.rows("queue_msg", "hold, next_attempt, require_tls"), before)
        self.assertEqual(await self.f.rows("queue_retired", "event"), {})


def _message_count(cursor: Any, account: str) -> int:
    cursor.execute("SELECT count(*) FROM message WHERE account = ?", (account,))
    return int(cursor.fetchone()[0])
