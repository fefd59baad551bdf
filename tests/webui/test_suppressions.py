"""The account suppression list page: the logged-in account's list only."""

from __future__ import annotations

import re
from typing import Any

from twisted.trial.unittest import TestCase

from tests.webui.fixture import OTHER, Browser, WebUIFixture


def listed(page: Any) -> list[str]:
    """The addresses on the page (the remove buttons' hidden fields)."""
    return sorted(re.findall(r'name="action" value="remove" /><input type="hidden" name="address" value="([^"]*)"',
                             page.text))  # fmt: skip


class SuppressionPageTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.mox = await self.login()
        self.other = await self.login(OTHER)

    async def login(self, login: tuple[str, str] | None = None) -> Browser:
        b = self.f.browser()
        reply = await (b.login_account(login) if login else b.login_account())
        self.assertEqual(reply.status, 303)
        return b

    async def change(self, b: Browser, **fields: Any) -> Any:
        token = (await b.get("/account/suppressions/")).csrf()
        return await b.post("/account/suppressions/", {"csrf_token": token, **fields})

    async def test_add_search_remove(self) -> None:
        page = await self.mox.get("/account/suppressions/")
        self.assertEqual(page.status, 200)
        self.assertIn("The suppression list is empty.", page.text)
        reply = await self.change(self.mox, action="add", address="John.Doe+news@Example.com",
                                  reason="<script>alert(1)</script>")  # fmt: skip
        self.assertEqual((reply.status, reply.header("location")), (303, "/account/suppressions/?done=added"))
        await self.change(self.mox, action="add", address="jane@example.org")
        self.assertEqual(await self.f.suppressions("mox"), ["jane@example.org", "johndoe@example.com"])
        page = await self.mox.get("/account/suppressions/?done=added")
        self.assertIn("The address was added to the suppression list.", page.text)
        self.assertEqual(listed(page), ["jane@example.org", "johndoe@example.com"])
        self.assertIn("John.Doe+news@example.com", page.text)  # the original address
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", page.text)
        self.assertNotIn("<script>alert", page.text)
        self.assertIn("2 address(es) on the suppression list of account mox.", page.text)
        # Search: addresses and reasons, case-insensitive.
        self.assertEqual(listed(await self.mox.get("/account/suppressions/?q=JOHN")), ["johndoe@example.com"])
        self.assertEqual(listed(await self.mox.get("/account/suppressions/?q=alert")), ["johndoe@example.com"])
        page = await self.mox.get("/account/suppressions/?q=nothing")
        self.assertEqual(listed(page), [])
        self.assertIn("No suppressed addresses match.", page.text)
        # Errors from the webapi's methods are shown; nothing changes.
        reply = await self.change(self.mox, action="add", address="johndoe+x@example.com")
        self.assertEqual(reply.status, 400)
        self.assertIn("is already on the suppression list", reply.text)
        reply = await self.change(self.mox, action="add", address="not an address")
        self.assertEqual(reply.status, 400)
        self.assertIn("invalid email address", reply.text)
        self.assertIn('value="not an address"', reply.text)  # kept in the form
        reply = await self.change(self.mox, action="bogus", address="x@example.com")
        self.assertEqual(reply.status, 400)
        self.assertEqual(await self.f.suppressions("mox"), ["jane@example.org", "johndoe@example.com"])
        # Remove by the listed (base) address.
        reply = await self.change(self.mox, action="remove", address="johndoe@example.com")
        self.assertEqual((reply.status, reply.header("location")), (303, "/account/suppressions/?done=removed"))
        self.assertEqual(await self.f.suppressions("mox"), ["jane@example.org"])
        reply = await self.change(self.mox, action="remove", address="johndoe@example.com")
        self.assertEqual(reply.status, 400)
        self.assertIn("is not on the suppression list", reply.text)

    async def test_accounts_are_separate(self) -> None:
        await self.change(self.mox, action="add", address="secret@example.com", reason="mox's own")
        # Another account does not see it, whatever the URL says.
        for url in ("/account/suppressions/", "/account/suppressions/?account=mox",
                    "/account/suppressions/?q=secret"):  # fmt: skip
            page = await self.other.get(url)
            self.assertEqual(page.status, 200)
            self.assertEqual(listed(page), [], url)
            self.assertNotIn("secret@example.com", page.text)
            self.assertIn("account other.", page.text)
        # Nor remove it, nor add to it with a crafted form field.
        reply = await self.change(self.other, action="remove", address="secret@example.com", account="mox")
        self.assertEqual(reply.status, 400)
        reply = await self.change(self.other, action="add", address="planted@example.com", account="mox")
        self.assertEqual(reply.status, 303)
        self.assertEqual(await self.f.suppressions("mox"), ["secret@example.com"])
        self.assertEqual(await self.f.suppressions("other"), ["planted@example.com"])
        # Nor with mox's CSRF token.
        mox_token = (await self.mox.get("/account/suppressions/")).csrf()
        reply = await self.other.post("/account/suppressions/", {"csrf_token": mox_token, "action": "add",
                                                                 "address": "x@example.com"})  # fmt: skip
        self.assertEqual(reply.status, 403)
        # The admin session is no account session.
        admin = self.f.browser()
        await admin.login_admin()
        self.assertEqual((await admin.get("/account/suppressions/")).status, 303)
        self.assertEqual(await self.f.suppressions("other"), ["planted@example.com"])
