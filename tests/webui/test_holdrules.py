"""The admin hold rules page: the configuration file's rules (read-only) and the store's,
add (with the count of queued messages it holds, and new messages held), remove, clear
errors for bad input, CSRF."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

from twisted.trial.unittest import TestCase

from tests.webui.fixture import OTHER, WebUIFixture

CONFIG_RULE = '\n[[hold_rules]]\nrecipient_domain = "config-held.example"\n'


def rule_rows(page: Any) -> list[list[str]]:
    """The rows of the "Hold rules" table as text cells (without the action column)."""
    table = page.text.split("<caption>Hold rules</caption>", 1)[1].split("</table>", 1)[0]
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        rows.append(cells[:5])
    return rows


class HoldRulePageTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self, edit=lambda text: text + CONFIG_RULE).start()
        self.b = self.f.browser()
        await self.b.login_admin()

    async def add(self, **fields: str) -> Any:
        page = await self.b.get("/admin/holdrules/")
        form = {"account": "", "sender_domain": "", "recipient_domain": "", **fields}
        return await self.b.post("/admin/holdrules/", {"csrf_token": page.csrf(), **form})

    async def stored_rules(self) -> list[tuple[int, str, str, str]]:
        rules = await self.f.parts.admin.ops.hold_rules()
        return [(r.id, r.account, r.sender_domain, r.recipient_domain) for r in rules if r.id]

    async def test_list_add_and_remove(self) -> None:
        page = await self.b.get("/admin/holdrules/")
        self.assertEqual(page.status, 200)
        self.assertIn('aria-current="page">Hold rules</a>', page.text)
        # The configuration file's rule: shown, without a Remove button.
        self.assertEqual(rule_rows(page), [["-", "any", "any", "config-held.example", "configuration file"]])
        self.assertNotIn(">Remove</button>", page.text)
        for name, label in (("account", "Account"), ("sender_domain", "Sender domain"),
                            ("recipient_domain", "Recipient domain")):  # fmt: skip
            self.assertIn(f'<label for="f-{name}">{label}</label><input type="text" name="{name}"', page.text)
        self.assertIn(">Add hold rule</button>", page.text)
        com = await self.f.send("a1@example.com", "a2@example.com")
        org = await self.f.send("b1@example.org")
        mine = await self.f.send("c1@example.com", login=OTHER)
        # Add: the queued messages it matches are held, and the notice says how many.
        reply = await self.add(account="mox", recipient_domain="EXAMPLE.com ")
        self.assertEqual(reply.status, 303)
        location = reply.header("location") or ""
        self.assertEqual(parse_qs(urlsplit(location).query)["count"], ["2"])
        page = await self.b.get(location)
        self.assertIn("holds 2 queued message(s)", page.text)
        ((rule_id, *fields),) = await self.stored_rules()
        self.assertEqual(fields, ["mox", "", "example.com"])
        self.assertIn(["-", "any", "any", "config-held.example", "configuration file"], rule_rows(page))
        self.assertIn([str(rule_id), "mox", "any", "example.com", "added here or through the admin API"],
                      rule_rows(page))  # fmt: skip
        held = await self.f.held()
        self.assertEqual({i: held[i] for i in com + org + mine}, {**{i: True for i in com}, org[0]: False,
                                                                  mine[0]: False})  # fmt: skip
        # New messages that match are held when they are queued.
        (new,) = await self.f.send("a3@example.com")
        (other_new,) = await self.f.send("b2@example.org")
        held = await self.f.held()
        self.assertEqual((held[new], held[other_new]), (True, False))
        # Remove: the rule goes, the messages it held stay held.
        self.assertIn(f'aria-label="Remove hold rule {rule_id}">Remove</button>', page.text)
        form = page.text.split('action="/admin/holdrules/remove"', 1)[1].split("</form>", 1)[0]
        token = re.search(r'name="csrf_token" value="([^"]*)"', form)
        assert token is not None
        reply = await self.b.post("/admin/holdrules/remove", {"csrf_token": token.group(1), "id": str(rule_id)})
        self.assertEqual(reply.status, 303)
        page = await self.b.get(reply.header("location") or "")
        self.assertIn(f"Hold rule {rule_id} removed", page.text)
        self.assertEqual(await self.stored_rules(), [])
        self.assertEqual(rule_rows(page), [["-", "any", "any", "config-held.example", "configuration file"]])
        self.assertTrue((await self.f.held())[new])
        (after,) = await self.f.send("a4@example.com")
        self.assertFalse((await self.f.held())[after])
        # Removing it again, or the configuration file's rule (ID 0): a clear error.
        for rule, message in ((str(rule_id), f"no hold rule with ID {rule_id}"), ("0", "configuration file"),
                              ("x", "rule ID: expected a number")):  # fmt: skip
            page = await self.b.get("/admin/holdrules/")
            reply = await self.b.post("/admin/holdrules/remove", {"csrf_token": page.csrf(), "id": rule})
            self.assertEqual(reply.status, 400, rule)
            self.assertIn(message, reply.text)
            self.assertNotIn("Traceback", reply.text)

    async def test_bad_input_is_a_clear_error(self) -> None:
        for fields, message in (
            ({"recipient_domain": "exa mple..com"}, "parsing recipient domain"),
            ({"sender_domain": "-bad-.example"}, "parsing sender domain"),
            ({"account": "nobody"}, "unknown account"),
            ({"recipient_domain": "x" * 300}, "at most 255 characters"),
            ({}, "holds every message"),
        ):
            reply = await self.add(**fields)
            self.assertEqual(reply.status, 400, fields)
            self.assertIn(html.escape(message, quote=False), reply.text, fields)
            self.assertIn('class="error"', reply.text)
            self.assertNotIn("Traceback", reply.text)
            # The form keeps what was typed (escaped).
            for name, value in fields.items():
                self.assertIn(f'name="{name}" id="f-{name}" value="{html.escape(value)}"', reply.text)
        self.assertEqual(await self.stored_rules(), [])
        reply = await self.add(account="<b>x</b>")
        self.assertIn("&lt;b&gt;x&lt;/b&gt;", reply.text)
        self.assertNotIn("<b>x</b>", reply.text)
        # A rule holding everything, when asked for explicitly.
        await self.f.send("a1@example.com")
        reply = await self.add(everything="yes")
        self.assertEqual(reply.status, 303)
        self.assertIn("holds 1 queued message(s)", (await self.b.get(reply.header("location") or "")).text)
        self.assertEqual([r[1:] for r in await self.stored_rules()], [("", "", "")])

    async def test_post_without_csrf_token_changes_nothing(self) -> None:
        (msg,) = await self.f.send("a1@example.com")
        reply = await self.b.post("/admin/holdrules/", {"recipient_domain": "example.com"})
        self.assertEqual(reply.status, 403)
        reply = await self.b.post("/admin/holdrules/", {"recipient_domain": "example.com", "csrf_token": "forged"})
        self.assertEqual(reply.status, 403)
        self.assertEqual(await self.stored_rules(), [])
        self.assertFalse((await self.f.held())[msg])
        await self.add(recipient_domain="example.com")
        ((rule_id, *_),) = await self.stored_rules()
        reply = await self.b.post("/admin/holdrules/remove", {"id": str(rule_id)})
        self.assertEqual(reply.status, 403)
        self.assertEqual(len(await self.stored_rules()), 1)
        anonymous = self.f.browser()
        self.assertEqual((await anonymous.get("/admin/holdrules/")).status, 303)
