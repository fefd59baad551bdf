"""The admin API over real HTTP on a loopback port, with the real store behind it."""

from __future__ import annotations

import base64
import email
import email.policy
from datetime import datetime, timedelta
from typing import Any

from twisted.trial.unittest import TestCase

from moxtw.admin.api import encode_result
from tests.admin.fixture import ADMIN, AdminFixture, ids_filter

MSG_FIELDS = [
    "ID", "BaseID", "Queued", "Hold", "SenderAccount", "SenderLocalpart", "SenderDomain", "SenderDomainStr",
    "FromID", "RecipientLocalpart", "RecipientDomain", "RecipientDomainStr", "Attempts", "MaxAttempts",
    "DialedIPs", "NextAttempt", "LastAttempt", "Results", "Has8bit", "SMTPUTF8", "IsDMARCReport", "IsTLSReport",
    "Size", "MessageID", "MsgPrefix", "Subject", "DSNUTF8", "Transport", "RequireTLS", "FutureReleaseRequest",
    "Extra",
]
RETIRED_FIELDS = [
    "ID", "BaseID", "Queued", "SenderAccount", "SenderLocalpart", "SenderDomainStr", "FromID",
    "RecipientLocalpart", "RecipientDomain", "RecipientDomainStr", "Attempts", "MaxAttempts", "DialedIPs",
    "LastAttempt", "Results", "Has8bit", "SMTPUTF8", "IsDMARCReport", "IsTLSReport", "Size", "MessageID",
    "Subject", "Transport", "RequireTLS", "FutureReleaseRequest", "Extra", "LastActivity", "RecipientAddress",
    "Success", "KeepUntil",
]
SORT = {"Field": "", "LastID": 0, "Last": "", "Asc": False}


def rfc3339(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class AuthTests(TestCase):
    async def test_basic_auth_with_admin_password(self) -> None:
        f = await AdminFixture(self).start()
        reply = await f.admin_post("QueueSize", {"params": []}, auth=None)
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.headers.getRawHeaders("www-authenticate"), ['Basic realm="moxtw admin"'])
        self.assertEqual(reply.json["error"]["code"], "user:badAuth")
        reply = await f.admin_post("QueueSize", {"params": []}, auth=("admin", "wrong-password"))
        self.assertEqual(reply.status, 401)
        self.assertIn("wrong admin password", reply.json["error"]["message"])
        # The account's webapi password is not the admin password; any user name works.
        reply = await f.admin_post("QueueSize", {"params": []}, auth=("mox@localhost", "moxmoxmox"))
        self.assertEqual(reply.status, 401)
        reply = await f.admin_post("QueueSize", {"params": []}, auth=("anyone", ADMIN[1]))
        self.assertEqual((reply.status, reply.json), (200, {"result": 0}))

    async def test_failed_logins_are_limited(self) -> None:
        f = await AdminFixture(self).start()
        for _ in range(10):
            reply = await f.admin_post("QueueSize", {"params": []}, auth=("admin", "wrong-password"))
            self.assertEqual(reply.status, 401)
        # Over the limit, even the right password is refused until the window passes.
        reply = await f.admin_post("QueueSize", {"params": []})
        self.assertEqual(reply.status, 429)
        f.clock.advance(61)
        self.assertEqual(await f.admin("QueueSize"), 0)

    async def test_disabled_without_admin_password_hash(self) -> None:
        f = await AdminFixture(self, edit=lambda text: text.replace(
            text[text.index("admin_password_hash ="):].split("\n", 1)[0], 'admin_password_hash = ""')).start()
        self.assertEqual(f.config.admin_password_hash, "")
        reply = await f.admin_post("QueueSize", {"params": []})
        self.assertEqual(reply.status, 403)
        self.assertIn("the admin API is disabled: no admin_password_hash is configured", reply.json["error"]["message"])
        page = await f.http.get(f.admin_base)
        self.assertIn(b"The admin API is disabled", await page.content())


class ProtocolTests(TestCase):
    async def setUp(self) -> None:
        self.f = await AdminFixture(self).start()

    async def test_request_errors(self) -> None:
        f = self.f
        reply = await f.admin_post("QueueSmash", {"params": []})
        self.assertEqual((reply.status, reply.json["error"]["code"]), (404, "sherpaBadFunction"))
        self.assertEqual(reply.json["error"]["message"], 'function "QueueSmash" does not exist')
        response = await f.http.get(f.admin_base + "QueueSize", auth=ADMIN)
        self.assertEqual(response.code, 405)
        self.assertIn("POST", (await response.json())["error"]["message"])

        async def user_error(body: Any, **kwargs: Any) -> str:
            reply = await f.admin_post("QueueList", body, **kwargs)
            self.assertEqual(reply.status, 200, reply.body)
            self.assertEqual(reply.json["error"]["code"], "user:error", reply.body)
            self.assertNotIn("Traceback", reply.json["error"]["message"])
            return str(reply.json["error"]["message"])

        self.assertIn("application/json", await user_error({"params": [{}, SORT]}, content_type="text/plain"))
        self.assertIn("invalid JSON request body", await user_error(b"{nope"))
        self.assertIn("invalid JSON request body", await user_error(b"[1]"))
        self.assertIn("params must be an array", await user_error({"params": "x"}))
        self.assertEqual(await user_error({"params": [{}]}), "bad number of parameters, got 1, want 2")
        self.assertEqual(await user_error({"params": [[], SORT]}), "parameter 1 (filter): expected an object, got []")
        self.assertEqual(await user_error({"params": [{"Bogus": 1}, SORT]}),
                         'parameter 1 (filter): json: unknown field "Bogus"')
        self.assertIn("cannot unmarshal string into Go struct field Filter.IDs",
                      await user_error({"params": [{"IDs": "1"}, SORT]}))
        self.assertIn("Submitted filter '<yesterday'", await user_error({"params": [{"Submitted": "<yesterday"}, SORT]}))
        self.assertIn("must start with < or >", await user_error({"params": [{"NextAttempt": "now"}, SORT]}))
        self.assertIn("Max must be 0", await user_error({"params": [{"Max": -1}, SORT]}))
        self.assertIn("unknown sort field 'Subject'", await user_error({"params": [{}, {"Field": "Subject"}]}))
        self.assertIn("Last", await user_error({"params": [{}, {"LastID": 3}]}))
        self.assertIn("parsing time", await user_error({"params": [{}, {"LastID": 3, "Last": "yesterday"}]}))
        reply = await f.admin_post("QueueNextAttemptSet", {"params": [{}, "5"]})
        self.assertEqual(reply.json["error"], {"code": "user:error",
                                               "message": 'parameter 2 (minutes): expected an integer, got "5"'})
        reply = await f.admin_post("QueueHoldSet", {"params": [{}, None]})
        self.assertIn("expected true or false", reply.json["error"]["message"])

    async def test_pages(self) -> None:
        f = self.f
        root = await f.http.get(f.root)
        self.assertIn(b'href="/admin/api/"', await root.content())
        page = await f.http.get(f.admin_base)
        text = (await page.content()).decode()
        self.assertEqual(page.code, 200)
        for method in ("QueueList", "QueueHoldRuleAdd", "QueueFail", "RetiredList"):
            self.assertIn(method, text)

    def test_encode_result(self) -> None:
        self.assertEqual(encode_result(None), "null")
        self.assertEqual(encode_result([]), "[]")
        self.assertEqual(encode_result(3), "3")


class QueueMethodTests(TestCase):
    async def setUp(self) -> None:
        self.f = await AdminFixture(self).start()

    async def msgs(self, filt: dict[str, Any] | None = None, sort: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.f.admin("QueueList", filt or {}, sort or SORT)
        return result

    async def inbox(self) -> list[email.message.EmailMessage]:
        store = self.f.parts.store

        def read(cursor: Any) -> list[str]:
            cursor.execute("SELECT m.blob FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
                           " WHERE m.account = 'mox' AND b.name = 'Inbox' ORDER BY m.id")
            return [r[0] for r in cursor.fetchall()]

        return [email.message_from_bytes(await store.blobs.get(k), policy=email.policy.default)
                for k in await store.db.run("inbox", read)]

    async def test_list_shape(self) -> None:
        f = self.f
        a, b = await f.send("a@localhost", "b@localhost", Extra={"order": "42"})
        later = datetime.now().astimezone() + timedelta(hours=1)
        (c,) = await f.send("c@localhost", FutureRelease=later.replace(microsecond=0).isoformat())
        self.assertEqual(await f.admin("QueueSize"), 3)
        msgs = await self.msgs()
        # Latest next attempt first: the future release, then a and b (same time, ID descending).
        self.assertEqual([m["ID"] for m in msgs], [c, b, a])
        for m in msgs:
            self.assertEqual(list(m), MSG_FIELDS)
        m = msgs[2]
        self.assertEqual(m["BaseID"], a)
        self.assertEqual((m["SenderAccount"], m["SenderLocalpart"], m["SenderDomainStr"]), ("mox", "mox", "localhost"))
        self.assertEqual(m["SenderDomain"], {"IP": "", "Domain": {"ASCII": "localhost", "Unicode": ""}})
        self.assertEqual((m["RecipientLocalpart"], m["RecipientDomainStr"]), ("a", "localhost"))
        self.assertEqual((m["Attempts"], m["MaxAttempts"], m["Hold"]), (0, 0, False))
        self.assertEqual((m["LastAttempt"], m["Results"], m["DialedIPs"], m["DSNUTF8"]), (None, None, None, None))
        self.assertEqual((m["Subject"], m["Extra"], m["RequireTLS"], m["Transport"]), ("admin test", {"order": "42"}, None, ""))
        self.assertTrue(m["MessageID"].startswith("<") and m["MessageID"].endswith("@localhost>"))
        self.assertTrue(base64.b64decode(m["MsgPrefix"]).startswith(b"Received: "))
        self.assertLessEqual(abs((rfc3339(m["Queued"]) - datetime.now().astimezone()).total_seconds()), 600)
        self.assertEqual(rfc3339(msgs[0]["NextAttempt"]), later.replace(microsecond=0))
        self.assertNotEqual(msgs[0]["FutureReleaseRequest"], "")
        # The raw JSON is Go's: HTML-escaped like sherpa's encoder.
        raw = await f.admin_post("QueueList", {"params": [ids_filter(a), SORT]})
        self.assertIn(b'"MessageID":"\\u003c', raw.body)

    async def test_filters_and_pages(self) -> None:
        f = self.f
        a, b = await f.send("a@localhost", "bob@localhost")
        (c,) = await f.send("carol@localhost")
        self.assertEqual([m["ID"] for m in await self.msgs({"To": "bob@"})], [b])
        self.assertEqual([m["ID"] for m in await self.msgs({"IDs": [a, c]})], [c, a])
        self.assertEqual([m["ID"] for m in await self.msgs({"From": "mox@", "To": "nobody"})], [])
        self.assertEqual([m["ID"] for m in await self.msgs({"Submitted": ">-1h", "NextAttempt": "<1m"})], [c, b, a])
        self.assertEqual(await self.msgs({"Submitted": "<-1h"}), [])
        # Pages of one, in ascending order of queue time.
        seen = []
        sort = {"Field": "Queued", "Asc": True, "LastID": 0, "Last": ""}
        while True:
            page = await self.msgs({"Max": 1}, sort)
            if not page:
                break
            seen.append(page[0]["ID"])
            sort = {**sort, "LastID": page[0]["ID"], "Last": page[0]["Queued"]}
        self.assertEqual(seen, [a, b, c])

    async def test_operations(self) -> None:
        f = self.f
        a, b = await f.send("a@localhost", "b@localhost")
        (c,) = await f.send("c@localhost")
        self.assertEqual(await f.admin("QueueHoldSet", {"To": "b@"}, True), 1)
        self.assertEqual([m["ID"] for m in await self.msgs({"Hold": True})], [b])
        self.assertEqual(f.changed, [])
        self.assertEqual(await f.admin("QueueHoldSet", ids_filter(b), False), 1)
        self.assertEqual(len(f.changed), 1)  # released: the queue is kicked

        before = {m["ID"]: rfc3339(m["NextAttempt"]) for m in await self.msgs()}
        self.assertEqual(await f.admin("QueueNextAttemptAdd", ids_filter(a), 30), 1)
        self.assertEqual(await f.admin("QueueNextAttemptSet", ids_filter(b), 60), 1)
        self.assertEqual(len(f.changed), 3)
        after = {m["ID"]: rfc3339(m["NextAttempt"]) for m in await self.msgs()}
        self.assertEqual(after[a] - before[a], timedelta(minutes=30))
        self.assertGreaterEqual(after[b] - before[b], timedelta(minutes=59))
        self.assertEqual(after[c], before[c])

        self.assertEqual(await f.admin("QueueRequireTLSSet", ids_filter(a, c), True), 2)
        self.assertEqual(await f.admin("QueueRequireTLSSet", ids_filter(c), None), 1)
        self.assertEqual({m["ID"]: m["RequireTLS"] for m in await self.msgs()}, {a: True, b: None, c: None})

        self.assertEqual(await f.admin("QueueFail", ids_filter(a)), 1)
        self.assertEqual(await f.admin("QueueDrop", {"To": "b@"}), 1)
        self.assertEqual(await f.admin("QueueDrop", ids_filter(a, b)), 0)
        self.assertEqual([m["ID"] for m in await self.msgs()], [c])
        (dsn,) = await self.inbox()
        self.assertEqual(dsn["Subject"], "mail delivery failed")
        self.assertIn("delivery canceled by admin", dsn.get_body(("plain",)).get_content())

        retired = await f.admin("RetiredList", {}, SORT)
        self.assertEqual(sorted(r["ID"] for r in retired), [a, b])
        for r in retired:
            self.assertEqual(list(r), RETIRED_FIELDS)
            self.assertFalse(r["Success"])
            self.assertEqual(r["Results"][-1]["Error"], "delivery canceled by admin")
            self.assertEqual(rfc3339(r["KeepUntil"]) - rfc3339(r["LastActivity"]), timedelta(hours=72))
            self.assertEqual(r["RecipientAddress"], f"{r['RecipientLocalpart']}@localhost")
        self.assertEqual([r["ID"] for r in await f.admin("RetiredList", {"To": "a@"}, SORT)], [a])
        self.assertEqual(await f.admin("RetiredList", {"Success": True}, SORT), [])

        def events(cursor: Any) -> list[tuple[int, str, str]]:
            cursor.execute("SELECT queue_msg_id, kind, error FROM event ORDER BY id")
            return [tuple(r) for r in cursor.fetchall()]

        self.assertEqual(await f.parts.store.db.run("events", events), [
            (a, "failed", "delivery canceled by admin"),
            (b, "canceled", "delivery canceled by admin"),
        ])

    async def test_hold_rules(self) -> None:
        f = self.f
        (a,) = await f.send("a@localhost")
        self.assertEqual(await f.admin("QueueHoldRuleList"), [])
        rule = await f.admin("QueueHoldRuleAdd", {"Account": "mox", "RecipientDomainStr": "LOCALHOST"})
        self.assertEqual(rule, {
            "ID": rule["ID"], "Account": "mox", "SenderDomain": {"ASCII": "", "Unicode": ""},
            "RecipientDomain": {"ASCII": "localhost", "Unicode": ""}, "SenderDomainStr": "",
            "RecipientDomainStr": "localhost",
        })
        self.assertGreater(rule["ID"], 0)
        self.assertEqual(await f.admin("QueueHoldRuleList"), [rule])
        (b,) = await f.send("b@localhost")
        self.assertEqual({m["ID"]: m["Hold"] for m in await self.msgs()}, {a: True, b: True})
        unicode_rule = await f.admin("QueueHoldRuleAdd", {"SenderDomainStr": "xn--bcher-kva.example"})
        self.assertEqual(unicode_rule["SenderDomain"], {"ASCII": "xn--bcher-kva.example", "Unicode": "bücher.example"})
        self.assertEqual(unicode_rule["SenderDomainStr"], "bücher.example")
        self.assertIsNone(await f.admin("QueueHoldRuleRemove", rule["ID"]))
        self.assertEqual(await f.admin("QueueHoldRuleList"), [unicode_rule])
        self.assertEqual({m["ID"]: m["Hold"] for m in await self.msgs()}, {a: True, b: True})
        self.assertEqual(f.changed, [])
        error = await f.admin_error("QueueHoldRuleRemove", rule["ID"])
        self.assertEqual(error, {"code": "user:error", "message": f"no hold rule with ID {rule['ID']}"})
        error = await f.admin_error("QueueHoldRuleAdd", {"RecipientDomainStr": "no such.example"})
        self.assertIn("parsing recipient domain 'no such.example'", error["message"])
        error = await f.admin_error("QueueHoldRuleAdd", {"Account": "nobody"})
        self.assertEqual(error["message"], "unknown account 'nobody'")
