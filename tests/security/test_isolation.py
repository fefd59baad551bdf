"""Account isolation: bob tries every webapi method, admin operation filtered by account,
and SMTP path on alice's messages, suppressions, queue and webhooks; none reads or
changes anything of alice's.

The webapi and admin tests are driven by the method registries (``REQUEST_TYPES``,
``AdminAPI.methods()``): a method without a cross-account check here fails the test.
Every test ends by comparing alice's complete stored rows (every table with an account
column, plus the attempts of her messages and webhooks) with a snapshot taken before
bob's attempts, and by checking that no webhook of hers went anywhere new.
"""

from __future__ import annotations

import base64
import json
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from moxtw.config import ConfigError, load_config
from moxtw.localserve import ensure_config
from moxtw.webapi import types as t
from tests.security.fixture import (
    ALICE,
    ALICE_FROMID,
    ALICE_PASSWORD,
    BOB,
    BOB_FROMID,
    BOB_PASSWORD,
    TwoAccounts,
    auth_plain,
    code,
    two_accounts,
)
from tests.test_dsnparse import sample
from tests.webapi.fixture import Reply

log = Logger()

#: Every login that authenticates as bob.
BOB_LOGINS = [
    BOB,
    BOB_FROMID,
    ("BOB@LOCALHOST", BOB_PASSWORD),  # case-insensitive localpart and domain
    ("bob+anything@localhost", BOB_PASSWORD),  # catchall separator
    ("alice@bob.test", BOB_PASSWORD),  # bob's catch-all domain: looks like alice, is bob
]

#: From addresses that are alice's, however they are spelled.
ALICE_FROMS = ["alice@localhost", "ALICE@localhost", "alice@LOCALHOST", "alice+x@localhost", "alice+fromid@localhost"]

PLAIN = b"From: carol@remote.test\r\nTo: alice@localhost\r\nSubject: for alice\r\nMessage-ID: <p1@remote.test>\r\n\r\nsecret text\r\n"
MULTIPART = (
    b"From: carol@remote.test\r\nTo: alice@localhost\r\nSubject: with attachment\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n"
    b"--b1\r\nContent-Type: text/plain\r\n\r\nsecret body\r\n"
    b"--b1\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=a.bin\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nc2VjcmV0IGZpbGU=\r\n--b1--\r\n"
)


class Base(TestCase):
    def setUp(self) -> None:
        self.checks = 0

    def tearDown(self) -> None:
        # How many cross-account comparisons the test made (in trial's test.log).
        log.info("{test}: {n} cross-account checks", test=self.id().rsplit(".", 1)[-1], n=self.checks)

    def check(self, condition: bool, message: Any = None) -> None:
        self.checks += 1
        self.assertTrue(condition, message)

    def check_equal(self, a: Any, b: Any, message: Any = None) -> None:
        self.checks += 1
        self.assertEqual(a, b, message)

    async def world(self) -> tuple[TwoAccounts, dict[str, Any]]:
        """Both accounts with messages, suppressions, queued mail and delivered webhooks."""
        f = await TwoAccounts(self).start()
        w: dict[str, Any] = {}
        for data in (PLAIN, MULTIPART, PLAIN.replace(b"p1@", b"p2@"), PLAIN.replace(b"p1@", b"p3@")):
            self.assertEqual(code(await f.deliver("carol@remote.test", "alice@localhost", data)), 250)
        self.assertEqual(code(await f.deliver("dave@remote.test", "bob@localhost", PLAIN)), 250)
        sent = await f.send_as(ALICE, "x@remote.test", SaveSent=True)
        await f.send_as(ALICE_FROMID, "y@remote.test")
        await f.send_as(BOB, "z@remote.test")
        rows = await f.rows("SELECT id, account, mailbox_id FROM message ORDER BY id")
        alice_ids = [r["id"] for r in rows if r["account"] == "alice"]
        w["bob_ids"] = [r["id"] for r in rows if r["account"] == "bob"]
        # One of alice's messages moved, one expunged.
        await f.ok("MessageMove", {"MsgID": alice_ids[2], "DestMailboxName": "Archive"}, ALICE)
        await f.ok("MessageDelete", {"MsgID": alice_ids[3]}, ALICE)
        await f.ok("MessageFlagsAdd", {"MsgID": alice_ids[0], "Flags": ["\\Flagged", "private"]}, ALICE)
        w["alice_ids"] = alice_ids
        w["alice_live"] = [i for i in alice_ids if i != alice_ids[3]]
        w["alice_multipart"] = alice_ids[1]
        w["sent"] = sent
        for address in ("blocked@remote.test", "Other+Tag@Remote.test", "third@remote.test"):
            await f.ok("SuppressionAdd", {"EmailAddress": address, "Manual": True, "Reason": "alice's"}, ALICE)
        await f.ok("SuppressionAdd", {"EmailAddress": "bobs@remote.test"}, BOB)
        await f.hooks_settled()
        w["absent"] = await f.max_message_id() + 1000
        return f, w

    async def unchanged(self, f: TwoAccounts, before: dict[str, Any], hooks_before: int, *,
                        waiting: bool = False) -> None:
        """alice's rows are exactly as in ``before``; her webhook URLs got nothing new.

        ``waiting``: webhooks are being refused; wait until each was attempted (instead
        of until all were delivered)."""
        await (f.hooks_waiting() if waiting else f.hooks_settled())
        after = await f.snapshot("alice")
        for table in sorted(set(before) | set(after)):
            self.check_equal(after.get(table), before.get(table), f"alice's {table} rows changed")
        self.check_equal(len(f.hooks("/alice/out")) + len(f.hooks("/alice/in")), hooks_before)

    def alice_hooks(self, f: TwoAccounts) -> int:
        return len(f.hooks("/alice/out")) + len(f.hooks("/alice/in"))


class WebAPITests(Base):
    """bob against alice through every webapi method."""

    async def test_every_method_is_isolated(self) -> None:
        f, w = await self.world()
        before = await f.snapshot("alice")
        hooks_before = self.alice_hooks(f)
        missing = [m for m in sorted(t.REQUEST_TYPES) if not hasattr(self, f"cross_{m}")]
        self.assertEqual(missing, [], "webapi methods without a cross-account check in this test")
        for method in sorted(t.REQUEST_TYPES):
            for login in BOB_LOGINS:
                await getattr(self, f"cross_{method}")(f, w, login)
        await self.unchanged(f, before, hooks_before)
        # The same requests do work for alice (so the probes above could have found
        # something): her live messages are readable and changeable by her.
        for msg_id in w["alice_live"]:
            await f.ok("MessageGet", {"MsgID": msg_id}, ALICE)
        await f.ok("MessageFlagsAdd", {"MsgID": w["alice_live"][0], "Flags": ["\\Seen"]}, ALICE)
        self.assertNotEqual(await f.snapshot("alice"), before)
        await check_hook_routing(self, f)

    # --- one method each: bob (``login``) on alice's things ---------------------------

    async def not_found_like_absent(self, f: TwoAccounts, w: dict[str, Any], login: Any, method: str,
                                    request: dict[str, Any]) -> None:
        """For each of alice's message IDs (live, moved, expunged), bob's answer is the
        answer for an ID that exists nowhere, byte for byte: nothing about alice's
        messages leaks, not even that they exist."""
        absent = await f.call(method, {**request, "MsgID": w["absent"]}, auth=login)
        self.assertEqual(absent.status, 400, absent.body)
        self.assertEqual(absent.json["Code"], "messageNotFound")
        for msg_id in w["alice_ids"]:
            reply = await f.call(method, {**request, "MsgID": msg_id}, auth=login)
            self.check_equal(_shape(reply), _shape(absent), (method, msg_id, login[0]))

    async def cross_MessageGet(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        await self.not_found_like_absent(f, w, login, "MessageGet", {})

    async def cross_MessageRawGet(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        await self.not_found_like_absent(f, w, login, "MessageRawGet", {})

    async def cross_MessagePartGet(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        for path in ([], [0], [1], [5]):
            await self.not_found_like_absent(f, w, login, "MessagePartGet", {"PartPath": path})

    async def cross_MessageDelete(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        await self.not_found_like_absent(f, w, login, "MessageDelete", {})

    async def cross_MessageFlagsAdd(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        for flags in (["\\Seen", "\\Deleted"], ["$Junk", "bobwashere"]):
            await self.not_found_like_absent(f, w, login, "MessageFlagsAdd", {"Flags": flags})

    async def cross_MessageFlagsRemove(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        await self.not_found_like_absent(f, w, login, "MessageFlagsRemove", {"Flags": ["\\Flagged", "private"]})

    async def cross_MessageMove(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        # Existing and missing destinations, and alice's current mailboxes: the message
        # check comes first, so the mailbox names tell bob nothing either.
        for mailbox in ("Trash", "Inbox", "Archive", "Junk", "NoSuchMailbox"):
            await self.not_found_like_absent(f, w, login, "MessageMove", {"DestMailboxName": mailbox})

    async def cross_SuppressionList(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        listed = (await f.ok("SuppressionList", {}, login))["Suppressions"]
        self.check("bobs@remote.test" in [s["BaseAddress"] for s in listed], listed)
        for s in listed:
            self.check((s["Account"], s["Reason"] != "alice's", s["BaseAddress"] != "other@remote.test") == ("bob", True, True), s)

    async def cross_SuppressionPresent(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        for address in ("blocked@remote.test", "other@remote.test", "Other+Tag@Remote.test"):
            self.assertTrue((await f.ok("SuppressionPresent", {"EmailAddress": address}, ALICE))["Present"])
            present = await f.ok("SuppressionPresent", {"EmailAddress": address}, login)
            self.check_equal(present, {"Present": False}, address)

    async def cross_SuppressionRemove(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        never = await f.call("SuppressionRemove", {"EmailAddress": "never@remote.test"}, auth=login)
        self.assertEqual(never.status, 400)
        for address in ("blocked@remote.test", "other@remote.test"):
            reply = await f.call("SuppressionRemove", {"EmailAddress": address}, auth=login)
            # The same answer as for an address nobody listed (up to the address itself).
            self.check_equal(
                (reply.status, reply.body.replace(address.encode(), b"ADDR")),
                (never.status, never.body.replace(b"never@remote.test", b"ADDR")),
            )

    async def cross_SuppressionAdd(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        # bob may list alice's addresses on his own list; that is his list only, and
        # "already listed" is answered from his list, never from alice's.
        address = "third@remote.test"
        reply = await f.call("SuppressionAdd", {"EmailAddress": address, "Reason": "bob's"}, auth=login)
        if login == BOB_LOGINS[0]:
            self.check_equal(reply.status, 200, reply.body)
        else:
            self.check_equal(reply.json["Code"], "user", reply.body)  # bob listed it just before
        listed = (await f.ok("SuppressionList", {}, login))["Suppressions"]
        self.check_equal([s["Reason"] for s in listed if s["BaseAddress"] == address], ["bob's"])

    async def cross_Send(self, f: TwoAccounts, w: dict[str, Any], login: Any) -> None:
        for address in ALICE_FROMS:
            reply = await f.call("Send", {"From": [{"Address": address}], "To": [{"Address": "v@remote.test"}],
                                          "Text": "spoof"}, auth=login)  # fmt: skip
            self.check_equal((reply.status, reply.json.get("Code")), (400, "badFrom"), (address, reply.body))
        # Mail to alice is bob's queued message, not anything of alice's.
        result = await f.send_as(login, "alice@localhost", "alice+fromid@localhost")
        for s in result["Submissions"]:
            (row,) = await f.rows("SELECT account FROM queue_msg WHERE id = ?", s["QueueMsgID"])
            self.check_equal(row["account"], "bob")


def _shape(reply: Reply) -> tuple[int, list[bytes] | None, bytes]:
    return reply.status, reply.headers.getRawHeaders(b"content-type"), reply.body


class LoginTests(Base):
    async def test_cross_passwords_fail_everywhere(self) -> None:
        """bob's password never opens alice's account (and the reverse), over the webapi
        and SMTP AUTH, however the username is spelled."""
        f = await TwoAccounts(self).start()
        wrong = [
            ("alice@localhost", BOB_PASSWORD),
            ("alice+fromid@localhost", BOB_PASSWORD),
            ("ALICE@LOCALHOST", BOB_PASSWORD),
            ("bob@localhost", ALICE_PASSWORD),
            ("alice@bob.test", ALICE_PASSWORD),  # bob's address, alice's password
            ("carol@localhost", ALICE_PASSWORD),  # nobody's address
        ]
        for username, password in wrong:
            reply = await f.call("SuppressionList", {}, auth=(username, password))
            self.check_equal(reply.status, 401, (username, reply.body))
            smtp = await f.smtp(f.submission_port)
            await smtp.command("EHLO client.test")
            self.check_equal(code(await smtp.command(auth_plain(username, password))), 535, username)
            smtp.close()
            # A success in between keeps the failed-login limiter from answering 429.
            await f.ok("SuppressionList", {}, BOB)
        # SASL PLAIN with bob's credentials asking to act as alice (authorization
        # identity): refused, not logged in as either.
        smtp = await f.smtp(f.submission_port)
        await smtp.command("EHLO client.test")
        proxy = base64.b64encode(f"alice@localhost\0bob@localhost\0{BOB_PASSWORD}".encode()).decode()
        self.check_equal(code(await smtp.command(f"AUTH PLAIN {proxy}")), 535)
        self.check_equal(code(await smtp.command("MAIL FROM:<alice@localhost>")), 530)


class AdminTests(Base):
    """Admin operations filtered by account bob leave alice's messages and webhooks alone.

    The admin is all-powerful by design; what must hold is that ``Account`` narrows every
    operation to that account (also when combined with alice's IDs)."""

    async def admin_world(self) -> tuple[TwoAccounts, dict[str, Any]]:
        f, w = await self.world()
        # Queued webhooks of both accounts, refused by the receiver so they stay queued:
        # incoming ones and "canceled" events of dropped messages.
        f.refuse_hooks()
        for rcpt in ("alice@localhost", "bob@localhost"):
            self.assertEqual(code(await f.deliver("carol@remote.test", rcpt, PLAIN)), 250)
        for login in (ALICE, BOB):
            (s,) = (await f.send_as(login, "drop@remote.test"))["Submissions"]
            await f.admin("QueueDrop", {"IDs": [s["QueueMsgID"]]})
        await f.hooks_waiting()
        hooks = await f.rows("SELECT id, account FROM event")
        self.assertEqual(sorted({h["account"] for h in hooks}), ["alice", "bob"])
        w["alice_queue"] = [r["id"] for r in await f.rows("SELECT id FROM queue_msg WHERE account = 'alice'")]
        w["alice_hooks"] = [h["id"] for h in hooks if h["account"] == "alice"]
        w["alice_retired"] = [r["id"] for r in await f.rows("SELECT id FROM queue_retired WHERE account = 'alice'")]
        self.assertTrue(w["alice_queue"] and w["alice_hooks"] and w["alice_retired"])
        return f, w

    async def bob_queue(self, f: TwoAccounts) -> list[int]:
        """bob's queued message IDs, after queueing two more."""
        await f.send_as(BOB, "q1@remote.test", "q2@remote.test")
        return [r["id"] for r in await f.rows("SELECT id FROM queue_msg WHERE account = 'bob' ORDER BY id")]

    async def test_every_operation_filtered_by_account(self) -> None:
        f, w = await self.admin_world()
        methods = sorted(f.parts.admin.methods())
        missing = [m for m in methods if not hasattr(self, f"admin_{m}")]
        self.assertEqual(missing, [], "admin methods without a cross-account check in this test")
        for method in methods:
            before = await f.snapshot("alice")
            hooks_before = self.alice_hooks(f)
            await getattr(self, f"admin_{method}")(f, w)
            await self.unchanged(f, before, hooks_before, waiting=True)
        # Hold rules are per account: a rule for bob holds bob's new messages only.
        (alice_new,) = (await f.send_as(ALICE, "n1@remote.test"))["Submissions"]
        (bob_new,) = (await f.send_as(BOB, "n2@remote.test"))["Submissions"]
        await f.admin("QueueHoldRuleAdd", {"Account": "bob"})
        (bob_held,) = (await f.send_as(BOB, "n3@remote.test"))["Submissions"]
        (alice_free,) = (await f.send_as(ALICE, "n4@remote.test"))["Submissions"]
        holds = {r["id"]: r["hold"] for r in await f.rows("SELECT id, hold FROM queue_msg")}
        self.check_equal(
            [holds[s["QueueMsgID"]] for s in (alice_new, bob_new, bob_held, alice_free)], [0, 1, 1, 0]
        )
        await check_hook_routing(self, f)

    async def filtered(self, f: TwoAccounts, w: dict[str, Any], method: str, *rest: Any,
                       ids: str = "alice_queue") -> list[Any]:
        """``method`` with Account bob, then with Account bob and alice's IDs (which
        must match nothing); the two results."""
        first = await f.admin(method, {"Account": "bob"}, *rest)
        second = await f.admin(method, {"Account": "bob", "IDs": w[ids]}, *rest)
        return [first, second]

    async def affects_bob_only(self, f: TwoAccounts, w: dict[str, Any], method: str, *rest: Any) -> None:
        ids = await self.bob_queue(f)
        first, second = await self.filtered(f, w, method, *rest)
        self.check_equal(first, len(ids), method)
        self.check_equal(second, 0, method)

    # --- reading ---------------------------------------------------------------------

    async def admin_QueueSize(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        (row,) = await f.rows("SELECT count(*) AS n FROM queue_msg")
        self.check_equal(await f.admin("QueueSize"), row["n"])  # global by design; reads only

    async def admin_HookQueueSize(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        (row,) = await f.rows("SELECT count(*) AS n FROM event WHERE admitted = 1")
        self.check_equal(await f.admin("HookQueueSize"), row["n"])

    async def admin_DNSBLStatus(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        # Server-wide and account-free (our IPs' blocklist status); reads only.
        self.check(isinstance(await f.admin("DNSBLStatus"), list))

    # --- account settings (moxtw.settings) ---------------------------------------------

    def settings_reloader(self, f: TwoAccounts) -> None:
        from twisted.internet import reactor

        from moxtw.settings import ConfigReloader

        if f.parts.settings.reload is None:
            reloader = ConfigReloader(f.parts.settings.live, reactor, install_signal=False)
            reloader.startService()
            self.addCleanup(reloader.stopService)
            f.parts.settings.reload = reloader.request_reload

    def alice_config(self, f: TwoAccounts) -> tuple[Any, str]:
        """alice's running account and her part of the configuration file."""
        assert f.config.source is not None
        text = f.config.source.read_text()
        start = text.index("[accounts.alice]")
        return f.config.accounts["alice"], text[start : text.index("[accounts.bob]", start)]

    async def admin_AccountSettingsGet(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        got = await f.admin("AccountSettingsGet", "bob")  # reads only
        self.check_equal(got["account"], "bob")
        self.check_equal(got["settings"]["outgoing_webhook"]["url"], f"{f.hook_base}/bob/out")

    async def admin_AccountSettingsSave(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        # Saving bob's settings changes bob's, in the file and in the running daemon,
        # and nothing of alice's; a change cannot name another account.
        self.settings_reloader(f)
        before = self.alice_config(f)
        saved = await f.admin("AccountSettingsSave", "bob", {"max_outgoing_messages_per_day": 5000}, "")
        self.check_equal(saved["reload"]["applied"], ["accounts.bob.max_outgoing_messages_per_day"])
        self.check_equal(f.config.accounts["bob"].max_outgoing_messages_per_day, 5000)
        error = await f.admin_error("AccountSettingsSave", "bob", {"accounts.alice.login_disabled": "x"}, "")
        self.check("not an editable setting" in error["message"], error)
        self.check_equal(self.alice_config(f), before)

    async def admin_ConfigReload(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        self.settings_reloader(f)
        before = self.alice_config(f)
        self.check_equal(await f.admin("ConfigReload"), {"applied": [], "needs_restart": []})
        self.check_equal(self.alice_config(f), before)

    async def admin_QueueHoldRuleList(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        self.check(isinstance(await f.admin("QueueHoldRuleList"), list))

    async def admin_QueueList(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        ids = await self.bob_queue(f)
        first, second = await self.filtered(f, w, "QueueList", {})
        self.check_equal(sorted(m["ID"] for m in first), ids)
        self.check(all(m["SenderAccount"] == "bob" for m in first), first)
        self.check_equal(second, [])

    async def admin_RetiredList(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        first, second = await self.filtered(f, w, "RetiredList", {}, ids="alice_retired")
        self.check(first and all(m["SenderAccount"] == "bob" for m in first), first)
        self.check_equal(second, [])

    async def bob_hook(self, f: TwoAccounts) -> None:
        """A queued (refused, waiting) incoming-message webhook for bob."""
        self.assertEqual(code(await f.deliver("carol@remote.test", "bob@bob.test", PLAIN)), 250)
        await f.hooks_waiting()

    async def admin_HookList(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.bob_hook(f)
        first, second = await self.filtered(f, w, "HookList", {}, ids="alice_hooks")
        self.check(first and all(h["Account"] == "bob" for h in first), first)
        self.check(all("/bob/" in h["URL"] for h in first), first)
        self.check_equal(second, [])

    async def admin_HookRetiredList(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        first, second = await self.filtered(f, w, "HookRetiredList", {}, ids="alice_hooks")
        self.check(first and all(h["Account"] == "bob" for h in first), first)
        self.check_equal(second, [])

    # --- changes ---------------------------------------------------------------------

    async def admin_QueueHoldSet(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.affects_bob_only(f, w, "QueueHoldSet", True)
        await self.affects_bob_only(f, w, "QueueHoldSet", False)

    async def admin_QueueNextAttemptSet(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.affects_bob_only(f, w, "QueueNextAttemptSet", 30)

    async def admin_QueueNextAttemptAdd(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.affects_bob_only(f, w, "QueueNextAttemptAdd", 30)

    async def admin_QueueRequireTLSSet(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.affects_bob_only(f, w, "QueueRequireTLSSet", True)

    async def admin_QueueFail(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        # The failure DSNs go to bob's Inbox and the "failed" events to bob's webhook.
        await self.affects_bob_only(f, w, "QueueFail")

    async def admin_QueueDrop(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.affects_bob_only(f, w, "QueueDrop")

    async def admin_QueueHoldRuleAdd(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        ids = await self.bob_queue(f)
        await f.admin("QueueHoldSet", {"Account": "bob"}, False)
        rule = await f.admin("QueueHoldRuleAdd", {"Account": "bob"})
        w["bob_rule"] = rule["ID"]
        held = await f.rows("SELECT id FROM queue_msg WHERE hold = 1 AND account = 'bob' ORDER BY id")
        self.check_equal([r["id"] for r in held], ids)

    async def admin_QueueHoldRuleRemove(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        rule = w.get("bob_rule") or (await f.admin("QueueHoldRuleAdd", {"Account": "bob"}))["ID"]
        self.check_equal(await f.admin("QueueHoldRuleRemove", rule), None)
        w.pop("bob_rule", None)

    async def admin_HookNextAttemptSet(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.bob_hook(f)
        first, second = await self.filtered(f, w, "HookNextAttemptSet", 90, ids="alice_hooks")
        self.check(first > 0, first)
        self.check_equal(second, 0)

    async def admin_HookNextAttemptAdd(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.bob_hook(f)
        first, second = await self.filtered(f, w, "HookNextAttemptAdd", 90, ids="alice_hooks")
        self.check(first > 0, first)
        self.check_equal(second, 0)

    async def admin_HookCancel(self, f: TwoAccounts, w: dict[str, Any]) -> None:
        await self.bob_hook(f)
        first, second = await self.filtered(f, w, "HookCancel", ids="alice_hooks")
        self.check(first > 0, first)
        self.check_equal(second, 0)


async def check_hook_routing(test: Base, f: TwoAccounts) -> None:
    """Every webhook the receiver got went to the account its content belongs to: an
    incoming one to the account of its RcptTo, an outgoing one to the account that sent
    the message it is about; with that account's Authorization header."""
    owners: dict[int, str] = {}
    for table in ("queue_msg", "queue_retired"):
        for r in await f.rows(f"SELECT id, account FROM {table}"):
            owners[r["id"]] = r["account"]
    for request in f.receiver.requests:
        account, kind = request.path.strip("/").split("/")
        body = json.loads(request.body)
        if kind == "in":
            found = f.parts.accounts.login(body["Meta"]["RcptTo"])
            owner = None if found is None else found.account.name
        else:
            owner = owners.get(body["QueueMsgID"])
        test.check_equal(owner, account, (request.path, body))
        test.check_equal(request.header("authorization"), f"Bearer {account}-{kind}")


class SMTPTests(Base):
    async def test_submission_as_bob_cannot_use_alices_addresses(self) -> None:
        f, w = await self.world()
        before = await f.snapshot("alice")
        hooks_before = self.alice_hooks(f)
        queued_before = len(await f.rows("SELECT id FROM queue_msg"))
        message = b"From: bob@localhost\r\nTo: v@remote.test\r\nSubject: hi\r\n\r\nhi\r\n"
        for login in (BOB, BOB_FROMID, ("alice@bob.test", BOB_PASSWORD)):
            for mail_from in [*ALICE_FROMS, "", "Alice+fromid@LOCALHOST"]:
                reply = await f.submit(login, mail_from, "v@remote.test", message)
                self.check(reply.startswith(b"550 5.7.1 must match authenticated user"), (login, mail_from, reply))
        self.check_equal(len(await f.rows("SELECT id FROM queue_msg")), queued_before)
        await self.unchanged(f, before, hooks_before)

    async def test_submission_from_header_must_be_bobs(self) -> None:
        """Any message bob submits either is refused, or shows a single From whose every
        address is bob's to a standard parser (Python's email package, which also takes a
        bare CR or LF as a line end, as many mail programs do)."""
        f = await TwoAccounts(self).start()
        heads = [
            b"From: alice@localhost",
            b"From: Alice <ALICE@LOCALHOST>",
            b"from: alice+x@localhost",
            b"FROM : alice@localhost",
            b"From:alice@localhost",
            b"From: bob@localhost, alice@localhost",
            b"From: bob@localhost\r\nFrom: alice@localhost",
            b"From: Bob\r\n <alice@localhost>",
            b'From: "bob@localhost" <alice@localhost>',
            b"From: alice@localhost (bob@localhost)",
            b"From: =?utf-8?q?Bob?= <alice@localhost>",
            b"From: team: alice@localhost;",
            b"From: bob@localhost\r\nSubject: x\nFrom: alice@localhost",
            b"From: bob@localhost\r\nSubject: x\rFrom: alice@localhost",
            b"Subject: x\nFrom: alice@localhost\r\nFrom: bob@localhost",
            b"From: bob@localhost\r\nX-Note: a\r\n\nFrom: alice@localhost",
            b"From: bob@localhost\r\nResent-From: alice@localhost",
            b"From: <alice@localhost>\r\nSender: bob@localhost",
            b"To: v@remote.test",
            b"From: bob@localhost",
        ]
        accepted = 0
        for head in heads:
            message = head + b"\r\nTo: v@remote.test\r\nSubject: hi\r\n\r\nbody\r\n"
            queued = {r["id"] for r in await f.rows("SELECT id FROM queue_msg")}
            reply = await f.submit(BOB, "bob@localhost", "v@remote.test", message)
            rows = [r for r in await f.queue_rows() if r["id"] not in queued]
            if code(reply) != 250:
                self.check(reply.startswith(b"5"), (head, reply))
                self.check_equal(rows, [], head)
                continue
            accepted += 1
            (row,) = rows
            parsed = message_from_bytes(await f.raw(row), policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            froms = parsed.get_all("From") or []
            self.check_equal(len(froms), 1, (head, froms))
            owners = {f.parts.accounts.login(a.addr_spec).account.name  # type: ignore[union-attr]
                      for a in froms[0].addresses}  # fmt: skip
            self.check_equal(owners, {"bob"}, (head, froms))
        self.assertGreaterEqual(accepted, 1)  # the last one, bob's own From, is accepted

    async def test_smuggled_commands_are_refused(self) -> None:
        """A message carrying "<LF>.<LF>" and a second transaction as alice (SMTP
        smuggling: a lenient next hop would end the message there and run the rest as
        commands from our address) is refused, as mox does; other bare LFs become CRLF."""
        f = await TwoAccounts(self).start()
        smuggled = b"MAIL FROM:<alice@localhost>\r\nRCPT TO:<v@remote.test>\r\nDATA\r\nFrom: alice@localhost\r\n\r\nspoof\r\n"
        for hidden in (b"hi\n.\n", b"hi\r\n.\n", b"hi\n.\r\n", b"hi\r.\r\n"):
            message = b"From: bob@localhost\r\nSubject: x\r\n\r\n" + hidden + smuggled
            # Sent as is (not dot-stuffed): an attacker's client.
            reply = await f.submit(BOB, "bob@localhost", "v@remote.test", message, stuff=False)
            self.check(reply.startswith(b"500 5.5.2 invalid bare"), (hidden, reply))
            reply = await f.deliver("carol@remote.test", "bob@localhost", message, stuff=False)
            self.check(reply.startswith(b"500 5.5.2 invalid bare"), (hidden, reply))
        self.check_equal(await f.queue_rows(), [])
        self.check_equal(await f.rows("SELECT id FROM message"), [])
        reply = await f.deliver("carol@remote.test", "bob@localhost", b"Subject: a\nX-B: c\r\n\r\nline\nline\r\n")
        self.assertEqual(code(reply), 250)
        (row,) = await f.rows("SELECT blob FROM message")
        data = await f.parts.store.blobs.get(row["blob"])
        self.check(data.endswith(b"Subject: a\r\nX-B: c\r\n\r\nline\r\nline\r\n"), data)

    async def test_incoming_goes_to_the_owning_account_only(self) -> None:
        f = await TwoAccounts(self).start()
        routes = {
            "alice@localhost": "alice",
            "Alice+tag@LOCALHOST": "alice",
            "bob@localhost": "bob",
            "alice@bob.test": "bob",
            "alice+fromid@bob.test": "bob",
        }
        for rcpt, owner in routes.items():
            data = PLAIN.replace(b"<p1@", f"<{rcpt}@".encode())
            self.assertEqual(code(await f.deliver("carol@remote.test", rcpt, data)), 250)
            rows = await f.rows("SELECT account, rcpt_to FROM message WHERE message_id = ?", f"<{rcpt}@remote.test>")
            self.check_equal([r["account"] for r in rows], [owner], rcpt)
        # Nobody's addresses, and no relaying to other domains.
        for rcpt in ("carol@localhost", "alice@alice.test", "alice@localhost.test", "alice@remote.test"):
            self.check_equal(code(await f.deliver("carol@remote.test", rcpt, PLAIN)), 550, rcpt)
        # No logging in on the incoming port, as anyone.
        c = await f.smtp(f.smtp_port)
        await c.command("EHLO remote.test")
        self.check_equal(code(await c.command(auth_plain(*BOB))), 503)
        c.close()
        # One transaction for both: each gets its own copy, with its own RcptTo.
        c = await f.smtp(f.smtp_port)
        for line in ("EHLO remote.test", "MAIL FROM:<carol@remote.test>", "RCPT TO:<alice@localhost>",
                     "RCPT TO:<bob@localhost>"):  # fmt: skip
            self.assertEqual(code(await c.command(line)), 250)
        self.assertEqual(code(await c.data(PLAIN.replace(b"<p1@", b"<both@"))), 250)
        rows = await f.rows("SELECT account, rcpt_to FROM message WHERE message_id = '<both@remote.test>'")
        self.check_equal(sorted((r["account"], r["rcpt_to"]) for r in rows),
                         [("alice", "alice@localhost"), ("bob", "bob@localhost")])  # fmt: skip
        await f.hooks_settled()
        self.check_equal(len(f.hooks("/alice/in")), 3)
        await check_hook_routing(self, f)


class ReportTests(Base):
    """Incoming DSNs and ARF reports are matched to a sent message by its FromID only for
    the account that sent it and received the report."""

    async def fromid_world(self) -> tuple[TwoAccounts, dict[str, Any]]:
        f = await TwoAccounts(self).start()
        w: dict[str, Any] = {}
        for name, login in (("alice", ALICE_FROMID), ("bob", BOB_FROMID)):
            (s,) = (await f.send_as(login, "nobody@remote.test"))["Submissions"]
            self.assertTrue(s["FromID"])
            w[name] = s
        await f.admin("QueueFail", {"IDs": [w["alice"]["QueueMsgID"], w["bob"]["QueueMsgID"]]})
        await f.hooks_settled()
        return f, w

    def dsn(self, from_id: str, to: str) -> bytes:
        return sample("postfix_bounce.eml", from_id).replace(b"app+" + from_id.encode() + b"@example.org", to.encode())

    def arf(self, original_mail_from: str, to: str) -> bytes:
        data = sample("arf_abuse.eml", "X").replace(b"app+X@example.org", original_mail_from.encode())
        return data.replace(b"To: <" + original_mail_from.encode() + b">", f"To: <{to}>".encode(), 1)

    async def events_for(self, f: TwoAccounts, queue_msg_id: int) -> list[str]:
        rows = await f.rows(
            "SELECT kind FROM hook_retired WHERE queue_msg_id = ? UNION ALL SELECT kind FROM event WHERE queue_msg_id = ?",
            queue_msg_id, queue_msg_id,
        )  # fmt: skip
        return sorted(r["kind"] for r in rows)

    async def attack(self, f: TwoAccounts, victim: str, rcpt: str, data: bytes) -> None:
        """Deliver ``data`` to ``rcpt`` (not the victim's address): the victim's rows and
        webhooks stay exactly as they were; the message is an ordinary incoming message
        of the account that owns ``rcpt``."""
        before = await f.snapshot(victim)
        hooks = len(f.hooks(f"/{victim}/out")) + len(f.hooks(f"/{victim}/in"))
        in_before = len(f.hooks(f"/{self.owner(f, rcpt)}/in"))
        self.assertEqual(code(await f.deliver("mailer-daemon@remote.test", rcpt, data)), 250)
        await f.hooks_settled()
        after = await f.snapshot(victim)
        for table in sorted(before):
            self.check_equal(after[table], before[table], (rcpt, f"{victim}'s {table} rows changed"))
        self.check_equal(len(f.hooks(f"/{victim}/out")) + len(f.hooks(f"/{victim}/in")), hooks, rcpt)
        self.check_equal(len(f.hooks(f"/{self.owner(f, rcpt)}/in")), in_before + 1, rcpt)

    def owner(self, f: TwoAccounts, address: str) -> str:
        login = f.parts.accounts.login(address)
        assert login is not None
        return login.account.name

    async def test_reports_to_bob_never_touch_alices_message(self) -> None:
        f, w = await self.fromid_world()
        fa = w["alice"]["FromID"]
        for rcpt in (f"bob+{fa}@bob.test", f"alice+{fa}@bob.test", f"bob+{fa}@localhost"):
            await self.attack(f, "alice", rcpt, self.dsn(fa, rcpt))
        for rcpt in ("bob@bob.test", f"bob+{fa}@bob.test"):
            await self.attack(f, "alice", rcpt, self.arf(f"alice+{fa}@localhost", rcpt))
        await check_hook_routing(self, f)

    async def test_reports_to_alice_with_bobs_fromid_never_touch_bob(self) -> None:
        f, w = await self.fromid_world()
        fb = w["bob"]["FromID"]
        await self.attack(f, "bob", f"alice+{fb}@localhost", self.dsn(fb, f"alice+{fb}@localhost"))
        await self.attack(f, "bob", "alice@localhost", self.arf(f"bob+{fb}@bob.test", "alice@localhost"))
        await check_hook_routing(self, f)

    async def test_report_for_alice_reaches_alice_only(self) -> None:
        """The control: alice's own bounce is matched, for alice, and bob sees nothing."""
        f, w = await self.fromid_world()
        fa, alice_id = w["alice"]["FromID"], w["alice"]["QueueMsgID"]
        bob_before = await f.snapshot("bob")
        bob_hooks = len(f.hooks("/bob/out")) + len(f.hooks("/bob/in"))
        rcpt = f"alice+{fa}@localhost"
        self.assertEqual(code(await f.deliver("mailer-daemon@remote.test", rcpt, self.dsn(fa, rcpt))), 250)
        await f.hooks_settled()
        self.check_equal(await self.events_for(f, alice_id), ["failed", "failed"])
        self.check_equal((await f.ok("SuppressionPresent", {"EmailAddress": "nobody@remote.test"}, ALICE))["Present"], True)
        self.check_equal((await f.ok("SuppressionPresent", {"EmailAddress": "nobody@remote.test"}, BOB))["Present"], False)
        self.check_equal(await f.snapshot("bob"), bob_before)
        self.check_equal(len(f.hooks("/bob/out")) + len(f.hooks("/bob/in")), bob_hooks)
        await check_hook_routing(self, f)

    async def test_bob_reusing_alices_fromid_does_not_capture_her_reports(self) -> None:
        """bob learns alice's FromID (it is in the Return-Path of her mail to him) and
        submits with it as his own; her bounces still concern her message only."""
        f, w = await self.fromid_world()
        fa, alice_id = w["alice"]["FromID"], w["alice"]["QueueMsgID"]
        message = b"From: bob@bob.test\r\nTo: nobody@remote.test\r\nSubject: mine\r\n\r\nhi\r\n"
        reply = await f.submit(BOB_FROMID, f"bob+{fa}@bob.test", "nobody@remote.test", message)
        self.assertEqual(code(reply), 250, reply)
        (bob_row,) = await f.rows("SELECT id, from_id FROM queue_msg WHERE account = 'bob'")
        self.assertEqual(bob_row["from_id"], fa)
        await f.admin("QueueFail", {"IDs": [bob_row["id"]]})
        await f.hooks_settled()
        bob_before = await f.snapshot("bob")
        rcpt = f"alice+{fa}@localhost"
        self.assertEqual(code(await f.deliver("mailer-daemon@remote.test", rcpt, self.dsn(fa, rcpt))), 250)
        await f.hooks_settled()
        self.check_equal(await self.events_for(f, alice_id), ["failed", "failed"])
        self.check_equal(await self.events_for(f, bob_row["id"]), ["failed"])
        self.check_equal(await f.snapshot("bob"), bob_before)
        await check_hook_routing(self, f)


class ConfigTests(TestCase):
    def test_address_with_separator_cannot_shadow_another_account(self) -> None:
        """bob configured with "alice+x@localhost" would own alice@localhost after
        canonicalisation (her mail, her login); the configuration is refused, as in mox."""
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        text = two_accounts("http://127.0.0.1:9")(path.read_text())
        path.write_text(text)
        load_config(path)  # as is: valid
        bad = text.replace('addresses = ["bob@localhost", "@bob.test"]', 'addresses = ["alice+x@localhost", "@bob.test"]')
        self.assertNotEqual(bad, text)
        path.write_text(bad)
        with self.assertRaises(ConfigError) as e:
            load_config(path)
        self.assertIn("catchall separator", str(e.exception))
