"""Admin pages: hold rules (``/admin/holdrules/``).

A hold rule holds new messages (when they are queued) and, when it is added, the queued
messages that match every non-empty field: sending account, MAIL FROM domain,
recipient domain.  The page lists the configuration file's rules (``[[hold_rules]]``,
read-only: they change there) and those added here or through the admin API, adds one
(the notice says how many queued messages it held) and removes one (the messages it held
stay held), through :class:`~moxtw.admin.ops.QueueAdmin` like ``moxtw holdrules
add|remove`` and the admin API's HoldRuleAdd/HoldRuleRemove.

A rule with every field empty holds every message: the form asks for a tick to add one.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.ops import AdminError, RuleView
from ...store import admin as sa
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import Fields, field
from ..layout import Content, hidden, table, text_input
from .queue import MAX_ID, parse_int

#: Longest value accepted in a field (an account name or a domain is far shorter).
MAX_FIELD = 255


def _any(value: str) -> Content:
    return value or tags.span("any", class_="empty")


def _notice(fields: Fields) -> str:
    done = field(fields, "done")
    try:
        rule = parse_int(field(fields, "rule") or "0", "rule", 0, MAX_ID)
        n = parse_int(field(fields, "count") or "0", "count", 0, 2**62)
    except sa.FilterError:
        return ""
    if done == "added":
        return f"Hold rule {rule} added; it holds {n} queued message(s)."
    if done == "removed":
        return f"Hold rule {rule} removed; the messages it held stay held (release them on the queue page)."
    return ""


@attrs.define(eq=False)
class HoldRulePages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        return await self._render(page, notice=_notice(page.query))

    @app.route("/", methods=["POST"])
    @guarded()
    async def add(self, request: Request, page: Page) -> bytes:
        values = {name: field(page.form, name).strip() for name in ("account", "sender_domain", "recipient_domain")}
        if any(len(v) > MAX_FIELD for v in values.values()):
            return await self._render(page, values, error=f"Values are at most {MAX_FIELD} characters.", status=400)
        if not any(values.values()) and field(page.form, "everything") != "yes":
            error = ("A rule with no account and no domains holds every message. Tick \u201cHold every message\u201d "
                     "to add one, or fill in a field.")  # fmt: skip
            return await self._render(page, values, error=error, status=400)
        try:
            rule, held = await self.ui.queue.add_hold_rule(
                values["account"], values["sender_domain"], values["recipient_domain"]
            )
        except AdminError as e:
            return await self._render(page, values, error=f"Hold rule not added: {e}", status=400)
        raise Redirect(self._url(page, done="added", rule=str(rule.id), count=str(held)))

    @app.route("/remove", methods=["POST"])
    @guarded()
    async def remove(self, request: Request, page: Page) -> bytes:
        try:
            rule_id = parse_int(field(page.form, "id"), "rule ID", 0, MAX_ID)
        except sa.FilterError as e:
            raise PageError(400, "Bad request", str(e)) from None
        try:
            await self.ui.queue.remove_hold_rule(rule_id)
        except AdminError as e:
            return await self._render(page, error=f"Hold rule not removed: {e}", status=400)
        raise Redirect(self._url(page, done="removed", rule=str(rule_id)))

    def _url(self, page: Page, **params: str) -> str:
        return page.url("holdrules/") + "?" + urlencode(params)

    async def _render(
        self, page: Page, values: dict[str, str] | None = None, *, notice: str = "", error: str = "",
        status: int = 200,
    ) -> bytes:  # fmt: skip
        page.current = "holdrules/"
        rules = await self.ui.queue.hold_rules()
        content: list[Content] = [
            tags.p("A hold rule keeps matching messages in the queue until an admin releases them: new messages "
                   "when they are queued, and the queued messages that match when the rule is added. Every field "
                   "a rule has must match; an empty field matches anything."),  # fmt: skip
            self._table(page, rules),
            tags.h2("Add a hold rule"),
            self._form(page, values or {}),
        ]
        return await page.render("Hold rules", *content, notice=notice, error=error, status=status)

    def _table(self, page: Page, rules: list[RuleView]) -> Tag:
        rows: list[list[Content]] = []
        for r in rules:
            if r.id == 0:
                where: Content = "configuration file"
                action: Content = tags.span("change it in the configuration file", class_="empty")
            else:
                where = "added here or through the admin API"
                action = tags.form(method="post", action=page.url("holdrules/remove"), class_="inline")(
                    hidden("csrf_token", page.csrf),
                    hidden("id", str(r.id)),
                    tags.button("Remove", type="submit", **{"aria-label": f"Remove hold rule {r.id}"}),
                )
            rows.append([str(r.id) if r.id else "-", _any(r.account), _any(r.sender_domain),
                         _any(r.recipient_domain), where, action])  # fmt: skip
        headers = ["ID", "Account", "Sender domain", "Recipient domain", "Defined in", "Action"]
        if rows:
            return table("Hold rules", headers, rows)
        # The table even when empty: its caption is where people (and tests) look.
        return tags.div(class_="table")(
            tags.table(
                tags.caption("Hold rules"),
                tags.thead(tags.tr([tags.th(h, scope="col") for h in headers])),
                tags.tbody(tags.tr(tags.td("No hold rules: no message is held by a rule.", colspan=str(len(headers)),
                                           class_="empty"))),  # fmt: skip
            )
        )

    def _form(self, page: Page, values: dict[str, str]) -> Tag:
        return tags.form(method="post", action=page.url("holdrules/"), class_="holdrule")(
            hidden("csrf_token", page.csrf),
            tags.fieldset(
                tags.legend("New rule"),
                text_input("account", "Account", values.get("account", ""), hint="empty: any account"),
                text_input("sender_domain", "Sender domain", values.get("sender_domain", ""),
                           hint="MAIL FROM domain; empty: any"),  # fmt: skip
                text_input("recipient_domain", "Recipient domain", values.get("recipient_domain", ""),
                           hint="empty: any"),  # fmt: skip
                tags.div(class_="field")(
                    tags.label(tags.input(type="checkbox", name="everything", value="yes"),
                               " Hold every message (all fields empty)"),  # fmt: skip
                ),
            ),
            tags.div(class_="buttons")(tags.button("Add hold rule", type="submit")),
        )
