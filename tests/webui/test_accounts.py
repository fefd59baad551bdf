"""The admin account pages: the list, and every editable setting saved through SettingsOps
(file edited in place and atomically, applied to the running daemon without a restart),
secrets never shown, conflicts, validation errors, CSRF and unknown accounts."""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from moxtw.config import load_config
from moxtw.settings import ConfigReloader
from moxtw.store import admin as sa
from moxtw.webhooks import build_webhooks
from moxtw.webhooks.signing import new_secret, sign
from tests.webui.fixture import MOX, Browser, WebUIFixture
from tests.webui.test_account_settings import Receiver, form_fields

reactor: Any = _reactor

AUTH = "Bearer admin-authorization-value-0001"
AUTH2 = "Bearer admin-authorization-value-0002"
INCOMING_AUTH = "Basic aW5jb21pbmctc2VjcmV0LXZhbHVlLTAwMDM="


class AccountPagesTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        # As the daemon wires it: saves reload the file into the running configuration.
        reloader = ConfigReloader(self.f.parts.settings.live, reactor, install_signal=False)
        self.f.parts.settings.reload = reloader.request_reload
        assert self.f.config.source is not None
        self.path = self.f.config.source
        self.b = self.f.browser()
        reply = await self.b.login_admin()
        self.assertEqual(reply.status, 303)

    def receiver(self) -> tuple[Receiver, str]:
        receiver = Receiver()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return receiver, f"http://127.0.0.1:{port.getHost().port}"

    def webhooks(self) -> None:
        """The daemon's webhook sender (real treq client), kicked by admin operations."""
        (svc,) = build_webhooks(self.f.config, self.f.parts.store, reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.f.parts.admin.ops.on_changed = svc.kick

    async def save(self, name: str = "mox", b: Browser | None = None, **changes: Any) -> Any:
        """Post the account's settings form as shown, with ``changes``."""
        b = b or self.b
        page = await b.get(f"/admin/accounts/{name}")
        self.assertEqual(page.status, 200, page.text)
        fields = form_fields(page, f"/admin/accounts/{name}")
        fields.update(changes)
        return await b.post(f"/admin/accounts/{name}", fields)

    def text(self) -> str:
        return self.path.read_text()

    async def test_list(self) -> None:
        await self.f.parts.settings.save("other", {"outgoing_webhook.url": "http://127.0.0.1:9/o",
                                                   "max_outgoing_messages_per_day": 25})  # fmt: skip
        page = await self.b.get("/admin/accounts/")
        self.assertEqual(page.status, 200)
        self.assertIn('href="/admin/accounts/" aria-current="page"', page.text)
        self.assertIn("<caption>Accounts</caption>", page.text)
        rows = page.text.split("<tbody>", 1)[1].split("</tbody>", 1)[0].split("<tr>")[1:]
        self.assertEqual(len(rows), 2)
        mox, other = rows
        self.assertIn('<a href="/admin/accounts/mox">mox</a>', mox)
        self.assertIn("<td>localhost</td>", mox)
        self.assertIn("mox@localhost", mox)
        self.assertNotIn("@localhost,", mox.replace("mox@localhost,", ""))  # the catch-all is no login
        self.assertIn("FromID: mox+fromid@localhost", mox)
        self.assertIn("<td>none</td>", mox)
        self.assertIn("1000 messages, 200 first-time recipients", mox)
        self.assertIn('<a href="/admin/accounts/other">other</a>', other)
        self.assertIn("<td>outgoing</td>", other)
        self.assertIn("25 messages, 200 first-time recipients", other)
        # The admin area's index opens on the dashboard; the nav lists the pages.
        reply = await self.b.get("/admin/")
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/dashboard/"))
        nav = page.text.split('aria-label="Main"', 1)[1].split("</nav>", 1)[0]
        self.assertLess(nav.index("Dashboard"), nav.index("Queue"))
        self.assertLess(nav.index("Queue"), nav.index("Accounts"))
        self.assertLess(nav.index("Accounts"), nav.index("DNSBL"))

    async def test_round_trip_applied_without_restart(self) -> None:
        receiver, base = self.receiver()
        self.webhooks()
        secret = new_secret()
        page = await self.b.get("/admin/accounts/mox")
        self.assertEqual(page.status, 200)
        for label in ("Outgoing webhook URL", "Incoming webhook URL", "Keep retired messages", "Keep retired webhooks",
                      "FromID login addresses", "Messages per day", "First-time recipients per day",
                      "Login disabled"):  # fmt: skip
            self.assertIn(f">{label}</label>", page.text)
        self.assertIn(">Save settings</button>", page.text)
        self.assertIn('name="max_outgoing_messages_per_day" id="f-max_outgoing_messages_per_day" value="1000"',
                      page.text)  # fmt: skip
        self.assertIn('name="fromid_login_addresses" id="f-fromid_login_addresses" value="mox+fromid@localhost"',
                      page.text)  # fmt: skip
        inode = os.stat(self.path).st_ino
        reply = await self.save(**{
            "outgoing_webhook.url": f"{base}/old", "outgoing_webhook.authorization": AUTH,
            "outgoing_webhook.signing_secret": secret, "outgoing_webhook.events": ["canceled", "failed"],
            "outgoing_webhook.max_in_flight": "2",
            "incoming_webhook.url": f"{base}/in", "incoming_webhook.authorization": INCOMING_AUTH,
            "keep_retired_messages": "24h", "keep_retired_webhooks": "1h30m",
            "fromid_login_addresses": "mox+fromid@localhost\nmox+bulk@localhost",
            "max_outgoing_messages_per_day": "500", "max_first_time_recipients_per_day": "",
        })  # fmt: skip
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/accounts/mox?done=saved"), reply.text)

        # The file: edited in place (comments kept), replaced by a rename, no temp file left.
        text = self.text()
        self.assertIn("# Every address at localhost belongs to this account", text)
        self.assertIn("# Password for all login addresses of this account", text)
        self.assertIn(f'url = "{base}/old"', text)
        self.assertIn('keep_retired_webhooks = "1h30m"', text)
        self.assertIn("max_outgoing_messages_per_day = 500", text)
        self.assertNotIn("max_first_time_recipients_per_day", text)  # empty: the default
        self.assertNotEqual(os.stat(self.path).st_ino, inode)
        self.assertEqual([p.name for p in self.path.parent.iterdir() if p.name.startswith(f".{self.path.name}.")
                          and not p.name.endswith(".lock")], [])  # fmt: skip
        account = load_config(self.path).accounts["mox"]
        assert account.outgoing_webhook is not None and account.incoming_webhook is not None
        self.assertEqual(
            (account.outgoing_webhook.authorization, account.outgoing_webhook.signing_secret,
             set(account.outgoing_webhook.events), account.outgoing_webhook.max_in_flight,
             account.incoming_webhook.authorization, account.fromid_login_addresses,
             account.keep_retired_messages, account.max_first_time_recipients_per_day),
            (AUTH, secret, {"canceled", "failed"}, 2, INCOMING_AUTH, ("mox+fromid@localhost", "mox+bulk@localhost"),
             24 * 3600.0, 200),
        )  # fmt: skip

        # In effect in the running daemon at once: its configuration and address index.
        live = self.f.config.accounts["mox"]
        assert live.outgoing_webhook is not None
        self.assertEqual((live.outgoing_webhook.url, live.max_outgoing_messages_per_day, live.keep_retired_webhooks),
                         (f"{base}/old", 500, 5400.0))  # fmt: skip
        login = self.f.parts.accounts.login("mox+bulk@localhost")
        assert login is not None
        self.assertTrue(login.fromid)
        # The next webhook goes to the new URL, with the authorization and the signature.
        (msg,) = await self.f.send("a@example.com")
        await self.f.ui.queue.drop(sa.Filter(ids=(msg,)))
        await receiver.wait(1)
        path, headers, body = receiver.received[0]
        self.assertEqual((path, headers["authorization"]), ("/old", AUTH))
        self.assertEqual((json.loads(body)["Event"], json.loads(body)["QueueMsgID"]), ("canceled", msg))
        expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
        self.assertIn(expected, headers["webhook-signature"].split())

        # Shown again: values in the form, secrets only redacted.
        page = await self.b.get("/admin/accounts/mox?done=saved")
        self.assertIn("Settings saved; they are in effect now.", page.text)
        self.assertIn(f'value="{base}/old"', page.text)
        self.assertIn('value="mox+fromid@localhost, mox+bulk@localhost"', page.text)
        self.assertIn('value="canceled" id="f-outgoing_webhook.events-canceled" checked="checked"', page.text)
        for secret_text in (AUTH, secret, secret[6:22], INCOMING_AUTH, INCOMING_AUTH[6:20]):
            self.assertNotIn(secret_text, page.text)
        self.assertIn("Bearer \u20260001", page.text)
        self.assertIn("whsec_\u2026" + secret[-4:], page.text)
        self.assertIn('name="outgoing_webhook.authorization" id="f-outgoing_webhook.authorization" value=""',
                      page.text)  # fmt: skip
        self.assertIn('value="outgoing_webhook.signing_secret"', page.text)  # its "remove" checkbox

        # A new URL with the secrets left empty: kept.  The next webhook goes there.
        reply = await self.save(**{"outgoing_webhook.url": f"{base}/new"})
        self.assertEqual(reply.status, 303, reply.text)
        (msg2,) = await self.f.send("b@example.com")
        await self.f.ui.queue.drop(sa.Filter(ids=(msg2,)))
        await receiver.wait(2)
        path, headers, body = receiver.received[1]
        self.assertEqual((path, headers["authorization"], json.loads(body)["QueueMsgID"]), ("/new", AUTH, msg2))
        self.assertIn(expected.split(",")[0], headers["webhook-signature"])  # still signed (v1,...)

        # A new authorization replaces it; "remove" clears the signing secret.
        reply = await self.save(**{"outgoing_webhook.authorization": AUTH2,
                                   "remove": ["outgoing_webhook.signing_secret"]})  # fmt: skip
        self.assertEqual(reply.status, 303, reply.text)
        account = load_config(self.path).accounts["mox"]
        assert account.outgoing_webhook is not None
        self.assertEqual((account.outgoing_webhook.authorization, account.outgoing_webhook.signing_secret),
                         (AUTH2, ""))  # fmt: skip
        self.assertNotIn(secret, self.text())

        # The form as shown, posted again: nothing written.
        before = self.text()
        reply = await self.save()
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/accounts/mox?done=unchanged"))
        self.assertEqual(self.text(), before)

        # Login disabled, then allowed again; an empty URL removes a webhook.
        reply = await self.save(login_disabled="abuse report 123", **{"incoming_webhook.url": ""})
        self.assertEqual(reply.status, 303, reply.text)
        self.assertEqual(self.f.config.accounts["mox"].login_disabled, "abuse report 123")
        self.assertIsNone(self.f.config.accounts["mox"].incoming_webhook)
        self.assertNotIn("\n[accounts.mox.incoming_webhook]", self.text())
        self.assertEqual((await self.f.browser().login_account(MOX)).status, 403)
        reply = await self.save(login_disabled="")
        self.assertEqual(reply.status, 303, reply.text)
        self.assertEqual((await self.f.browser().login_account(MOX)).status, 303)
        # The comments around the account are still there after all these saves.
        self.assertIn("# Sends authenticated as this address get a unique MAIL FROM", self.text())

    async def test_conflict(self) -> None:
        page = await self.b.get("/admin/accounts/mox")
        stale = form_fields(page, "/admin/accounts/mox")
        # Changed meanwhile (another admin, the CLI, the account's owner).
        await self.f.parts.settings.save("mox", {"keep_retired_messages": "5h"})
        before = self.text()
        reply = await self.b.post("/admin/accounts/mox", {**stale, "max_outgoing_messages_per_day": "7"})
        self.assertEqual(reply.status, 409)
        self.assertIn("changed since they were read", reply.text)
        self.assertIn("The form now shows the current settings", reply.text)
        self.assertIn('name="keep_retired_messages" id="f-keep_retired_messages" value="5h"', reply.text)
        self.assertIn('id="f-max_outgoing_messages_per_day" value="1000"', reply.text)
        self.assertEqual(self.text(), before)
        self.assertEqual(self.f.config.accounts["mox"].max_outgoing_messages_per_day, 1000)
        # The form shown with the conflict carries the new version: saving it works.
        fields = form_fields(reply, "/admin/accounts/mox")
        reply = await self.b.post("/admin/accounts/mox", {**fields, "max_outgoing_messages_per_day": "7"})
        self.assertEqual(reply.status, 303, reply.text)
        self.assertEqual(self.f.config.accounts["mox"].max_outgoing_messages_per_day, 7)

    async def test_validation_errors_write_nothing(self) -> None:
        await self.f.parts.settings.save("mox", {"outgoing_webhook.url": "http://127.0.0.1:9/h",
                                                 "outgoing_webhook.authorization": AUTH})  # fmt: skip
        before = self.text()
        cases = [
            ({"outgoing_webhook.url": "ftp://example.org/"}, "outgoing_webhook"),
            ({"keep_retired_messages": "forever"}, "keep_retired_messages"),
            ({"max_outgoing_messages_per_day": "many"}, "max_outgoing_messages_per_day: expected an integer"),
            ({"outgoing_webhook.max_in_flight": "0"}, "max_in_flight"),
            ({"fromid_login_addresses": "someone@example.org"}, "fromid_login_addresses"),
            ({"remove": ["outgoing_webhook.authorization"], "outgoing_webhook.authorization": AUTH2},
             "give a new value or remove it, not both"),
            ({"remove": ["keep_retired_messages"]}, "is not a secret that can be removed"),
            ({"outgoing_webhook.signing_secret": "not-a-secret"}, "signing_secret"),
        ]  # fmt: skip
        for changes, message in cases:
            reply = await self.save(**changes)
            self.assertEqual(reply.status, 400, (changes, reply.text))
            self.assertIn("Not saved", reply.text)
            self.assertIn(message, reply.text, changes)
            self.assertIn('class="error" role="alert"', reply.text)
            self.assertNotIn("Traceback", reply.text)
            self.assertNotIn(str(self.path), reply.text)
            # The secrets posted or stored are not shown back.
            self.assertNotIn(AUTH, reply.text)
            self.assertNotIn(AUTH2, reply.text)
            self.assertEqual(self.text(), before, changes)
        # The form shows what was posted, to be corrected.
        reply = await self.save(keep_retired_messages="forever")
        self.assertIn('id="f-keep_retired_messages" value="forever"', reply.text)
        self.assertEqual(self.f.config.accounts["mox"].keep_retired_messages, 72 * 3600.0)

    async def test_csrf_and_unknown_accounts(self) -> None:
        page = await self.b.get("/admin/accounts/mox")
        fields = form_fields(page, "/admin/accounts/mox")
        before = self.text()
        for token in (None, "wrong"):
            posted = {**fields, "max_outgoing_messages_per_day": "3"}
            if token is None:
                del posted["csrf_token"]
            else:
                posted["csrf_token"] = token
            reply = await self.b.post("/admin/accounts/mox", posted)
            self.assertEqual(reply.status, 403)
            self.assertIn("Invalid form token", reply.text)
        # From another site, with the right token: refused too.
        reply = await self.b.post("/admin/accounts/mox", {**fields, "max_outgoing_messages_per_day": "3"},
                                  headers={"Origin": "http://evil.example"})  # fmt: skip
        self.assertEqual(reply.status, 403)
        self.assertEqual(self.text(), before)
        self.assertEqual(self.f.config.accounts["mox"].max_outgoing_messages_per_day, 1000)

        for path in ("/admin/accounts/nobody", "/admin/accounts/%3Cb%3E", "/admin/accounts/mox/extra"):
            reply = await self.b.get(path)
            self.assertEqual(reply.status, 404, path)
            self.assertNotIn("Traceback", reply.text)
            self.assertNotIn("<b>", reply.text.split("<main", 1)[1])
        reply = await self.b.post("/admin/accounts/nobody", {**fields, "max_outgoing_messages_per_day": "3"})
        self.assertEqual(reply.status, 404)
        self.assertIn("No such account", reply.text)
        self.assertEqual(self.text(), before)

        # Not for account sessions, nor without a session.
        mox = self.f.browser()
        await mox.login_account()
        reply = await mox.get("/admin/accounts/mox")
        self.assertEqual(reply.status, 303)
        self.assertTrue((reply.header("location") or "").startswith("/admin/login"))
        reply = await mox.post("/admin/accounts/mox", {**fields, "max_outgoing_messages_per_day": "3"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(self.text(), before)
