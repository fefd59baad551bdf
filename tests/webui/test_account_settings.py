"""The account settings page: webhook settings and keep periods saved through SettingsOps
(owner keys only) and applied without a restart, secrets never shown, the test webhook
through the real webhook queue to a real receiver on loopback, and Recent webhooks."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from moxtw.config import load_config
from moxtw.settings import ConfigReloader
from moxtw.store import admin as sa
from moxtw.store import webhooks as sw
from moxtw.webhooks import build_webhooks
from moxtw.webhooks.signing import new_secret, sign
from tests.webui.fixture import OTHER, Browser, WebUIFixture

reactor: Any = _reactor

AUTH = "Bearer old-authorization-value-0001"
AUTH2 = "Bearer new-authorization-value-0002"


class Receiver(Resource):
    """A webhook receiver: records every POST (path, headers, body) and answers 200 with
    a body that needs escaping."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.received.append((request.path.decode(), headers, request.content.read()))
        for n, d in list(self._waiting):
            if len(self.received) >= n:
                self._waiting.remove((n, d))
                d.callback(None)
        request.setResponseCode(200)
        return b"thanks <b>receiver</b>"

    async def wait(self, n: int) -> None:
        """Until ``n`` requests came."""
        if len(self.received) >= n:
            return
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((n, d))
        await d


def form_fields(page: Any, action: str) -> dict[str, Any]:
    """What a browser posts for the form with ``action``, unchanged: text inputs with their
    values, checked checkboxes (lists), hidden fields."""
    form = page.text.split(f'action="{action}"', 1)[1].split("</form>", 1)[0]
    fields: dict[str, Any] = {}
    for tag in re.findall(r"<input [^>]*>", form):
        attrs = {k: html.unescape(v) for k, v in re.findall(r'([a-z-]+)="([^"]*)"', tag)}
        if attrs.get("type") == "checkbox":
            if "checked" in attrs:
                fields.setdefault(attrs["name"], []).append(attrs["value"])
        elif "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return fields


class AccountSettingsTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        # As the daemon wires it: saves reload the file into the running configuration.
        reloader = ConfigReloader(self.f.parts.settings.live, reactor, install_signal=False)
        self.f.parts.settings.reload = reloader.request_reload
        self.path = self.f.config.source
        assert self.path is not None
        self.mox = await self.login()
        self.other = await self.login(OTHER)

    async def login(self, login: tuple[str, str] | None = None) -> Browser:
        b = self.f.browser()
        reply = await (b.login_account(login) if login else b.login_account())
        self.assertEqual(reply.status, 303)
        return b

    def receiver(self) -> tuple[Receiver, str]:
        receiver = Receiver()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return receiver, f"http://127.0.0.1:{port.getHost().port}"

    def webhooks(self) -> Any:
        """The daemon's webhook sender (real treq client), kicked by admin operations."""
        (svc,) = build_webhooks(self.f.config, self.f.parts.store, reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        self.f.parts.admin.ops.on_changed = svc.kick
        return svc

    async def save(self, b: Browser, **changes: Any) -> Any:
        """Post the settings form as shown, with ``changes``."""
        page = await b.get("/account/settings/")
        self.assertEqual(page.status, 200)
        fields = form_fields(page, "/account/settings/")
        fields.update(changes)
        return await b.post("/account/settings/", fields)

    def file_text(self) -> str:
        assert self.path is not None
        return self.path.read_text()

    async def test_round_trip_applied_without_restart(self) -> None:
        # The pages use the daemon's one SettingsOps (the admin API's).
        self.assertIs(self.f.parts.webui.settings, self.f.parts.settings)
        receiver, base = self.receiver()
        self.webhooks()
        secret = new_secret()
        page = await self.mox.get("/account/settings/")
        self.assertEqual(page.status, 200)
        for label in ("Outgoing webhook URL", "Incoming webhook URL", "Keep retired messages",
                      "Keep retired webhooks"):  # fmt: skip
            self.assertIn(f">{label}</label>", page.text)
        self.assertIn('name="keep_retired_messages" id="f-keep_retired_messages" value="72h"', page.text)
        self.assertIn(">Save settings</button>", page.text)
        self.assertIn("Set an outgoing webhook URL first.", page.text)

        reply = await self.save(self.mox, **{
            "outgoing_webhook.url": f"{base}/old", "outgoing_webhook.authorization": AUTH,
            "outgoing_webhook.signing_secret": secret, "outgoing_webhook.events": ["canceled", "failed"],
            "keep_retired_webhooks": "48h",
        })  # fmt: skip
        self.assertEqual((reply.status, reply.header("location")), (303, "/account/settings/?done=saved"), reply.text)
        text = self.file_text()
        self.assertIn(f'url = "{base}/old"', text)
        self.assertIn(AUTH, text)
        self.assertIn('keep_retired_webhooks = "48h"', text)
        self.assertIn("# Every address at localhost belongs to this account", text)  # comments stay
        account = load_config(self.path).accounts["mox"]
        assert account.outgoing_webhook is not None
        self.assertEqual(set(account.outgoing_webhook.events), {"canceled", "failed"})
        # In effect in the running daemon at once.
        live = self.f.config.accounts["mox"]
        assert live.outgoing_webhook is not None
        self.assertEqual((live.outgoing_webhook.url, live.keep_retired_webhooks), (f"{base}/old", 48 * 3600.0))

        page = await self.mox.get("/account/settings/?done=saved")
        self.assertIn("Settings saved; they are in effect now.", page.text)
        self.assertIn(f'value="{base}/old"', page.text)
        self.assertIn('value="canceled" id="f-outgoing_webhook.events-canceled" checked="checked"', page.text)
        self.assertIn('value="delivered" id="f-outgoing_webhook.events-delivered" />', page.text)
        # Secrets: redacted, never in full.
        self.assertNotIn(AUTH, page.text)
        self.assertNotIn(secret, page.text)
        self.assertNotIn(secret[6:20], page.text)
        self.assertIn("Bearer \u20260001", page.text)
        self.assertIn('name="outgoing_webhook.authorization" id="f-outgoing_webhook.authorization" value=""',
                      page.text)  # fmt: skip

        # The next event goes to the URL, with the authorization and the signature.
        (msg,) = await self.f.send("a@example.com")
        await self.f.ui.queue.drop(sa.Filter(ids=(msg,)))
        await receiver.wait(1)
        path, headers, body = receiver.received[0]
        self.assertEqual((path, headers["authorization"]), ("/old", AUTH))
        event = json.loads(body)
        self.assertEqual((event["Event"], event["QueueMsgID"]), ("canceled", msg))
        expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
        self.assertIn(expected, headers["webhook-signature"].split())

        # A new URL, the authorization left empty (kept): the next event goes there.
        reply = await self.save(self.mox, **{"outgoing_webhook.url": f"{base}/new"})
        self.assertEqual(reply.status, 303, reply.text)
        self.assertIn(AUTH, self.file_text())
        (msg2,) = await self.f.send("b@example.com")
        await self.f.ui.queue.drop(sa.Filter(ids=(msg2,)))
        await receiver.wait(2)
        path, headers, body = receiver.received[1]
        self.assertEqual((path, headers["authorization"], json.loads(body)["QueueMsgID"]), ("/new", AUTH, msg2))

        # A new authorization replaces it; "remove" clears the signing secret.
        reply = await self.save(self.mox, **{"outgoing_webhook.authorization": AUTH2,
                                             "remove": ["outgoing_webhook.signing_secret"]})  # fmt: skip
        self.assertEqual(reply.status, 303, reply.text)
        account = load_config(self.path).accounts["mox"]
        assert account.outgoing_webhook is not None
        self.assertEqual((account.outgoing_webhook.authorization, account.outgoing_webhook.signing_secret),
                         (AUTH2, ""))  # fmt: skip
        self.assertEqual(set(account.outgoing_webhook.events), {"canceled", "failed"})  # as shown, kept
        # Nothing changed: said so, nothing written.
        before = self.file_text()
        reply = await self.save(self.mox)
        self.assertEqual(reply.header("location"), "/account/settings/?done=unchanged")
        self.assertEqual(self.file_text(), before)
        # An empty URL removes the webhook.
        reply = await self.save(self.mox, **{"outgoing_webhook.url": "", "outgoing_webhook.events": []})
        self.assertEqual(reply.status, 303, reply.text)
        self.assertIsNone(self.f.config.accounts["mox"].outgoing_webhook)
        self.assertIsNone(re.search(r"^\[accounts\.mox\.outgoing_webhook\]", self.file_text(), re.M))

    async def test_errors_change_nothing(self) -> None:
        secret = new_secret()
        reply = await self.save(self.mox, **{"outgoing_webhook.url": "http://127.0.0.1:9/hook",
                                             "outgoing_webhook.signing_secret": secret})  # fmt: skip
        self.assertEqual(reply.status, 303, reply.text)
        before = self.file_text()
        # Validation by the loader: 400, the form shown again with the message, no secret.
        for changes, message in (
            ({"keep_retired_messages": "forever"}, "keep_retired_messages"),
            ({"outgoing_webhook.url": "ftp://example.com/x"}, "expected an http or https URL"),
            ({"outgoing_webhook.events": ["delivered", "<bogus>"]}, 'unknown event "&lt;bogus&gt;"'),
            ({"incoming_webhook.signing_secret": "not-a-secret", "incoming_webhook.url": "http://127.0.0.1:9/in"},
             "expected a secret starting with"),
            ({"incoming_webhook.authorization": "Bearer x"}, "Incoming webhook authorization: set the webhook"),
            ({"remove": ["outgoing_webhook.signing_secret"], "outgoing_webhook.signing_secret": new_secret()},
             "give a new value or remove it, not both"),
            ({"remove": ["outgoing_webhook.url"]}, "is not a secret that can be removed"),
        ):  # fmt: skip
            reply = await self.save(self.mox, **changes)
            self.assertEqual(reply.status, 400, changes)
            self.assertIn("Not saved", reply.text)
            self.assertNotIn(str(self.path), reply.text)
            self.assertIn(message, reply.text)
            self.assertIn(">Save settings</button>", reply.text)
            self.assertNotIn(secret, reply.text)
            self.assertNotIn("Traceback", reply.text)
            self.assertEqual(self.file_text(), before, changes)
        # The posted (non-secret) values are shown again to correct them.
        reply = await self.save(self.mox, keep_retired_messages="forever")
        self.assertIn('name="keep_retired_messages" id="f-keep_retired_messages" value="forever"', reply.text)

        # Settings the owner may not change are refused, not ignored.
        for key, value in (("max_outgoing_messages_per_day", "5"), ("fromid_login_addresses", "mox@localhost"),
                           ("login_disabled", "yes")):  # fmt: skip
            reply = await self.save(self.mox, **{key: value})
            self.assertEqual(reply.status, 400, key)
            self.assertIn(f"accounts.mox.{key}: cannot be changed here", reply.text)
            self.assertEqual(self.file_text(), before, key)
        self.assertEqual(self.f.config.accounts["mox"].max_outgoing_messages_per_day, 1000)

        # Changed meanwhile (by the admin, say): 409 with the current settings, nothing written.
        page = await self.mox.get("/account/settings/")
        await self.f.parts.settings.save("mox", {"keep_retired_messages": "24h"})
        changed = self.file_text()
        fields = form_fields(page, "/account/settings/")
        fields["outgoing_webhook.url"] = "http://127.0.0.1:9/mine"
        reply = await self.mox.post("/account/settings/", fields)
        self.assertEqual(reply.status, 409)
        self.assertIn("changed since they were read", reply.text)
        self.assertIn('id="f-keep_retired_messages" value="24h"', reply.text)
        self.assertIn('value="http://127.0.0.1:9/hook"', reply.text)
        self.assertNotIn(secret, reply.text)
        self.assertEqual(self.file_text(), changed)
        # Saving the form shown with the conflict works.
        reply = await self.mox.post("/account/settings/", {**form_fields(reply, "/account/settings/"),
                                                           "outgoing_webhook.url": "http://127.0.0.1:9/mine"})  # fmt: skip
        self.assertEqual(reply.status, 303, reply.text)
        self.assertIn('url = "http://127.0.0.1:9/mine"', self.file_text())
        after = self.file_text()

        # Without the CSRF token: 403, nothing changes; nor with another account's token.
        fields = form_fields(await self.mox.get("/account/settings/"), "/account/settings/")
        fields["keep_retired_messages"] = "1h"
        del fields["csrf_token"]
        self.assertEqual((await self.mox.post("/account/settings/", fields)).status, 403)
        other_token = (await self.other.get("/account/settings/")).csrf()
        self.assertEqual((await self.mox.post("/account/settings/", {**fields, "csrf_token": other_token})).status, 403)
        self.assertEqual((await self.mox.post("/account/settings/test", {})).status, 403)
        self.assertEqual(self.file_text(), after)
        self.assertEqual(await self.f.parts.store.db.run("size", sw.hook_queue_size), 0)

    async def test_accounts_are_separate(self) -> None:
        reply = await self.save(self.mox, **{"outgoing_webhook.url": "http://127.0.0.1:9/mox",
                                             "outgoing_webhook.authorization": AUTH})  # fmt: skip
        self.assertEqual(reply.status, 303, reply.text)
        # Account other sees and changes only its own settings, whatever the form says.
        page = await self.other.get("/account/settings/?account=mox")
        self.assertNotIn("127.0.0.1:9/mox", page.text)
        self.assertNotIn("\u20260001", page.text)
        self.assertIn("account other.", page.text)
        reply = await self.save(self.other, account="mox", keep_retired_messages="5h")
        self.assertEqual(reply.status, 303, reply.text)
        config = load_config(self.path)
        self.assertEqual(config.accounts["other"].keep_retired_messages, 5 * 3600.0)
        self.assertEqual(config.accounts["mox"].keep_retired_messages, 72 * 3600.0)
        # Its test webhook: refused, it has no URL (nothing queued, not mox's URL).
        page = await self.other.get("/account/settings/")
        self.assertIn('type="submit" disabled="disabled">Send test webhook', page.text)
        reply = await self.other.post("/account/settings/test", {"csrf_token": page.csrf()})
        self.assertEqual(reply.status, 400)
        self.assertIn("account other has no outgoing webhook URL", reply.text)
        self.assertEqual(await self.f.parts.store.db.run("size", sw.hook_queue_size), 0)

    async def test_send_test_webhook(self) -> None:
        receiver, base = self.receiver()
        svc = self.webhooks()
        secret = new_secret()
        # The event filter does not stop the test webhook.
        reply = await self.save(self.mox, **{"outgoing_webhook.url": f"{base}/hooks",
                                             "outgoing_webhook.authorization": AUTH,
                                             "outgoing_webhook.signing_secret": secret,
                                             "outgoing_webhook.events": ["delivered"]})  # fmt: skip
        self.assertEqual(reply.status, 303, reply.text)
        page = await self.mox.get("/account/settings/")
        self.assertIn(f"<code>{base}/hooks</code>", page.text)
        self.assertIn("No webhooks.", page.text)
        forms = page.text.split('action="/account/settings/test"', 1)[1].split("</form>", 1)[0]
        self.assertIn('<button type="submit">Send test webhook</button>', forms)
        reply = await self.mox.post("/account/settings/test", {"csrf_token": page.csrf()})
        self.assertEqual(reply.status, 303, reply.text)
        location = reply.header("location") or ""
        hook_id = int(re.findall(r"id=(\d+)", location)[0])

        await receiver.wait(1)
        path, headers, body = receiver.received[0]
        self.assertEqual((path, headers["authorization"], headers["x-mox-webhook-id"]), ("/hooks", AUTH, str(hook_id)))
        self.assertEqual(headers["x-mox-webhook-attempt"], "1")
        expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
        self.assertIn(expected, headers["webhook-signature"].split())
        event = json.loads(body)
        self.assertEqual(
            {k: event[k] for k in ("Version", "Event", "DSN", "Suppressing", "QueueMsgID", "FromID", "MessageID",
                                   "Subject", "SMTPCode", "SMTPEnhancedCode", "Extra")},
            {"Version": 0, "Event": "unrecognized", "DSN": False, "Suppressing": False, "QueueMsgID": 0, "FromID": "",
             "MessageID": "", "Subject": "moxtw test webhook", "SMTPCode": 0, "SMTPEnhancedCode": "", "Extra": {}},
        )  # fmt: skip
        self.assertIn("no message is involved", event["Error"])

        # Retired after its answer; shown under Recent webhooks with the answer.
        while await self.f.parts.store.db.run("size", sw.hook_queue_size):
            await deferLater(reactor, 0.01, lambda: None)
        await svc.settle()
        page = await self.mox.get(location)
        self.assertIn(f"Test webhook {hook_id} queued", page.text)
        self.assertIn("<caption>Recent webhooks</caption>", page.text)
        recent = page.text.split("<caption>Recent webhooks</caption>", 1)[1].split("</table>", 1)[0]
        self.assertIn(f"<td>{hook_id}</td>", recent)
        self.assertIn("unrecognized (test)", recent)
        self.assertIn(f"{base}/hooks", recent)
        self.assertIn("delivered", recent)
        self.assertIn("<td>200</td>", recent)
        self.assertIn("thanks &lt;b&gt;receiver&lt;/b&gt;", recent)
        self.assertNotIn(AUTH, page.text)
        self.assertNotIn(secret, page.text)
        # Only this account's webhooks.
        page = await self.other.get("/account/settings/")
        self.assertNotIn("unrecognized (test)", page.text)
        self.assertIn("No webhooks.", page.text)
