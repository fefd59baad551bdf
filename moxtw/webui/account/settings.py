"""Account pages: the account's webhook settings and keep periods (``/account/settings/``).

One form whose inputs are named by setting key (``outgoing_webhook.url``,
``keep_retired_messages``, ...), saved through :class:`~moxtw.settings.SettingsOps` with
``allowed=OWNER_EDITABLE``, the same code as the admin API's AccountSettingsSave and
``moxtw account set``: the configuration file is edited (validated, atomically) and the
change applied to the running daemon without a restart.  The form carries the settings'
version; a save over settings changed meanwhile is refused (409) and nothing is written.

Secrets (authorization values, signing secrets) are never rendered: their inputs start
empty, the current value is described redacted (``Bearer …wxyz``), an empty input keeps
it and a "remove" checkbox clears it.  A setting the owner may not change (daily limits,
FromID login addresses, ``login_disabled``) posted anyway is refused (400) by
:class:`~moxtw.settings.SettingsOps`.

"Send test webhook" queues a test webhook to the outgoing webhook URL through the normal
webhook queue (:meth:`~moxtw.admin.ops.QueueAdmin.send_test_webhook`: persisted, retried,
signed, retired like every webhook); "Recent webhooks" lists the account's last queued
and retired webhooks with their last result.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.ops import AdminError
from ...config import OUTGOING_EVENTS, AccountConfig, WebhookConfig
from ...settings import (
    EDITABLE_KEYS,
    OWNER_EDITABLE,
    AccountSettings,
    SettingsConflict,
    SettingsError,
    SettingsOps,
    duration_text,
    parse_assignments,
)
from ...store import webhooks as sw
from ...webhooks.payloads import TEST_EVENT, TEST_SUBJECT
from ..core import ACCOUNT_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import Fields, field
from ..layout import Content, hidden, short, table, text_input, when

#: Webhooks shown under "Recent webhooks".
RECENT = 20
HOOKS = {"outgoing_webhook": "Outgoing webhook", "incoming_webhook": "Incoming webhook"}
SECRETS = {"authorization": "authorization", "signing_secret": "signing secret"}
#: The secret inputs a "remove" checkbox may name.
SECRET_KEYS = tuple(f"{hook}.{key}" for hook in HOOKS for key in SECRETS)
#: Notices after a POST (fixed texts: nothing from the URL is echoed).
NOTICES = {
    "saved": "Settings saved; they are in effect now.",
    "unchanged": "Nothing was changed.",
    "pending": "Settings saved in the configuration file, but the running daemon uses other values: "
    "command-line flags (such as localserve's --outgoing-webhook) override the file, or a reload is needed.",
}


@attrs.frozen
class Shown:
    """What the form shows: the values of the non-secret inputs, and the version."""

    values: dict[str, Any]
    version: str


def shown_settings(s: AccountSettings) -> Shown:
    values: dict[str, Any] = {}
    for name in HOOKS:
        hook: WebhookConfig | None = getattr(s, name)
        values[f"{name}.url"] = "" if hook is None else hook.url
        values[f"{name}.events"] = () if hook is None else hook.events
    values["keep_retired_messages"] = duration_text(s.keep_retired_messages)
    values["keep_retired_webhooks"] = duration_text(s.keep_retired_webhooks)
    return Shown(values, s.version())


def shown_form(form: Fields) -> Shown:
    """The form as posted (secrets left out), to show it again with an error."""
    values: dict[str, Any] = {}
    for name in HOOKS:
        values[f"{name}.url"] = field(form, f"{name}.url")
        values[f"{name}.events"] = tuple(form.get(f"{name}.events", []))
    for key in ("keep_retired_messages", "keep_retired_webhooks"):
        values[key] = field(form, key)
    return Shown(values, field(form, "version"))


def form_changes(form: Fields) -> dict[str, Any]:
    """The changes a posted form asks for (see :func:`moxtw.settings.parse_assignments`);
    :class:`SettingsError` for a contradictory form.  Every posted field named like an
    editable setting is passed on, so that one the owner may not change is refused by
    :meth:`~moxtw.settings.SettingsOps.save` rather than silently dropped."""
    pairs: list[tuple[str, str]] = []
    for key, values in form.items():
        if key in EDITABLE_KEYS and not key.endswith(".events") and values:
            pairs.append((key, values[0].strip()))
    if "outgoing_webhook.url" in form:
        # Checkboxes, posted with the URL: none checked is "every event".
        events = [e.strip() for e in form.get("outgoing_webhook.events", []) if e.strip()]
        pairs.append(("outgoing_webhook.events", ",".join(events)))
    changes = parse_assignments(pairs)
    for key in form.get("remove", []):
        if key not in SECRET_KEYS:
            raise SettingsError(f"remove: {key!r} is not a secret that can be removed")
        if field(form, key):
            raise SettingsError(f"{key}: give a new value or remove it, not both")
        changes[key] = None
    for name, label in HOOKS.items():
        if f"{name}.url" in form and not field(form, f"{name}.url"):
            for key, what in SECRETS.items():
                if field(form, f"{name}.{key}"):
                    raise SettingsError(f"{label} {what}: set the webhook's URL too (an empty URL removes the webhook)")
    return changes


def not_saved(ops: SettingsOps, e: SettingsError) -> str:
    """The error for the page: "Not saved: ...", without the configuration file's path."""
    text = str(e)
    if ops.live.path is not None:
        text = text.replace(str(ops.live.path), "the configuration file")
    if text.lower().startswith("not saved"):
        return text[0].upper() + text[1:]
    return f"Not saved: {text}"


def hook_event(kind: str, queue_msg_id: int, subject: str) -> str:
    if kind == sw.INCOMING:
        return "incoming message"
    if kind == TEST_EVENT and queue_msg_id == 0 and subject == TEST_SUBJECT:
        return f"{kind} (test)"
    return kind


def last_status(results: list[sw.HookAttempt]) -> Content:
    if not results:
        return "-"
    a = results[-1]
    if a.duration is None:
        return "sending"
    text = " ".join(p for p in (str(a.code) if a.code else "", a.error) if p)
    return short(text or ("ok" if a.success else "failed"), 80)


def response_snippet(results: list[sw.HookAttempt]) -> Content:
    if not results or not results[-1].response:
        return "-"
    return short(results[-1].response.decode("utf-8", "replace"), 60)


@attrs.define(eq=False)
class SettingsPages:
    ui: WebUI
    area: ClassVar = ACCOUNT_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    def _settings(self, account: AccountConfig) -> AccountSettings:
        if self.ui.settings is None:
            return AccountSettings.from_account(account)
        return self.ui.settings.get(account.name)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        settings = self._settings(page.login().account)
        notice = NOTICES.get(field(page.query, "done"), "")
        if field(page.query, "done") == "test":
            try:
                hook_id = int(field(page.query, "id"))
                notice = f"Test webhook {hook_id} queued; its result shows under Recent webhooks (reload to update)."
            except ValueError:
                notice = ""
        return await self._render(page, settings, shown_settings(settings), notice=notice)

    @app.route("/", methods=["POST"])
    @guarded()
    async def save(self, request: Request, page: Page) -> bytes:
        account = page.login().account
        ops = self.ui.settings
        if ops is None:
            raise PageError(503, "Settings unavailable", "Settings cannot be changed in this process.")
        try:
            changes = form_changes(page.form)
            hook = ops.get(account.name).outgoing_webhook
            events = changes.get("outgoing_webhook.events")
            if hook is not None and events is not None and set(events) == set(hook.events):
                del changes["outgoing_webhook.events"]  # the same events, maybe in another order
            result = await ops.save(account.name, changes, version=field(page.form, "version"),
                                    allowed=OWNER_EDITABLE)  # fmt: skip
        except SettingsConflict as e:
            current = ops.get(account.name)
            message = f"{not_saved(ops, e)} The form now shows the current settings; make your change again."
            return await self._render(page, current, shown_settings(current), error=message, status=409)
        except SettingsError as e:
            current = ops.get(account.name)
            return await self._render(page, current, shown_form(page.form), error=not_saved(ops, e), status=400)
        if not result.update.written:
            done = "unchanged"
        else:
            in_effect = ops.get(account.name)
            done = "saved" if in_effect.version() == result.settings.version() else "pending"
        raise Redirect(page.url("settings/") + "?" + urlencode({"done": done}))

    @app.route("/test", methods=["POST"])
    @guarded()
    async def test(self, request: Request, page: Page) -> bytes:
        account = page.login().account
        try:
            hook_id = await self.ui.queue.send_test_webhook(account.name)
        except AdminError as e:
            settings = self._settings(account)
            return await self._render(page, settings, shown_settings(settings), error=str(e), status=400)
        raise Redirect(page.url("settings/") + "?" + urlencode({"done": "test", "id": str(hook_id)}) + "#recent")

    # --- rendering --------------------------------------------------------------------------

    async def _render(self, page: Page, settings: AccountSettings, shown: Shown, *, notice: str = "",
                      error: str = "", status: int = 200) -> bytes:  # fmt: skip
        page.current = "settings/"
        redacted = settings.redacted()
        content: list[Content] = [
            tags.p(
                f"Webhooks and keep periods of account {settings.account}. Changes are saved in moxtw's "
                "configuration file and take effect at once."
            ),
            self._form(page, redacted, shown),
            tags.h2("Test webhook"),
            self._test_form(page, settings),
            tags.h2("Recent webhooks", id="recent"),
            await self._recent(page, settings),
        ]
        return await page.render("Settings", *content, notice=notice, error=error, status=status)

    def _secret(self, name: str, key: str, label: str, current: WebhookConfig | None) -> Tag:
        input_name = f"{name}.{key}"
        value = "" if current is None else str(getattr(current, key))
        if key == "authorization":
            about = "Sent as the Authorization header of each request."
        else:
            about = "Signs each request (Standard Webhooks): whsec_ and base64; `moxtw hooks secret` makes one."
        if value:
            hint = f"Set ({value}). Leave empty to keep it. {about}"
        else:
            hint = f"Not set. {about}"
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

    def _form(self, page: Page, redacted: AccountSettings, shown: Shown) -> Tag:
        fieldsets: list[Content] = []
        for name, title in HOOKS.items():
            hook: WebhookConfig | None = getattr(redacted, name)
            parts: list[Content] = [
                tags.legend(title),
                text_input(f"{name}.url", f"{title} URL", shown.values[f"{name}.url"], inputmode="url",
                           hint="http:// or https://; empty: no webhook"),  # fmt: skip
            ]
            for key, what in SECRETS.items():
                parts.append(self._secret(name, key, f"{title} {what}", hook))
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
            fieldsets.append(tags.fieldset(parts))
        keep_hint = "A duration such as 72h, 30m or 1h30m; 0 or empty: not kept."
        fieldsets.append(
            tags.fieldset(
                tags.legend("Retired messages and webhooks"),
                text_input("keep_retired_messages", "Keep retired messages", shown.values["keep_retired_messages"],
                           hint=keep_hint),
                text_input("keep_retired_webhooks", "Keep retired webhooks", shown.values["keep_retired_webhooks"],
                           hint=keep_hint),
            )
        )  # fmt: skip
        return tags.form(method="post", action=page.url("settings/"), class_="settings")(
            hidden("csrf_token", page.csrf),
            hidden("version", shown.version),
            fieldsets,
            tags.div(class_="buttons")(tags.button("Save settings", type="submit")),
        )

    def _test_form(self, page: Page, settings: AccountSettings) -> Tag:
        hook = settings.outgoing_webhook
        form = tags.form(method="post", action=page.url("settings/test"), class_="test")(
            hidden("csrf_token", page.csrf)
        )
        if hook is None or not hook.url:
            return tags.div(
                tags.p("Set an outgoing webhook URL first."),
                form(tags.button("Send test webhook", type="submit", disabled="disabled")),
            )
        return tags.div(
            tags.p(
                "Queues a test webhook to ",
                tags.code(hook.url),
                f": an outgoing event “{TEST_EVENT}” for no message (QueueMsgID 0, Subject “{TEST_SUBJECT}”), sent,"
                " signed and retried like every webhook, whatever the event filter.",
            ),
            form(tags.button("Send test webhook", type="submit")),
        )

    async def _recent(self, page: Page, settings: AccountSettings) -> Content:
        account = settings.account
        # The default orders (next attempt; last activity), which the per-account paging
        # indexes of schema 0008 serve without a sort.
        queued = await self.ui.queue.list_hooks(sw.HookFilter(account=account, max=RECENT), sw.HookSort())
        retired = await self.ui.queue.list_retired_hooks(sw.HookRetiredFilter(account=account, max=RECENT),
                                                         sw.HookSort())  # fmt: skip
        now = self.ui.now()
        entries: list[list[Content]] = []
        for h in queued:
            r = h.row
            if r.lease_token is not None and r.next_attempt > now and h.attempts and h.attempts[-1].duration is None:
                status: Content = "sending"
            else:
                status = ["queued, next attempt ", when(r.next_attempt, now)]
            entries.append([
                str(r.id), when(r.created, now), hook_event(r.kind, r.queue_msg_id, r.subject),
                self._message(page, r.queue_msg_id), short(r.url, 60), status, str(r.attempts),
                last_status(h.attempts), response_snippet(h.attempts),
            ])  # fmt: skip
        for rh in retired:
            if rh.success:
                status = "delivered"
            elif rh.superseded_by_id:
                status = f"superseded by {rh.superseded_by_id}"
            else:
                status = "failed"
            entries.append([
                str(rh.id), when(rh.submitted, now), hook_event(rh.kind, rh.queue_msg_id, rh.subject),
                self._message(page, rh.queue_msg_id), short(rh.url, 60), status, str(rh.attempts),
                last_status(rh.results), response_snippet(rh.results),
            ])  # fmt: skip
        keep = settings.keep_retired_webhooks
        about = tags.p(
            f"The last {RECENT} webhooks of this account: those still queued, then those sent or given up, "
            "most recent first. Sent or given-up webhooks are "
            + (f"kept for {duration_text(keep)}." if keep > 0 else "not kept (Keep retired webhooks is 0).")
        )
        headers = ["ID", "Queued", "Event", "Message", "URL", "State", "Attempts", "Last result", "Response"]
        return [about, table("Recent webhooks", headers, entries[:RECENT], empty="No webhooks.")]

    def _message(self, page: Page, queue_msg_id: int) -> Content:
        if not queue_msg_id:
            return "-"
        return tags.a(str(queue_msg_id), href=page.url(f"messages/{queue_msg_id}"))
