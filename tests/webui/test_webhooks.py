"""The admin webhook pages: queued and retired lists (filters, keyset paging), a webhook's
page (attempts, escaped payload, no Authorization), Reschedule and Cancel through the same
operations as ``moxtw hooks reschedule|cancel``, CSRF."""

from __future__ import annotations

import html
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import TestCase

from moxtw.localserve import ADMIN_PASSWORD
from moxtw.store import webhooks as sw
from tests.webui.fixture import WebUIFixture

URL = "http://127.0.0.1:9/hooks"
SECRET = "Bearer s3cr3t-t0ken-abcdefghijklmnop"
HOUR = 3600.0


def ids(page: Any) -> list[int]:
    """The webhook IDs listed (the ID links of the rows)."""
    return [int(i) for i in re.findall(r'aria-label="Webhook (\d+)"', page.text)]


def link(page: Any, rel: str) -> str | None:
    found = re.search(rf'href="([^"]*)" rel="{rel}"', page.text)
    return html.unescape(found.group(1)) if found else None


class WebhookPageTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()
        await self.b.login_admin()
        self.changed: list[None] = []
        self.f.parts.admin.ops.on_changed = lambda: self.changed.append(None)
        self.now = time.time()

    # --- store helpers ------------------------------------------------------------------------

    async def hook(self, *, account: str = "mox", kind: str = "delivered", created: float | None = None,
                   next_attempt: float | None = None, payload: Any = None, url: str = URL, auth: str = SECRET,
                   queue_msg_id: int = 0) -> int:  # fmt: skip
        """A queued webhook (not due: the daemon's sender leaves it alone); its ID."""
        created = self.now - 60 if created is None else created
        next_attempt = self.now + HOUR if next_attempt is None else next_attempt
        body = json.dumps(payload if payload is not None else {"Event": kind})

        def insert(cursor: Any) -> int:
            cursor.execute(
                "INSERT INTO event (account, kind, queue_msg_id, message_id, subject, created, admitted, url,"
                " auth_header, payload, webhook_id, attempts, next_attempt)"
                " VALUES (?, ?, ?, '<m@localhost>', 'hello', ?, 1, ?, ?, ?, 'msg_x', 0, ?)",
                (account, kind, queue_msg_id, created, url, auth, body, next_attempt),
            )
            return int(cursor.lastrowid)

        hook_id: int = await self.f.parts.store.db.run("insert hook", insert)
        return hook_id

    async def attempt(self, hook_id: int, *, success: bool, code: int, error: str = "", response: bytes = b"") -> None:
        """One attempt of ``hook_id`` through the webhook queue's claim and finish (the
        other webhooks excluded); after a failure it is due again in an hour."""
        now = time.time()

        def run(cursor: Any) -> None:
            cursor.execute("UPDATE event SET next_attempt = ? WHERE id = ?", (now - 1, hook_id))
            cursor.execute("SELECT id FROM event WHERE id != ?", (hook_id,))
            others = [int(r[0]) for r in cursor.fetchall()]
            claimed = sw.claim_due(cursor, now, slots=lambda t: 1, exclude=others, backoff=lambda n: 60.0,
                                   lease_minimum=60.0, new_token=lambda: f"t{hook_id}-{now}",
                                   keep=lambda a: 72 * HOUR)  # fmt: skip
            assert [c.row.id for c in claimed.claimed] == [hook_id], claimed
            token = claimed.claimed[0].token
            sw.finish_attempt(cursor, sw.HookFinish(hook_id=hook_id, token=token, start=now, duration=0.25,
                                                    now=now + 0.25, success=success, code=code, error=error,
                                                    response=response, next_attempt=now + HOUR,
                                                    keep=72 * HOUR))  # fmt: skip

        await self.f.parts.store.db.run("attempt", run)

    async def queued(self) -> dict[int, float]:
        """Queued webhook ID → next attempt."""

        def read(cursor: Any) -> dict[int, float]:
            cursor.execute("SELECT id, next_attempt FROM event WHERE admitted = 1 ORDER BY id")
            return {int(r[0]): float(r[1]) for r in cursor.fetchall()}

        result: dict[int, float] = await self.f.parts.store.db.run("queued", read)
        return result

    async def retired_ids(self) -> list[int]:
        hooks = await self.f.parts.admin.ops.list_retired_hooks(sw.HookRetiredFilter(), sw.HookSort())
        return sorted(h.id for h in hooks)

    async def post_form(self, path: str, page: Any, fields: dict[str, Any], form_class: str = "bulk") -> Any:
        """Post the form with ``class="<form_class>"`` of ``page`` as a browser would: its
        hidden fields plus ``fields``."""
        form = page.text.split(f'class="{form_class}">', 1)[1].split("</form>", 1)[0]
        hidden = {k: html.unescape(v) for k, v in re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', form)}
        return await self.b.post(path, {**hidden, **fields})

    # --- tests --------------------------------------------------------------------------------

    async def test_list_and_filters(self) -> None:
        a = await self.hook(account="mox", kind="delivered", created=self.now - 2 * HOUR)
        b = await self.hook(account="other", kind="failed", next_attempt=self.now + 10)
        c = await self.hook(account="mox", kind="incoming", url="http://127.0.0.1:9/in?<b>x</b>")
        page = await self.b.get("/admin/webhooks/")
        self.assertEqual(page.status, 200)
        self.assertIn("3 webhook(s) in the queue.", page.text)
        self.assertEqual(sorted(ids(page)), [a, b, c])
        self.assertIn('aria-current="page">Webhooks</a>', page.text)
        self.assertIn("http://127.0.0.1:9/in?&lt;b&gt;x&lt;/b&gt;", page.text)
        self.assertNotIn("<b>x</b>", page.text)
        self.assertNotIn("s3cr3t", page.text)
        self.assertEqual(ids(await self.b.get("/admin/webhooks/?account=other")), [b])
        self.assertEqual(ids(await self.b.get("/admin/webhooks/?event=incoming")), [c])
        self.assertEqual(ids(await self.b.get("/admin/webhooks/?event=failed&account=mox")), [])
        self.assertEqual(ids(await self.b.get("/admin/webhooks/?next=%3C10m")), [b])
        self.assertEqual(sorted(ids(await self.b.get("/admin/webhooks/?submitted=%3E-1h"))), [b, c])
        self.assertEqual(ids(await self.b.get(f"/admin/webhooks/?ids={a},{b}&account=mox")), [a])
        # Latest next attempt first by default, ties by ID; submitted ascending on request.
        self.assertEqual(ids(await self.b.get("/admin/webhooks/")), [c, a, b])
        self.assertEqual(ids(await self.b.get("/admin/webhooks/?sort=submitted&order=asc")), [a, b, c])
        for query, message in (("next=soon", "must start with &lt; or &gt;"), ("event=sent", "event: expected one of"),
                               ("sort=url", "sort: expected one of"), ("n=501", "page size: must be from 1"),
                               ("ids=x", "webhook ID: expected a number"), ("after=1", "after_id: expected")):  # fmt: skip
            page = await self.b.get(f"/admin/webhooks/?{query}")
            self.assertEqual(page.status, 400, query)
            self.assertIn(message, page.text)
            self.assertNotIn("Traceback", page.text)

    async def test_keyset_pagination(self) -> None:
        # Eight webhooks, next attempts with ties (equal times are ordered by ID).
        made = [await self.hook(next_attempt=self.now + HOUR + 60 * (i % 3)) for i in range(8)]
        expected = sorted(made, key=lambda i: (60 * (made.index(i) % 3), i), reverse=True)
        for order, want in (("desc", expected), ("asc", expected[::-1])):
            url: str | None = f"/admin/webhooks/?n=3&order={order}"
            pages = []
            while url is not None:
                page = await self.b.get(url)
                pages.append(ids(page))
                url = link(page, "next")
                self.assertLess(len(pages), 5)
            self.assertEqual([len(p) for p in pages], [3, 3, 2])
            self.assertEqual(sum(pages, []), want, order)
            back = []
            url = link(page, "prev")
            while url is not None:
                page = await self.b.get(url)
                back.append(ids(page))
                url = link(page, "prev")
            self.assertEqual(back, pages[-2::-1])
        # Retired webhooks page the same way; links keep the filter.
        await self.f.parts.admin.ops.cancel_hooks(sw.HookFilter(ids=tuple(made)))
        url = "/admin/webhooks/retired/?n=3&account=mox&sort=submitted"
        pages = []
        while url is not None:
            page = await self.b.get(url)
            self.assertEqual(page.status, 200)
            pages.append(ids(page))
            nxt = link(page, "next")
            if nxt is not None:
                params = parse_qs(urlsplit(nxt).query)
                self.assertEqual((params["account"], params["sort"], params["n"]), (["mox"], ["submitted"], ["3"]))
            url = nxt
        self.assertEqual(sorted(sum(pages, [])), sorted(made))
        self.assertEqual([len(p) for p in pages], [3, 3, 2])

    async def test_queued_webhook_page(self) -> None:
        payload = {"Subject": "<script>alert(1)</script>", "Extra": {"k": "v & w"}}
        h = await self.hook(payload=payload, queue_msg_id=12)
        await self.attempt(h, success=False, code=500, error="<em>server error</em>",
                           response=b"<html>oops \x00\xff</html>")  # fmt: skip
        await self.attempt(h, success=False, code=0, error="connection refused")
        page = await self.b.get(f"/admin/webhooks/{h}")
        self.assertEqual(page.status, 200, page.text)
        self.assertIn(f"Queued webhook {h}", page.text)
        self.assertIn(URL, page.text)
        self.assertIn("sent (not shown)", page.text)
        self.assertNotIn("s3cr3t", page.text)
        self.assertIn('href="/admin/queue/12"', page.text)
        # The payload, indented and escaped.
        self.assertIn('  "Subject": "&lt;script&gt;alert(1)&lt;/script&gt;"', page.text)
        self.assertIn('"k": "v &amp; w"', page.text)
        self.assertNotIn("<script>alert", page.text)
        # Every attempt: status code, error, duration, the response's start (escaped).
        self.assertIn("<caption>Webhook attempts</caption>", page.text)
        rows = re.findall(r"<tr><td>(\d+)</td>", page.text)
        self.assertEqual(rows, ["1", "2"])
        self.assertIn("<td>500</td>", page.text)
        self.assertIn("&lt;em&gt;server error&lt;/em&gt;", page.text)
        self.assertIn("connection refused", page.text)
        self.assertIn("0.250s", page.text)
        self.assertIn("&lt;html&gt;oops \ufffd\ufffd&lt;/html&gt;", page.text)
        self.assertIn("2 of at most 12", page.text)

    async def test_retired_webhook_page_and_unknown_ids(self) -> None:
        h = await self.hook(kind="failed")
        await self.attempt(h, success=True, code=200, response=b"thanks")
        page = await self.b.get(f"/admin/webhooks/{h}")
        self.assertEqual(page.status, 200)
        self.assertIn(f"Retired webhook {h}", page.text)
        self.assertIn("<dd>delivered</dd>", page.text)
        self.assertIn("<code>thanks</code>", page.text)
        self.assertNotIn("s3cr3t", page.text)
        retired = await self.b.get("/admin/webhooks/retired/")
        self.assertEqual(ids(retired), [h])
        self.assertIn("HTTP 200 ok", retired.text)
        self.assertEqual(ids(await self.b.get("/admin/webhooks/retired/?success=no")), [])
        self.assertEqual(ids(await self.b.get("/admin/webhooks/retired/?event=failed&activity=%3E-1h")), [h])
        self.assertEqual((await self.b.get("/admin/webhooks/retired/?success=maybe")).status, 400)
        for path in (f"/admin/webhooks/{h + 1000}", "/admin/webhooks/0", "/admin/webhooks/99999999999999999999",
                     "/admin/webhooks/abc"):  # fmt: skip
            page = await self.b.get(path)
            self.assertEqual(page.status, 404, path)
            self.assertNotIn("Traceback", page.text)

    async def test_reschedule_like_the_cli(self) -> None:
        a, b, c = [await self.hook() for _ in range(3)]
        page = await self.b.get("/admin/webhooks/")
        before = time.time()
        reply = await self.post_form("/admin/webhooks/", page, {"id": [str(a), str(b)], "action": "reschedule",
                                                                "minutes": "30", "how": "set"})  # fmt: skip
        after = time.time()
        self.assertEqual(reply.status, 303)
        location = reply.header("location") or ""
        self.assertEqual(parse_qs(urlsplit(location).query), {"done": ["rescheduled"], "count": ["2"]})
        self.assertIn("Next attempt of 2 webhook(s) changed.", (await self.b.get(location)).text)
        queued = await self.queued()
        for h in (a, b):
            self.assertTrue(before + 1800 - 1 <= queued[h] <= after + 1800 + 1, queued[h] - before)
        self.assertAlmostEqual(queued[c], self.now + HOUR, places=3)
        self.assertEqual(len(self.changed), 1)
        # "Add" through the page moves the next attempt exactly as the admin API's
        # HookNextAttemptAdd (what `moxtw hooks reschedule --add` calls) does.
        page = await self.b.get(f"/admin/webhooks/?ids={a}")
        await self.post_form("/admin/webhooks/", page, {"scope": "all", "action": "reschedule", "minutes": "-15",
                                                        "how": "add"})  # fmt: skip
        api = {"params": [{"IDs": [b]}, -15]}
        reply = await self.f.browser().request("POST", "/admin/api/HookNextAttemptAdd", data=json.dumps(api).encode(),
                                               headers={"Content-Type": "application/json"}, origin=False,
                                               auth=("admin", ADMIN_PASSWORD))  # fmt: skip
        self.assertEqual(reply.json, {"result": 1})
        moved = await self.queued()
        self.assertAlmostEqual(moved[a] - queued[a], -900, places=3)
        self.assertAlmostEqual(moved[b] - queued[b], -900, places=3)
        self.assertEqual(moved[c], queued[c])
        # From a webhook's page: back to that page with the notice.
        page = await self.b.get(f"/admin/webhooks/{c}")
        reply = await self.post_form("/admin/webhooks/", page, {"action": "reschedule", "minutes": "5", "how": "add"})
        self.assertEqual(urlsplit(reply.header("location") or "").path, f"/admin/webhooks/{c}")
        self.assertAlmostEqual((await self.queued())[c] - queued[c], 300, places=3)
        # Bad input: a clear 400, nothing changed.
        for fields in ({"action": "reschedule", "minutes": "soon", "how": "set"},
                       {"action": "reschedule", "minutes": "5", "how": "later"},
                       {"action": "explode"}):  # fmt: skip
            reply = await self.post_form("/admin/webhooks/", page, fields)
            self.assertEqual(reply.status, 400, fields)
            self.assertNotIn("Traceback", reply.text)
        self.assertAlmostEqual((await self.queued())[c] - queued[c], 300, places=3)

    async def test_cancel(self) -> None:
        # Account other keeps no retired webhooks, mox keeps them for 72 hours.
        a, b = await self.hook(account="mox"), await self.hook(account="other")
        c = await self.hook(account="mox", kind="failed")
        # Selected rows: at once.
        page = await self.b.get("/admin/webhooks/")
        reply = await self.post_form("/admin/webhooks/", page, {"id": str(a), "action": "cancel"})
        self.assertEqual(parse_qs(urlsplit(reply.header("location") or "").query),
                         {"done": ["canceled"], "count": ["1"]})  # fmt: skip
        self.assertEqual(sorted(await self.queued()), [b, c])
        self.assertEqual(await self.retired_ids(), [a])
        detail = await self.b.get(f"/admin/webhooks/{a}")
        self.assertIn(f"Retired webhook {a}", detail.text)
        self.assertIn("<dd>canceled</dd>", detail.text)
        self.assertIn(sw.CANCELED_ERROR, detail.text)
        # Nothing selected: nothing canceled (an empty selection is not "everything").
        reply = await self.post_form("/admin/webhooks/", page, {"action": "cancel"})
        self.assertIn("error=noselection", reply.header("location") or "")
        self.assertEqual(sorted(await self.queued()), [b, c])
        # Every webhook matching the filter: a confirmation first, then only those.
        page = await self.b.get("/admin/webhooks/?account=mox&event=failed")
        confirm = await self.post_form("/admin/webhooks/", page, {"scope": "all", "action": "cancel"})
        self.assertEqual(confirm.status, 200)
        self.assertIn("Cancel webhooks?", confirm.text)
        self.assertEqual(ids(confirm), [c])
        self.assertEqual(sorted(await self.queued()), [b, c])
        reply = await self.post_form("/admin/webhooks/", confirm, {"action": "cancel"}, form_class="confirm")
        self.assertEqual(reply.status, 303)
        self.assertEqual(parse_qs(urlsplit(reply.header("location") or "").query),
                         {"account": ["mox"], "event": ["failed"], "done": ["canceled"], "count": ["1"]})  # fmt: skip
        self.assertEqual(sorted(await self.queued()), [b])
        self.assertEqual(await self.retired_ids(), [a, c])
        # From a webhook's page: to the list (account other keeps no retired record).
        page = await self.b.get(f"/admin/webhooks/{b}")
        reply = await self.post_form("/admin/webhooks/", page, {"action": "cancel"})
        location = reply.header("location") or ""
        self.assertEqual(urlsplit(location).path, "/admin/webhooks/")
        self.assertIn("1 webhook(s) canceled.", (await self.b.get(location)).text)
        self.assertEqual(await self.queued(), {})
        self.assertEqual(await self.retired_ids(), [a, c])
        self.assertEqual((await self.b.get(f"/admin/webhooks/{b}")).status, 404)
        self.assertEqual(len(self.changed), 3)

    async def test_post_without_csrf_token_changes_nothing(self) -> None:
        h = await self.hook()
        before = await self.queued()
        for fields in ({"id": str(h), "action": "cancel"},
                       {"id": str(h), "action": "reschedule", "minutes": "5", "how": "add"},
                       {"id": str(h), "action": "cancel", "csrf_token": "forged"}):  # fmt: skip
            reply = await self.b.post("/admin/webhooks/", fields)
            self.assertEqual(reply.status, 403, fields)
        self.assertEqual(await self.queued(), before)
        self.assertEqual(await self.retired_ids(), [])
        self.assertEqual(self.changed, [])
        # And without a session: a login redirect or a 403, never the page.
        anonymous = self.f.browser()
        self.assertEqual((await anonymous.get("/admin/webhooks/")).status, 303)
        self.assertEqual((await anonymous.get(f"/admin/webhooks/{h}")).status, 303)
        self.assertEqual((await anonymous.post("/admin/webhooks/", {"id": str(h), "action": "cancel"})).status, 403)
        self.assertEqual(await self.queued(), before)
