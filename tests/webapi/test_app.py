"""The webapi over real HTTP: transport, every error code path, Send and suppressions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from tests.webapi.fixture import LOGIN, WebAPIFixture, b64

MINIMAL = {"To": [{"Address": "mox@localhost"}], "Text": "hi"}


class Base(TestCase):
    edit = None

    async def fixture(self) -> WebAPIFixture:
        return await WebAPIFixture(self, self.edit).start()

    def assertError(self, reply, code: str, message: str | None = None, status: int = 400) -> None:
        self.assertEqual(reply.status, status, reply.body)
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        body = reply.json
        self.assertEqual(set(body), {"Code", "Message"})
        self.assertEqual(body["Code"], code, body)
        if message is not None:
            self.assertEqual(body["Message"], message)
        else:
            self.assertTrue(body["Message"])


class TransportTests(Base):
    async def test_base_redirects(self) -> None:
        f = await self.fixture()
        response = await f.http.get(f.base, allow_redirects=False)
        self.assertEqual(response.code, 303)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/webapi/v0/"])
        await response.content()

    async def test_index_lists_methods(self) -> None:
        f = await self.fixture()
        reply = await f.get("v0/")
        self.assertEqual(reply.status, 200)
        for method in ("Send", "SuppressionAdd", "MessageGet", "MessageMove"):
            self.assertIn(f'href="{method}"'.encode(), reply.body)

    async def test_method_page(self) -> None:
        f = await self.fixture()
        reply = await f.get("v0/Send")
        self.assertEqual(reply.status, 200)
        self.assertIn(b'<textarea id="request" name="request"', reply.body)
        self.assertIn(b"&quot;AttachedFiles&quot;", reply.body)
        reply = await f.get("v0/MessageRawGet")
        self.assertIn(b"Method has a non-JSON response.", reply.body)

    async def test_security_headers(self) -> None:
        f = await self.fixture()
        reply = await f.call("SuppressionList", {})
        self.assertEqual(reply.status, 200)
        self.assertEqual(reply.headers.getRawHeaders(b"x-frame-options"), [b"deny"])
        self.assertEqual(reply.headers.getRawHeaders(b"x-content-type-options"), [b"nosniff"])
        self.assertEqual(reply.headers.getRawHeaders(b"referrer-policy"), [b"same-origin"])

    async def test_unknown_method_is_json_404(self) -> None:
        f = await self.fixture()
        self.assertError(await f.call("Bogus", {}), "protocol", 'unknown method "Bogus"', 404)
        self.assertError(await f.post("v1/Send", data={"request": "{}"}), "protocol", status=404)

    async def test_wrong_http_method_is_json_405(self) -> None:
        f = await self.fixture()
        response = await f.http.put(f.base + "v0/Send", data=b"x")
        reply_body = await response.content()
        self.assertEqual(response.code, 405)
        self.assertEqual(json.loads(reply_body)["Code"], "protocol")

    async def test_missing_auth(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", MINIMAL, auth=None)
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.headers.getRawHeaders(b"www-authenticate"), [b"Basic realm=webapi"])
        self.assertEqual(reply.body, b"401 - unauthorized - use http basic auth with email address as username\n")

    async def test_bad_password_and_unknown_user(self) -> None:
        f = await self.fixture()
        for auth in (("mox@localhost", "wrong"), ("nobody@example.org", "moxmoxmox"), ("not an address", "x")):
            reply = await f.call("Send", MINIMAL, auth=auth)
            self.assertEqual(reply.status, 401, auth)
        self.assertEqual(await f.queue_rows(), [])

    async def test_catchall_login(self) -> None:
        """Any address of the account logs in, also through the catch-all and separator."""
        f = await self.fixture()
        for user in ("mox+anything@localhost", "other@localhost", "MOX@LOCALHOST"):
            reply = await f.call("SuppressionList", {}, auth=(user, "moxmoxmox"))
            self.assertEqual(reply.status, 200, user)

    async def test_failed_auth_rate_limit(self) -> None:
        """10 failures a minute from one IP; the 11th is refused before the password is checked."""
        f = await self.fixture()
        for _ in range(10):
            self.assertEqual((await f.call("SuppressionList", {}, auth=("mox@localhost", "bad"))).status, 401)
        reply = await f.call("SuppressionList", {}, auth=LOGIN)
        self.assertEqual(reply.status, 429)
        self.assertEqual(reply.body, b"429 - too many auth attempts\n")
        f.clock.advance(61)
        reply = await f.call("SuppressionList", {}, auth=LOGIN)
        self.assertEqual(reply.status, 200)

    async def test_failed_login_is_delayed(self) -> None:
        f = await self.fixture()
        f.parts.webapi.bad_auth_delay = 1.0
        d = defer.Deferred.fromCoroutine(f.call("SuppressionList", {}, auth=("mox@localhost", "bad")))
        for _ in range(20):
            await defer.succeed(None)
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        await deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(d.called)
        f.clock.advance(1.0)
        reply = await d
        self.assertEqual(reply.status, 401)

    async def test_content_type_errors(self) -> None:
        f = await self.fixture()
        response = await f.http.post(f.base + "v0/Send", data=b"{}", auth=LOGIN)
        body = json.loads(await response.content())
        self.assertEqual(body["Code"], "protocol")
        self.assertTrue(body["Message"].startswith("unknown content-type"))
        reply = await f.post("v0/Send", data=b"{}", headers={"Content-Type": ["application/json"]})
        self.assertError(reply, "protocol", "missing/empty request")
        reply = await f.post("v0/Send", data=b"--x\r\n", headers={"Content-Type": ["multipart/form-data"]})
        self.assertError(reply, "protocol")
        self.assertTrue(reply.json["Message"].startswith("parsing form:"))

    async def test_missing_and_empty_request(self) -> None:
        f = await self.fixture()
        self.assertError(await f.post("v0/Send", data={"other": "x"}), "protocol", "missing/empty request")
        self.assertError(await f.post("v0/Send", data={"request": ""}), "protocol", "missing/empty request")

    async def test_malformed_json(self) -> None:
        f = await self.fixture()
        self.assertError(await f.call("Send", '{"To": '), "protocol", "parsing request: unexpected EOF")

    async def test_unknown_field_and_wrong_type(self) -> None:
        f = await self.fixture()
        self.assertError(
            await f.call("Send", {**MINIMAL, "Bogus": 1}), "protocol", 'parsing request: json: unknown field "Bogus"'
        )
        self.assertError(
            await f.call("Send", {"To": "mox@localhost", "Text": "x"}),
            "protocol",
            "parsing request: json: cannot unmarshal string into Go struct field SendRequest.To of type []webapi.NameAddress",
        )

    async def test_case_insensitive_keys(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {"to": [{"address": "mox@localhost"}], "text": "lower"})
        self.assertEqual(reply.status, 200, reply.body)

    async def test_body_too_large(self) -> None:
        f = await self.fixture()
        f.parts.site.max_request_size = 1000  # type: ignore[attr-defined]
        reply = await f.call("Send", {**MINIMAL, "Text": "x" * 2000})
        self.assertError(reply, "protocol", "request body too large (limit 1000 bytes)")
        self.assertEqual(await f.queue_rows(), [])

    async def test_storage_failure_is_server_error(self) -> None:
        """A failing store gives a ``server`` error (and a log entry), never a traceback."""
        f = await self.fixture()

        def broken(cursor, *args, **kwargs):
            raise OSError("disk on fire")

        import moxtw.submit

        self.patch(moxtw.submit, "insert_messages", broken)
        reply = await f.call("Send", MINIMAL)
        self.assertError(reply, "server", "error queueing message")
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(await f.parts.store.blobs.keys(), [])

    async def test_missing_message(self) -> None:
        f = await self.fixture()
        reply = await f.call("MessageGet", {"MsgID": 1})
        self.assertError(reply, "messageNotFound")


class SendErrorTests(Base):
    async def test_missing_body(self) -> None:
        f = await self.fixture()
        self.assertError(await f.call("Send", {"To": [{"Address": "mox@localhost"}]}), "missingBody", "at least text or html body required")

    async def test_multiple_from(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {**MINIMAL, "From": [{"Address": "mox@localhost"}, {"Address": "a@localhost"}]})
        self.assertError(reply, "multipleFrom", "multiple from-addresses not allowed")

    async def test_bad_address(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {"To": [{"Address": "no-at-sign"}], "Text": "x"})
        self.assertError(reply, "badAddress", 'parsing address "no-at-sign": invalid email address: expected @')
        reply = await f.call("Send", {"To": [{"Address": ""}], "Text": "x"})
        self.assertError(reply, "badAddress")

    async def test_control_chars_in_name(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {"To": [{"Name": "a\r\nBcc: x@y", "Address": "mox@localhost"}], "Text": "x"})
        self.assertError(reply, "user", "checking header values: control characters not allowed")

    async def test_control_chars_in_subject(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {**MINIMAL, "Subject": "hi\r\nBcc: victim@example.org"})
        self.assertError(reply, "user", "checking header values: control characters not allowed")
        self.assertEqual(await f.queue_rows(), [])

    async def test_bad_from(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {**MINIMAL, "From": [{"Address": "someone@example.org"}]})
        self.assertError(reply, "badFrom", "from-address not configured for account")

    async def test_no_recipients(self) -> None:
        f = await self.fixture()
        self.assertError(await f.call("Send", {"Text": "x"}), "noRecipients", "no recipients")

    async def test_malformed_message_id(self) -> None:
        f = await self.fixture()
        self.assertError(await f.call("Send", {**MINIMAL, "MessageID": "abc@x"}), "malformedMessageID", "missing <> in message-id")

    async def test_bad_base64(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {**MINIMAL, "AttachedFiles": [{"Name": "a.txt", "Data": "!!!"}]})
        self.assertError(reply, "user")
        self.assertTrue(reply.json["Message"].startswith("parsing attachment as base64:"))

    async def test_future_release_too_far(self) -> None:
        f = await self.fixture()
        when = (datetime.now(UTC) + timedelta(days=61)).strftime("%Y-%m-%dT%H:%M:%SZ")
        reply = await f.call("Send", {**MINIMAL, "FutureRelease": when})
        self.assertError(reply, "user", "scheduling delivery: date/time can not be further than 1440h0m0s in the future")

    async def test_forbidden_header(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {**MINIMAL, "Headers": [["Bcc", "x@example.org"]]})
        self.assertError(reply, "user")
        self.assertIn('"Bcc"', reply.json["Message"])

    async def test_too_large(self) -> None:
        f = await self.fixture()
        f.parts.webapi.methods.config = __import__("attrs").evolve(f.config, max_message_size=500)
        reply = await f.call("Send", {**MINIMAL, "Text": "x" * 1000})
        self.assertError(reply, "messageTooLarge", "message too large")


class DisabledDomainTests(Base):
    edit = staticmethod(lambda text: text.replace("disabled = false", "disabled = true"))

    async def test_domain_disabled(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", MINIMAL)
        self.assertError(reply, "domainDisabled", "domain of from-address is temporarily disabled")


class LimitTests(Base):
    edit = staticmethod(
        lambda text: text.replace("max_outgoing_messages_per_day = 1000", "max_outgoing_messages_per_day = 5").replace(
            "max_first_time_recipients_per_day = 200", "max_first_time_recipients_per_day = 3"
        )
    )

    async def test_message_limit(self) -> None:
        f = await self.fixture()
        for _ in range(5):
            self.assertEqual((await f.call("Send", MINIMAL)).status, 200)
        reply = await f.call("Send", MINIMAL)
        self.assertError(reply, "messageLimitReached", "outgoing message rate limit reached")
        self.assertEqual(len(await f.queue_rows()), 5)

    async def test_first_time_recipient_limit(self) -> None:
        f = await self.fixture()
        for i in range(3):
            reply = await f.call("Send", {"To": [{"Address": f"new{i}@localhost"}], "Text": "x"})
            self.assertEqual(reply.status, 200, reply.body)
        reply = await f.call("Send", {"To": [{"Address": "new3@localhost"}], "Text": "x"})
        self.assertError(reply, "recipientLimitReached", "outgoing new recipient rate limit reached")
        # A known recipient is still fine.
        self.assertEqual((await f.call("Send", {"To": [{"Address": "new0@localhost"}], "Text": "x"})).status, 200)


class SendTests(Base):
    async def test_minimal_queued(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", {"To": [{"Address": "mox@localhost"}], "Text": "hi \u263a"})
        self.assertEqual(reply.status, 200, reply.body)
        body = reply.json
        self.assertEqual(list(body), ["MessageID", "Submissions"])
        self.assertRegex(body["MessageID"], r"^<[A-Za-z0-9_-]{22}@localhost>$")
        (submission,) = body["Submissions"]
        self.assertEqual(submission["Address"], "mox@localhost")
        self.assertEqual(submission["FromID"], "")
        (row,) = await f.queue_rows()
        self.assertEqual(row["id"], submission["QueueMsgID"])
        self.assertEqual((row["account"], row["sender_localpart"], row["sender_domain"]), ("mox", "mox", "localhost"))
        self.assertEqual((row["recipient_localpart"], row["recipient_domain"]), ("mox", "localhost"))
        self.assertEqual(row["message_id"], body["MessageID"])
        self.assertEqual(row["hold"], 0)
        self.assertIsNone(row["extra"])
        msg = await f.message(row)
        self.assertEqual(msg["Message-Id"], body["MessageID"])
        self.assertEqual(msg.get_content(), "hi \u263a\r\n")
        self.assertIn("for <mox@localhost>", msg["Received"])
        self.assertEqual(row["size"], len(row["prefix"]) + len(await f.parts.store.blobs.get(row["blob"])))

    async def test_recipients_in_order_one_entry_each(self) -> None:
        f = await self.fixture()
        reply = await f.call(
            "Send",
            {
                "To": [{"Address": "a@localhost"}, {"Address": "B@Example.ORG"}],
                "CC": [{"Address": "c@localhost"}],
                "BCC": [{"Address": "a@localhost"}],
                "Subject": "multi",
                "Text": "x",
                "Extra": {"order": "42"},
                "RequireTLS": True,
            },
        )
        self.assertEqual(reply.status, 200, reply.body)
        subs = reply.json["Submissions"]
        self.assertEqual([s["Address"] for s in subs], ["a@localhost", "B@Example.ORG", "c@localhost", "a@localhost"])
        ids = [s["QueueMsgID"] for s in subs]
        self.assertEqual(ids, list(range(ids[0], ids[0] + 4)))
        rows = await f.queue_rows()
        self.assertEqual([r["recipient_domain"] for r in rows], ["localhost", "example.org", "localhost", "localhost"])
        self.assertEqual({r["base_id"] for r in rows}, {ids[0]})
        self.assertEqual({r["blob"] for r in rows}.__len__(), 1)
        self.assertTrue(all(json.loads(r["extra"]) == {"order": "42"} for r in rows))
        self.assertTrue(all(r["require_tls"] == 1 for r in rows))
        self.assertTrue(all(r["subject"] == "multi" for r in rows))
        msg = await f.message(rows[0])
        self.assertIsNone(msg["Bcc"])
        self.assertNotIn(" for ", msg["Received"])  # several recipients: no for clause

    async def test_fromid_login(self) -> None:
        f = await self.fixture()
        reply = await f.call(
            "Send", {"To": [{"Address": "a@localhost"}, {"Address": "b@localhost"}], "Text": "x"}, auth=("mox+fromid@localhost", "moxmoxmox")
        )
        self.assertEqual(reply.status, 200, reply.body)
        subs = reply.json["Submissions"]
        for s in subs:
            self.assertRegex(s["FromID"], r"^[A-Za-z0-9_-]{22}$")
        self.assertNotEqual(subs[0]["FromID"], subs[1]["FromID"])
        rows = await f.queue_rows()
        self.assertEqual([r["sender_localpart"] for r in rows], [f"mox+{s['FromID']}" for s in subs])
        self.assertEqual([r["from_id"] for r in rows], [s["FromID"] for s in subs])
        self.assertEqual({r["base_id"] for r in rows}, {0})
        msg = await f.message(rows[0])
        self.assertEqual(msg["From"], "mox+fromid@localhost")

    async def test_plain_login_has_no_fromid(self) -> None:
        f = await self.fixture()
        reply = await f.call("Send", MINIMAL, auth=("mox+other@localhost", "moxmoxmox"))
        self.assertEqual(reply.json["Submissions"][0]["FromID"], "")
        (row,) = await f.queue_rows()
        self.assertEqual(row["sender_localpart"], "mox+other")

    async def test_future_release(self) -> None:
        f = await self.fixture()
        when = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        reply = await f.call("Send", {**MINIMAL, "FutureRelease": when.strftime("%Y-%m-%dT%H:%M:%SZ")})
        self.assertEqual(reply.status, 200, reply.body)
        (row,) = await f.queue_rows()
        self.assertEqual(row["next_attempt"], when.timestamp())
        self.assertEqual(row["future_release_request"], "until;" + when.strftime("%Y-%m-%dT%H:%M:%SZ"))

    async def test_files_json_and_multipart(self) -> None:
        f = await self.fixture()
        request = {
            **MINIMAL,
            "HTML": "<p>hi <img src=\"cid:logo\"></p>",
            "InlineFiles": [{"Name": "logo.png", "ContentType": "image/png", "ContentID": "<logo>", "Data": b64(b"\x89PNG\r\n\x1a\nxx")}],
        }
        reply = await f.post(
            "v0/Send",
            files={
                "request": (None, json.dumps(request).encode()),
                "attachedfile": ("report.pdf", "application/pdf", b"%PDF-1.4 binary \x00\xff\r\n data"),
            },
        )
        self.assertEqual(reply.status, 200, reply.body)
        (row,) = await f.queue_rows()
        msg = await f.message(row)
        self.assertEqual(msg.get_content_type(), "multipart/mixed")
        related, attached = msg.iter_parts()
        self.assertEqual(related.get_content_type(), "multipart/related")
        self.assertEqual(attached.get_filename(), "report.pdf")
        self.assertEqual(attached.get_content(), b"%PDF-1.4 binary \x00\xff\r\n data")
        alternative, inline = related.iter_parts()
        self.assertEqual(inline["Content-ID"], "<logo>")
        self.assertEqual(inline.get_content(), b"\x89PNG\r\n\x1a\nxx")
        self.assertEqual([p.get_content_type() for p in alternative.iter_parts()], ["text/plain", "text/html"])

    async def test_hold_rule(self) -> None:
        f = await self.fixture()
        from moxtw.config import HoldRule

        f.parts.webapi.methods.config = __import__("attrs").evolve(f.config, hold_rules=(HoldRule(recipient_domain="example.org"),))
        await f.call("Send", {"To": [{"Address": "a@example.org"}, {"Address": "b@localhost"}], "Text": "x"})
        rows = await f.queue_rows()
        self.assertEqual([r["hold"] for r in rows], [1, 0])

    async def test_concurrent_sends(self) -> None:
        f = await self.fixture()
        replies = await defer.gatherResults(
            [defer.Deferred.fromCoroutine(f.call("Send", {"To": [{"Address": f"r{i}@localhost"}], "Text": "x"})) for i in range(40)]
        )
        self.assertTrue(all(r.status == 200 for r in replies))
        ids = sorted(r.json["Submissions"][0]["QueueMsgID"] for r in replies)
        self.assertEqual(ids, list(range(1, 41)))
        self.assertEqual(len({r["blob"] for r in await f.queue_rows()}), 40)


class SuppressionTests(Base):
    async def test_crud(self) -> None:
        f = await self.fixture()
        self.assertEqual((await f.call("SuppressionList", {})).json, {"Suppressions": []})
        reply = await f.call("SuppressionAdd", {"EmailAddress": "Blocked.User+tag@localhost", "Manual": True, "Reason": "test"})
        self.assertEqual((reply.status, reply.json), (200, {}))
        (s,) = (await f.call("SuppressionList", {})).json["Suppressions"]
        self.assertEqual(
            {k: s[k] for k in ("ID", "Account", "BaseAddress", "OriginalAddress", "Manual", "Reason")},
            {"ID": 1, "Account": "mox", "BaseAddress": "blockeduser@localhost", "OriginalAddress": "Blocked.User+tag@localhost", "Manual": True, "Reason": "test"},
        )
        self.assertRegex(s["Created"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        for variant, present in (("blockeduser@localhost", True), ("blocked.user+other@LOCALHOST", True), ("someone@localhost", False)):
            self.assertEqual((await f.call("SuppressionPresent", {"EmailAddress": variant})).json, {"Present": present}, variant)
        reply = await f.call("SuppressionAdd", {"EmailAddress": "blockeduser@localhost"})
        self.assertError(reply, "user", "address blockeduser@localhost is already on the suppression list")
        self.assertEqual((await f.call("SuppressionRemove", {"EmailAddress": "BLOCKED.USER@localhost"})).json, {})
        reply = await f.call("SuppressionRemove", {"EmailAddress": "blocked.user@localhost"})
        self.assertError(reply, "user", "address blockeduser@localhost is not on the suppression list")
        self.assertEqual((await f.call("SuppressionList", {})).json, {"Suppressions": []})

    async def test_bad_addresses(self) -> None:
        f = await self.fixture()
        for method in ("SuppressionAdd", "SuppressionRemove", "SuppressionPresent"):
            reply = await f.call(method, {"EmailAddress": "bad address"})
            self.assertError(reply, "badAddress", 'parsing address "bad address": invalid email address: expected @')
        reply = await f.call("SuppressionAdd", {})
        self.assertError(reply, "badAddress", 'parsing address "": invalid email address: invalid localpart: need at least one char for atom')

    async def test_unicode_domain(self) -> None:
        f = await self.fixture()
        await f.call("SuppressionAdd", {"EmailAddress": "Remote.Last-catchall@xn--74h.localhost"})
        (s,) = (await f.call("SuppressionList", {})).json["Suppressions"]
        self.assertEqual(s["BaseAddress"], "remotelast@\u263a.localhost")
        self.assertEqual((await f.call("SuppressionPresent", {"EmailAddress": "remote.LAST+more@\u263a.LocalHost"})).json, {"Present": True})


class MetricsTests(Base):
    async def test_calls_counted(self) -> None:
        from prometheus_client import REGISTRY

        def value(method: str, result: str) -> float:
            return REGISTRY.get_sample_value("moxtw_webapi_requests_total", {"method": method, "result": result}) or 0.0

        f = await self.fixture()
        ok, missing, badauth = value("Send", "ok"), value("Send", "missingBody"), value("Send", "badauth")
        durations = REGISTRY.get_sample_value("moxtw_webapi_duration_seconds_count", {"method": "Send"}) or 0.0
        await f.call("Send", MINIMAL)
        await f.call("Send", {"To": [{"Address": "mox@localhost"}]})
        await f.call("Send", MINIMAL, auth=None)
        self.assertEqual(value("Send", "ok"), ok + 1)
        self.assertEqual(value("Send", "missingBody"), missing + 1)
        self.assertEqual(value("Send", "badauth"), badauth + 1)
        self.assertEqual(REGISTRY.get_sample_value("moxtw_webapi_duration_seconds_count", {"method": "Send"}), durations + 3)


class SaveSentTests(Base):
    async def test_copy_in_sent(self) -> None:
        from moxtw.store.messages import find_mailbox, get_message

        f = await self.fixture()
        reply = await f.call(
            "Send",
            {"To": [{"Address": "a@localhost"}], "BCC": [{"Name": "Hidden", "Address": "h@localhost"}], "Subject": "kept", "Text": "x", "SaveSent": True},
        )
        self.assertEqual(reply.status, 200, reply.body)

        def sent(cursor):
            mailbox = find_mailbox(cursor, "mox", "Sent")
            cursor.execute("SELECT id FROM message WHERE mailbox_id = ?", (mailbox,))
            return [get_message(cursor, "mox", row[0]) for row in cursor.fetchall()]

        (row,) = await f.parts.store.db.run("sent", sent)
        reply = await f.call("MessageGet", {"MsgID": row.id})
        body = reply.json
        self.assertEqual(body["Message"]["Subject"], "kept")
        self.assertEqual(body["Message"]["BCC"], [{"Name": "Hidden", "Address": "h@localhost"}])
        self.assertEqual(body["Meta"]["MailboxName"], "Sent")
        self.assertIn("\\seen", body["Meta"]["Flags"])
        self.assertIn("$notjunk", body["Meta"]["Flags"])
        raw = await f.call("MessageRawGet", {"MsgID": row.id})
        self.assertNotIn(b"Received:", raw.body)

    async def test_no_copy_without_savesent(self) -> None:
        f = await self.fixture()
        await f.call("Send", MINIMAL)

        def count(cursor):
            cursor.execute("SELECT count(*) FROM message")
            return cursor.fetchone()[0]

        self.assertEqual(await f.parts.store.db.run("count", count), 0)
