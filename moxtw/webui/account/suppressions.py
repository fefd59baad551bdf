"""Account pages: the suppression list (``/account/suppressions/``).

Lists, searches, adds and removes the logged-in account's suppressions through the
webapi's own SuppressionList, SuppressionAdd and SuppressionRemove (same validation, base
address normalisation, errors and metrics).  The account is always the session's:
nothing in the URL or the form can name another one.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...webapi import types as t
from ...webapi.errors import WebAPIError
from ..core import ACCOUNT_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import field
from ..layout import Content, hidden, table, text_input, when

#: Notices after a change (fixed texts: nothing from the URL is echoed as a notice).
NOTICES = {"added": "The address was added to the suppression list.", "removed": "The address was removed."}


def _matches(s: t.Suppression, search: str) -> bool:
    needle = search.casefold()
    return any(needle in v.casefold() for v in (s.BaseAddress, s.OriginalAddress, s.Reason))


@attrs.define(eq=False)
class SuppressionPages:
    ui: WebUI
    area: ClassVar = ACCOUNT_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        return await self._render(page, notice=NOTICES.get(field(page.query, "done"), ""))

    @app.route("/", methods=["POST"])
    @guarded()
    async def change(self, request: Request, page: Page) -> bytes:
        login = page.login()
        action = field(page.form, "action")
        address = field(page.form, "address")
        try:
            if action == "add":
                reason = field(page.form, "reason")
                req = t.SuppressionAddRequest(EmailAddress=address, Manual=True, Reason=reason)
                await self.ui.methods.SuppressionAdd(login, req)
                done = "added"
            elif action == "remove":
                await self.ui.methods.SuppressionRemove(login, t.SuppressionRemoveRequest(EmailAddress=address))
                done = "removed"
            else:
                raise PageError(400, "Bad request", "action: expected add or remove")
        except WebAPIError as e:
            return await self._render(page, error=e.message, status=400, address=address)
        raise Redirect(page.url("suppressions/") + "?" + urlencode({"done": done}))

    async def _render(self, page: Page, *, notice: str = "", error: str = "", status: int = 200,
                      address: str = "") -> bytes:  # fmt: skip
        page.current = "suppressions/"
        login = page.login()
        result = await self.ui.methods.SuppressionList(login, t.SuppressionListRequest())
        everything = result.Suppressions or []
        search = field(page.query, "q")
        shown = [s for s in everything if _matches(s, search)] if search else everything
        rows = [
            [
                s.BaseAddress,
                s.OriginalAddress,
                when(s.Created.timestamp()),
                "yes" if s.Manual else "no",
                s.Reason,
                self._remove_form(page, s),
            ]
            for s in shown
        ]
        count = f"{len(everything)} address(es) on the suppression list of account {login.account.name}."
        if search:
            count += f" {len(shown)} match “{search}”."
        content: list[Content] = [
            tags.p(
                "Messages to these addresses fail at once instead of being delivered. Addresses are "
                "compared by base address: without the part after + or -, without dots, lower case."
            ),
            tags.p(count),
            tags.form(method="get", action=page.url("suppressions/"), role="search", class_="filter")(
                text_input("q", "Search", search, kind="search"),
                tags.button("Search", type="submit"),
            ),
            table("Suppressed addresses", ["Address", "Original address", "Added", "Manual", "Reason", "Remove"],
                  rows, empty="No suppressed addresses match." if search else "The suppression list is empty."),
            tags.h2("Add an address"),
            tags.form(method="post", action=page.url("suppressions/"), class_="add")(
                hidden("csrf_token", page.csrf),
                hidden("action", "add"),
                text_input("address", "Address", address, inputmode="email", required="required"),
                text_input("reason", "Reason (optional)"),
                tags.button("Add", type="submit"),
            ),
        ]  # fmt: skip
        return await page.render("Suppression list", *content, notice=notice, error=error, status=status)

    def _remove_form(self, page: Page, s: t.Suppression) -> Tag:
        return tags.form(method="post", action=page.url("suppressions/"), class_="inline")(
            hidden("csrf_token", page.csrf),
            hidden("action", "remove"),
            hidden("address", s.BaseAddress),
            tags.button("Remove", type="submit", **{"aria-label": f"Remove {s.BaseAddress}"}),
        )
