"""Admin pages: the accounts and their settings (``/admin/accounts/``).

The list shows every account of the running configuration (name, domain, login
addresses, webhooks set or not, daily limits).  ``/admin/accounts/<name>`` shows one
account's settings in a form whose inputs are named by setting key (every key of
:data:`~moxtw.settings.EDITABLE_KEYS`: both webhooks with URL, authorization, signing
secret, events and requests in flight; the keep periods; FromID login addresses; the
daily limits; ``login_disabled``), saved through :class:`~moxtw.settings.SettingsOps`
like the admin API's AccountSettingsSave and ``moxtw account set``: the configuration
file is edited in place (comments kept), validated by the loader, written atomically and
applied to the running daemon (and its HTTP workers) without a restart.

Secrets (authorization values, signing secrets) are never rendered: the current value is
described redacted (``Bearer …wxyz``), the input starts empty (empty keeps it) and a
"remove" checkbox clears it.  The form carries the settings' version: a save over
settings changed meanwhile is refused (409) with the current values; an invalid value is
refused (400) with the loader's message; nothing is written in either case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...config import OUTGOING_EVENTS, AccountConfig, WebhookConfig
from ...settings import (
    ACCOUNT_KEYS,
    INT,
    WEBHOOK_KEYS,
    AccountSettings,
    SettingsConflict,
    SettingsError,
)
from ..account.settings import HOOKS, NOTICES, SECRETS, Shown, form_changes, not_saved
from ..account.settings import shown_settings as owner_shown
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..delivery import facts
from ..http import Fields, field
from ..layout import Content, hidden, table, text_input

#: Integer inputs: empty means "the default" (the key is removed from the file).
INT_KEYS = tuple(
    [f"{hook}.{key}" for hook, keys in WEBHOOK_KEYS.items() for key, kind in keys.items() if kind == INT]
    + [key for key, kind in ACCOUNT_KEYS.items() if kind == INT]
)
#: The text inputs of the form (secrets and event checkboxes apart).
TEXT_KEYS = (
    "outgoing_webhook.url",
    "outgoing_webhook.max_in_flight",
    "incoming_webhook.url",
    "incoming_webhook.max_in_flight",
    "keep_retired_messages",
    "keep_retired_webhooks",
    "fromid_login_addresses",
    "max_outgoing_messages_per_day",
    "max_first_time_recipients_per_day",
    "login_disabled",
)


def shown_settings(s: AccountSettings) -> Shown:
    """The account page's inputs, and the admin's own."""
    values = dict(owner_shown(s).values)
    for name in HOOKS:
        hook: WebhookConfig | None = getattr(s, name)
        values[f"{name}.max_in_flight"] = "" if hook is None else str(hook.max_in_flight)
    values["fromid_login_addresses"] = ", ".join(s.fromid_login_addresses)
    values["max_outgoing_messages_per_day"] = str(s.max_outgoing_messages_per_day)
    values["max_first_time_recipients_per_day"] = str(s.max_first_time_recipients_per_day)
    values["login_disabled"] = s.login_disabled
    return Shown(values, s.version())


def shown_form(form: Fields) -> Shown:
    """The form as posted (secrets left out), to show it again with an error."""
    values: dict[str, Any] = {key: field(form, key) for key in TEXT_KEYS}
    for name in HOOKS:
        values[f"{name}.events"] = tuple(form.get(f"{name}.events", []))
    return Shown(values, field(form, "version"))


def admin_changes(form: Fields, current: AccountSettings) -> dict[str, Any]:
    """The changes a posted form asks for (:func:`~moxtw.webui.account.settings.form_changes`,
    the account page's reading of the same inputs) with the admin's inputs: an empty
    number is "the default", FromID login addresses may be given one a line.  Events
    equal to the current ones in another order are no change."""
    posted = dict(form)
    defaults = [key for key in INT_KEYS if key in posted and not field(posted, key)]
    for key in defaults:
        del posted[key]
    if "fromid_login_addresses" in posted:
        posted["fromid_login_addresses"] = [field(posted, "fromid_login_addresses").replace("\n", ",")]
    changes = form_changes(posted)
    for key in defaults:
        changes[key] = None
    hook = current.outgoing_webhook
    events = changes.get("outgoing_webhook.events")
    if hook is not None and events is not None and set(events) == set(hook.events):
        del changes["outgoing_webhook.events"]
    return changes


def account_url(page: Page, name: str) -> str:
    return page.url("accounts/" + quote(name, safe=""))


def webhooks_text(account: AccountConfig) -> str:
    hooks = [label.split()[0].lower() for name, label in HOOKS.items() if getattr(account, name) is not None]
    return ", ".join(hooks) or "none"


def limits_text(account: AccountConfig | AccountSettings) -> str:
    return (
        f"{account.max_outgoing_messages_per_day} messages, "
        f"{account.max_first_time_recipients_per_day} first-time recipients"
    )


def login_addresses(account: AccountConfig) -> Content:
    """The addresses one can log in with (an ``@domain`` entry is a catch-all, not a
    login), then the FromID login addresses."""
    logins = [a for a in account.addresses if not a.startswith("@")]
    parts: list[Content] = [", ".join(logins) or "none"]
    if account.fromid_login_addresses:
        parts += [tags.br(), "FromID: ", ", ".join(account.fromid_login_addresses)]
    return parts


@attrs.define(eq=False)
class AccountPages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    def _accounts(self) -> Mapping[str, AccountConfig]:
        return self.ui.accounts.accounts

    def _settings(self, name: str) -> AccountSettings:
        account = self._accounts().get(name)
        if account is None:
            raise PageError(404, "No such account", f"There is no account {name!r}.")
        if self.ui.settings is None:
            return AccountSettings.from_account(account)
        return self.ui.settings.get(name)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def index(self, request: Request, page: Page) -> bytes:
        page.current = "accounts/"
        rows: list[list[Content]] = []
        for name, account in sorted(self._accounts().items()):
            rows.append([
                tags.a(name, href=account_url(page, name)),
                account.domain,
                login_addresses(account),
                webhooks_text(account),
                limits_text(account),
                "disabled" if account.login_disabled else "allowed",
            ])  # fmt: skip
        headers = ["Account", "Domain", "Login addresses", "Webhooks", "Daily limits", "Login"]
        return await page.render(
            "Accounts",
            tags.p(f"{len(rows)} account(s). Choose one to see and change its settings."),
            table("Accounts", headers, rows, empty="No accounts are configured."),
        )

    @app.route("/<string:name>", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page, name: str) -> bytes:
        settings = self._settings(name)
        notice = NOTICES.get(field(page.query, "done"), "")
        return await self._render(page, settings, shown_settings(settings), notice=notice)

    @app.route("/<string:name>", methods=["POST"])
    @guarded()
    async def save(self, request: Request, page: Page, name: str) -> bytes:
        current = self._settings(name)
        ops = self.ui.settings
        if ops is None:
            raise PageError(503, "Settings unavailable", "Settings cannot be changed in this process.")
        try:
            changes = admin_changes(page.form, current)
            result = await ops.save(name, changes, version=field(page.form, "version"))
        except SettingsConflict as e:
            fresh = ops.get(name)
            message = f"{not_saved(ops, e)} The form now shows the current settings; make your change again."
            return await self._render(page, fresh, shown_settings(fresh), error=message, status=409)
        except SettingsError as e:
            if name not in self._accounts():  # removed meanwhile
                raise PageError(404, "No such account", f"There is no account {name!r}.") from None
            fresh = ops.get(name)
            return await self._render(page, fresh, shown_form(page.form), error=not_saved(ops, e), status=400)
        if not result.update.written:
            done = "unchanged"
        else:
            done = "saved" if ops.get(name).version() == result.settings.version() else "pending"
        raise Redirect(account_url(page, name) + "?" + urlencode({"done": done}))

    # --- rendering --------------------------------------------------------------------------

    async def _render(self, page: Page, settings: AccountSettings, shown: Shown, *, notice: str = "",
                      error: str = "", status: int = 200) -> bytes:  # fmt: skip
        page.current = "accounts/"
        account = self._accounts().get(settings.account)
        about: list[tuple[str, Content]] = []
        if account is not None:
            about = [
                ("Domain", account.domain),
                ("Addresses", ", ".join(account.addresses) or "none"),
                ("Full name", account.full_name or "-"),
            ]
        content: list[Content] = [
            tags.p(tags.a("← All accounts", href=page.url("accounts/"))),
            facts(about),
            tags.h2("Settings"),
            tags.p(
                "Saved in moxtw's configuration file (comments and layout kept, checked before writing) "
                "and in effect at once, without a restart."
            ),
        ]
        if self.ui.settings is None:
            content.append(tags.p("Settings cannot be changed in this process.", class_="error"))
        content.append(self._form(page, settings.redacted(), shown))
        return await page.render(f"Account {settings.account}", *content, notice=notice, error=error, status=status)

    def _secret(self, name: str, key: str, label: str, current: WebhookConfig | None) -> Tag:
        input_name = f"{name}.{key}"
        value = "" if current is None else str(getattr(current, key))  # redacted
        if key == "authorization":
            about = "Sent as the Authorization header of each request."
        else:
            about = "Signs each request (Standard Webhooks): whsec_ and base64; `moxtw hooks secret` makes one."
        hint = f"Set ({value}). Leave empty to keep it. {about}" if value else f"Not set. {about}"
        out = tags.div(class_="secret")(
            text_input(input_name, label, "", hint=hint, autocomplete="off", spellcheck="false")
        )
        if value:
            ident = f"f-remove-{input_name}"
            out(
                tags.div(class_="check")(
                    tags.input(type="checkbox", name="remove", value=input_name, id=ident),
                    " ",
                    tags.label(f"Remove the {label[0].lower()}{label[1:]}", for_=ident),
                )
            )
        return out

    def _hook(self, name: str, title: str, hook: WebhookConfig | None, shown: Shown) -> Tag:
        parts: list[Content] = [
            tags.legend(title),
            text_input(f"{name}.url", f"{title} URL", shown.values[f"{name}.url"], inputmode="url",
                       hint="http:// or https://; empty: no webhook"),  # fmt: skip
        ]
        for key, what in SECRETS.items():
            parts.append(self._secret(name, key, f"{title} {what}", hook))
        parts.append(
            text_input(f"{name}.max_in_flight", f"{title} requests in flight", shown.values[f"{name}.max_in_flight"],
                       kind="number", min="1", hint="At most this many requests at once; empty: 4.")
        )  # fmt: skip
        if name == "outgoing_webhook":
            chosen = set(shown.values[f"{name}.events"])
            boxes = []
            for event in OUTGOING_EVENTS:
                ident = f"f-{name}.events-{event}"
                box = tags.input(type="checkbox", name=f"{name}.events", value=event, id=ident)
                if event in chosen:
                    box(checked="checked")
                boxes.append(tags.span(class_="check")(box, " ", tags.label(event, for_=ident)))
            parts.append(
                tags.fieldset(class_="events")(
                    tags.legend("Outgoing webhook events"),
                    tags.p("None checked: every event.", class_="hint"),
                    boxes,
                )
            )
        return tags.fieldset(parts)

    def _form(self, page: Page, redacted: AccountSettings, shown: Shown) -> Tag:
        v = shown.values
        keep_hint = "A duration such as 72h, 30m or 1h30m; 0 or empty: not kept."
        fieldsets: list[Content] = [
            self._hook(name, title, getattr(redacted, name), shown) for name, title in HOOKS.items()
        ]
        fieldsets.append(
            tags.fieldset(
                tags.legend("Retired messages and webhooks"),
                text_input("keep_retired_messages", "Keep retired messages", v["keep_retired_messages"],
                           hint=keep_hint),
                text_input("keep_retired_webhooks", "Keep retired webhooks", v["keep_retired_webhooks"],
                           hint=keep_hint),
            )
        )  # fmt: skip
        fieldsets.append(
            tags.fieldset(
                tags.legend("Logins and limits"),
                text_input("fromid_login_addresses", "FromID login addresses", v["fromid_login_addresses"],
                           hint="Comma-separated. Messages sent with one of these logins get a unique "
                           "MAIL FROM per recipient (FromID), so bounces are matched; the domain needs a "
                           "catch-all separator. Empty: none."),
                text_input("max_outgoing_messages_per_day", "Messages per day", v["max_outgoing_messages_per_day"],
                           kind="number", min="0", hint="Recipients submitted in 24 hours; empty: 1000."),
                text_input("max_first_time_recipients_per_day", "First-time recipients per day",
                           v["max_first_time_recipients_per_day"], kind="number", min="0",
                           hint="Recipients never sent to before, in 24 hours; empty: 200."),
                text_input("login_disabled", "Login disabled", v["login_disabled"],
                           hint="Non-empty: every login of this account is refused (webapi, SMTP, account "
                           "pages); the text is for you, clients are only told no. Empty: logins allowed."),
            )
        )  # fmt: skip
        return tags.form(method="post", action=account_url(page, redacted.account), class_="settings")(
            hidden("csrf_token", page.csrf),
            hidden("version", shown.version),
            fieldsets,
            tags.div(class_="buttons")(tags.button("Save settings", type="submit")),
        )
