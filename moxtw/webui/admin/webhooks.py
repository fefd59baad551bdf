"""Admin pages: the webhook queue (``/admin/webhooks/``), retired webhooks
(``/admin/webhooks/retired/``) and one webhook (``/admin/webhooks/<id>``).

The lists take the filter of ``moxtw hooks list|retired`` and the admin API's HookList
and HookRetiredList (account, event or "incoming", the submitted and next-attempt or
last-activity time conditions such as ``<now`` or ``>-1h``, delivered or not for retired
webhooks, webhook IDs) and sort (next attempt or last activity, or submitted time, either
direction), and page with keysets like the queue list (schema 0008's indexes serve the
queries).

Reschedule (next attempt = now + N minutes, or += N) and Cancel apply to the selected
queued webhooks or to every one matching the filter, through
:class:`~moxtw.admin.ops.QueueAdmin` like ``moxtw hooks reschedule|cancel`` and the admin
API's HookNextAttemptSet/Add and HookCancel; Cancel of every matching webhook asks for
confirmation first.  A webhook's page (queued or retired: they share IDs) shows its event,
URL, JSON payload and every attempt with its status, error and the start of the
response; the Authorization header is never shown (only whether one is sent).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import urlsplit, urlunsplit

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.types import to_time, to_us
from ...config import OUTGOING_EVENTS
from ...store import admin as sa
from ...store import webhooks as sw
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import Fields, field
from ..layout import Content, hidden, select, short, table, text_input, when
from .queue import (
    MAX_ID,
    MAX_IDS,
    MAX_MINUTES,
    MAX_PAGE_SIZE,
    SORT_PARAMS,
    Paging,
    fetch_page,
    given_params,
    link,
    pager,
    parse_choice,
    parse_int,
    parse_paging,
)

QUEUED_SORT = {"next_attempt": "Next attempt", "submitted": "Submitted"}
RETIRED_SORT = {"last_activity": "Last activity", "submitted": "Submitted"}
QUEUED_FILTER = ("ids", "account", "event", "submitted", "next")
RETIRED_FILTER = ("ids", "account", "event", "success", "submitted", "activity")
#: Event filter values: mox's outgoing events and "incoming".
EVENTS = (*OUTGOING_EVENTS, sw.INCOMING)
ACTIONS = ("reschedule", "cancel")
#: Payload characters shown on a webhook's page (incoming ones carry the message text).
PAYLOAD_SHOWN = 100_000
#: How many webhooks the confirmation of a Cancel of everything matching lists.
CONFIRM_LIST = 50

NOTICES = {
    "rescheduled": "Next attempt of {n} webhook(s) changed.",
    "canceled": "{n} webhook(s) canceled.",
}
ERRORS = {"noselection": "No webhooks were selected; nothing was changed."}


# --- query strings --------------------------------------------------------------------------


def parse_hook_ids(fields: Fields) -> tuple[int, ...]:
    ids = [parse_int(part, "webhook ID", 1, MAX_ID) for part in field(fields, "ids").replace(",", " ").split()]
    if len(ids) > MAX_IDS:
        raise sa.FilterError(f"too many webhook IDs (at most {MAX_IDS})")
    return tuple(ids)


def parse_event(fields: Fields) -> str:
    event = field(fields, "event")
    if event and event not in EVENTS:
        raise sa.FilterError(f"event: expected one of {', '.join(EVENTS)}")
    return event


def absolute(text: str, what: str, now: float) -> tuple[str, float] | None:
    """A time condition (``<now``, ``>-1h``) as the store's webhook filters take it."""
    condition = sa.parse_time_condition(text, what)
    return None if condition is None else (condition.op, condition.threshold(now))


@attrs.frozen
class HookQuery:
    filter: sw.HookFilter
    paging: Paging
    #: The filter and sort fields as given (for links and forms), without the cursor.
    params: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class RetiredHookQuery:
    filter: sw.HookRetiredFilter
    paging: Paging
    params: tuple[tuple[str, str], ...] = ()


def parse_query(fields: Fields, now: float) -> HookQuery:
    """The queued list's request of query or form ``fields``;
    :class:`~moxtw.store.admin.FilterError` if a field is invalid."""
    f = sw.HookFilter(
        ids=parse_hook_ids(fields),
        account=field(fields, "account").strip(),
        event=parse_event(fields),
        submitted=absolute(field(fields, "submitted"), "Submitted", now),
        next_attempt=absolute(field(fields, "next"), "Next attempt", now),
    )
    return HookQuery(f, parse_paging(fields, QUEUED_SORT), given_params(fields, (*QUEUED_FILTER, *SORT_PARAMS)))


def parse_retired_query(fields: Fields, now: float) -> RetiredHookQuery:
    success = parse_choice(fields, "success", {"": None, "yes": True, "no": False},
                           "delivered: expected yes, no or nothing")  # fmt: skip
    f = sw.HookRetiredFilter(
        ids=parse_hook_ids(fields),
        account=field(fields, "account").strip(),
        event=parse_event(fields),
        submitted=absolute(field(fields, "submitted"), "Submitted", now),
        last_activity=absolute(field(fields, "activity"), "Last activity", now),
        success=success,
    )
    params = given_params(fields, (*RETIRED_FILTER, *SORT_PARAMS))
    return RetiredHookQuery(f, parse_paging(fields, RETIRED_SORT), params)


def hook_sort(sort: sa.Sort) -> sw.HookSort:
    """The webhook store's sort of the listings' common one (times in µs → seconds)."""
    last = None if sort.last_us is None else sort.last_us / 1_000_000
    return sw.HookSort(sort.field, sort.asc, sort.last_id, last)


def us(t: float) -> int:
    """A time in µs as the store orders and compares it (a page's cursor)."""
    return to_us(to_time(t))


def notice(fields: Fields) -> str:
    done = field(fields, "done")
    if done not in NOTICES:
        return ""
    try:
        n = parse_int(field(fields, "count") or "0", "count", 0, 2**62)
    except sa.FilterError:
        n = 0
    return NOTICES[done].format(n=n)


@attrs.frozen
class Action:
    name: str
    minutes: int = 0
    add: bool = False


def parse_action(form: Fields) -> Action:
    name = field(form, "action")
    if name not in ACTIONS:
        raise sa.FilterError(f"action: expected one of {', '.join(ACTIONS)}")
    if name == "reschedule":
        minutes = parse_int(field(form, "minutes"), "minutes", -MAX_MINUTES, MAX_MINUTES)
        add = parse_choice(form, "how", {"set": False, "add": True}, "reschedule: expected set or add")
        return Action(name, minutes, add)
    return Action(name)


# --- showing webhooks -----------------------------------------------------------------------


def event_text(kind: str) -> str:
    return "incoming message" if kind == sw.INCOMING else kind


def safe_url(url: str) -> str:
    """The URL without a password in it (``https://user:…@host/``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:\u2026@{host}"))


def printable(text: str) -> str:
    """Control characters (other than newline and tab) shown as U+FFFD."""
    return "".join(c if c.isprintable() or c in "\n\t" else "\ufffd" for c in text)


def attempt_status(a: sw.HookAttempt) -> str:
    if a.duration is None:
        return "sending"
    return "ok" if a.success else "failed"


def last_result(attempts: Sequence[sw.HookAttempt]) -> Content:
    if not attempts:
        return "-"
    a = attempts[-1]
    if a.duration is None:
        return "sending"
    if a.success:
        return f"HTTP {a.code} ok" if a.code else "ok"
    return short(" ".join(p for p in (str(a.code) if a.code else "", a.error) if p) or "failed", 80)


def outcome(page: Page, h: sw.RetiredHook) -> Content:
    if h.success:
        return "delivered"
    if h.superseded_by_id:
        return ["superseded by ", tags.a(str(h.superseded_by_id), href=page.url(f"webhooks/{h.superseded_by_id}"))]
    if h.results and h.results[-1].error == sw.CANCELED_ERROR:
        return "canceled"
    return "failed"


def message_link(page: Page, queue_msg_id: int) -> Content:
    if not queue_msg_id:
        return "-"
    return tags.a(str(queue_msg_id), href=page.url(f"queue/{queue_msg_id}"),
                  **{"aria-label": f"Queue message {queue_msg_id}"})  # fmt: skip


def payload_block(payload: str) -> list[Content]:
    """The JSON payload, indented (as sent if it is not JSON), escaped on output."""
    try:
        text = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
    except ValueError:
        text = payload
    out: list[Content] = []
    if len(text) > PAYLOAD_SHOWN:
        out.append(tags.p(f"The first {PAYLOAD_SHOWN} of {len(text)} characters:", class_="hint"))
        text = text[:PAYLOAD_SHOWN]
    out.insert(0, tags.h2("Payload"))
    out.append(tags.pre(tags.code(printable(text)), class_="payload", tabindex="0"))
    return out


def attempts_table(attempts: Sequence[sw.HookAttempt]) -> list[Content]:
    rows = [
        [
            str(a.attempt),
            when(a.start),
            "-" if a.duration is None else f"{a.duration:.3f}s",
            attempt_status(a),
            str(a.code) if a.code else "-",
            a.error or "-",
            tags.code(printable(a.response.decode("utf-8", "replace"))) if a.response else "-",
        ]
        for a in attempts
    ]
    return [
        tags.h2("Attempts"),
        table("Webhook attempts", ["#", "Started", "Duration", "Result", "HTTP status", "Error",
                                   f"Response (first {sw.RESPONSE_KEEP} bytes)"], rows,
              empty="No attempt yet."),  # fmt: skip
    ]


def facts(items: Sequence[tuple[str, Content]]) -> Tag:
    return tags.dl(class_="facts")([[tags.dt(k), tags.dd(v)] for k, v in items])


def action_buttons() -> list[Content]:
    """Reschedule and Cancel (the list's bulk form and a webhook's page)."""
    return [
        tags.div(class_="buttons")(
            text_input("minutes", "Minutes", "0", kind="number", min=str(-MAX_MINUTES), max=str(MAX_MINUTES)),
            select("how", "Next attempt", [("set", "now + minutes"), ("add", "current + minutes")], "set"),
            tags.button("Reschedule", type="submit", name="action", value="reschedule"),
        ),
        tags.div(class_="buttons")(tags.button("Cancel", type="submit", name="action", value="cancel")),
    ]


# --- the pages ------------------------------------------------------------------------------


@attrs.define(eq=False)
class WebhookPages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def queued(self, request: Request, page: Page) -> bytes:
        page.current = "webhooks/"
        try:
            q = parse_query(page.query, self.ui.now())
        except sa.FilterError as e:
            bad = HookQuery(sw.HookFilter(), Paging("next_attempt"), given_params(page.query, QUEUED_FILTER))
            return await self._render_queued(page, bad, None, error=str(e), status=400)
        limited = attrs.evolve(q.filter, max=q.paging.size + 1)
        listing = await fetch_page(q.paging, q.paging.size, lambda s: self.ui.queue.list_hooks(limited, hook_sort(s)))
        error = ERRORS.get(field(page.query, "error"), "")
        return await self._render_queued(page, q, listing, notice=notice(page.query), error=error)

    @app.route("/retired/", methods=["GET", "HEAD"])
    @guarded()
    async def retired(self, request: Request, page: Page) -> bytes:
        page.current = "webhooks/"
        try:
            q = parse_retired_query(page.query, self.ui.now())
        except sa.FilterError as e:
            bad = RetiredHookQuery(sw.HookRetiredFilter(), Paging("last_activity"),
                                   given_params(page.query, RETIRED_FILTER))  # fmt: skip
            return await self._render_retired(page, bad, None, error=str(e), status=400)
        limited = attrs.evolve(q.filter, max=q.paging.size + 1)
        listing = await fetch_page(
            q.paging, q.paging.size, lambda s: self.ui.queue.list_retired_hooks(limited, hook_sort(s))
        )
        return await self._render_retired(page, q, listing)

    @app.route("/<int:hook_id>", methods=["GET", "HEAD"])
    @guarded()
    async def detail(self, request: Request, page: Page, hook_id: int) -> bytes:
        page.current = "webhooks/"
        missing = PageError(404, "No such webhook", f"There is no webhook {hook_id}, queued or retired.")
        if not 0 < hook_id <= MAX_ID:
            raise missing
        queued = await self.ui.queue.list_hooks(sw.HookFilter(ids=(hook_id,), max=1), sw.HookSort())
        if queued:
            return await self._render_hook(page, queued[0])
        retired = await self.ui.queue.list_retired_hooks(sw.HookRetiredFilter(ids=(hook_id,), max=1), sw.HookSort())
        if retired:
            return await self._render_retired_hook(page, retired[0])
        raise missing

    @app.route("/", methods=["POST"])
    @guarded()
    async def change(self, request: Request, page: Page) -> bytes:
        try:
            q = parse_query(page.form, self.ui.now())
            action = parse_action(page.form)
            back = parse_int(field(page.form, "back"), "back", 1, MAX_ID) if field(page.form, "back") else None
            selected = None
            if field(page.form, "scope", "selected") != "all":
                selected = {parse_int(v, "webhook ID", 1, MAX_ID) for v in page.form.get("id", [])}
        except sa.FilterError as e:
            raise PageError(400, "Bad request", str(e)) from None
        f = q.filter
        if selected is not None:
            if f.ids:
                selected &= set(f.ids)
            if not selected:
                # An empty ID list would mean "no ID criterion": every webhook matching.
                raise Redirect(link(page, "webhooks/", [*q.params, ("error", "noselection")]))
            f = attrs.evolve(f, ids=tuple(sorted(selected)))
        elif action.name == "cancel" and back is None and field(page.form, "confirm") != "yes":
            return await self._confirm_cancel(page, q, f)
        if action.name == "reschedule":
            n = await self.ui.queue.reschedule_hooks(f, action.minutes, relative=action.add)
            done = "rescheduled"
        else:
            n, done = await self.ui.queue.cancel_hooks(f), "canceled"
        result = [("done", done), ("count", str(n))]
        if back is not None:
            # A canceled webhook is kept only if its account keeps retired webhooks:
            # back to the list rather than to a page that may be gone.
            if action.name == "cancel":
                raise Redirect(link(page, "webhooks/", result))
            raise Redirect(link(page, f"webhooks/{back}", result))
        raise Redirect(link(page, "webhooks/", [*q.params, *result]))

    # --- rendering --------------------------------------------------------------------------

    def _tabs(self, page: Page, current: str) -> Tag:
        items = []
        for path, label in (("webhooks/", "Queued"), ("webhooks/retired/", "Retired")):
            a = tags.a(label, href=page.url(path))
            if path == current:
                a(**{"aria-current": "page"})
            items.append(tags.li(a))
        return tags.nav(class_="pager", **{"aria-label": "Webhook lists"})(tags.ul(items))

    async def _render_queued(
        self, page: Page, q: HookQuery, listing: tuple[list[sw.Hook], bool, bool] | None, *, notice: str = "",
        error: str = "", status: int = 200,
    ) -> bytes:  # fmt: skip
        size = await self.ui.queue.hook_queue_size()
        now = self.ui.now()
        given = dict(q.params)
        content: list[Content] = [
            self._tabs(page, "webhooks/"),
            tags.p(f"{size} webhook(s) in the queue."),
            tags.form(method="get", action=page.url("webhooks/"), role="search", class_="filter")(
                tags.fieldset(
                    tags.legend("Filter"),
                    *self._common_filter(given),
                    text_input("next", "Next attempt", given.get("next", ""), hint="<now, >10m"),
                    text_input("ids", "Webhook IDs", given.get("ids", ""), hint="e.g. 12, 13"),
                ),
                self._order(q.paging, QUEUED_SORT),
                tags.div(class_="buttons")(
                    tags.button("Apply", type="submit"), " ", tags.a("Clear", href=page.url("webhooks/"))
                ),
            ),
        ]
        if listing is not None:
            hooks, has_previous, has_next = listing
            rows: list[list[Content]] = []
            for h in hooks:
                r = h.row
                rows.append([
                    tags.input(type="checkbox", name="id", value=str(r.id), **{"aria-label": f"Select webhook {r.id}"}),
                    tags.a(str(r.id), href=page.url(f"webhooks/{r.id}"), **{"aria-label": f"Webhook {r.id}"}),
                    r.account,
                    event_text(r.kind),
                    message_link(page, r.queue_msg_id),
                    short(safe_url(r.url), 50),
                    when(r.created),
                    when(r.next_attempt, now),
                    str(r.attempts),
                    last_result(h.attempts),
                ])  # fmt: skip
            headers = ["Select", "ID", "Account", "Event", "Message", "URL", "Submitted", "Next attempt", "Attempts",
                       "Last result"]  # fmt: skip
            content.append(
                tags.form(method="post", action=page.url("webhooks/"), class_="bulk")(
                    hidden("csrf_token", page.csrf),
                    [hidden(name, value) for name, value in q.params],
                    table("Queued webhooks", headers, rows, empty="No queued webhooks match.")(
                        **{"data-select": "id"}
                    ),
                    tags.fieldset(
                        tags.legend("Change webhooks"),
                        tags.div(class_="choices")(
                            tags.label(tags.input(type="radio", name="scope", value="selected", checked="checked"),
                                       " selected webhooks"),
                            tags.label(tags.input(type="radio", name="scope", value="all"),
                                       " every webhook matching the filter"),
                        ),  # fmt: skip
                        action_buttons(),
                    ),
                )
            )
            cursors = [(us(self._queued_key(h.row, q.paging.field)), h.row.id) for h in hooks]
            content.append(pager(page, "webhooks/", q.params, q.paging, cursors, has_previous, has_next))
        return await page.render("Webhooks", *content, notice=notice, error=error, status=status)

    @staticmethod
    def _queued_key(row: sw.HookRow, field_name: str) -> float:
        return row.next_attempt if field_name == "next_attempt" else row.created

    def _common_filter(self, given: dict[str, str]) -> list[Content]:
        events = [("", "any"), *((e, event_text(e)) for e in EVENTS)]
        return [
            text_input("account", "Account", given.get("account", "")),
            select("event", "Event", events, given.get("event", "")),
            text_input("submitted", "Submitted", given.get("submitted", ""), hint="<now, >-1h, <-30m"),
        ]

    def _order(self, paging: Paging, sort_fields: dict[str, str]) -> Tag:
        return tags.fieldset(
            tags.legend("Order"),
            select("sort", "Sort by", list(sort_fields.items()), paging.field),
            select("order", "Order", [("desc", "descending"), ("asc", "ascending")], "asc" if paging.asc else "desc"),
            text_input("n", "Per page", str(paging.size), kind="number", min="1", max=str(MAX_PAGE_SIZE)),
        )

    async def _render_retired(
        self, page: Page, q: RetiredHookQuery, listing: tuple[list[sw.RetiredHook], bool, bool] | None, *,
        error: str = "", status: int = 200,
    ) -> bytes:  # fmt: skip
        given = dict(q.params)
        content: list[Content] = [
            self._tabs(page, "webhooks/retired/"),
            tags.p("Webhooks that left the queue (delivered, failed, superseded, canceled), kept for their "
                   "account's keep period."),  # fmt: skip
            tags.form(method="get", action=page.url("webhooks/retired/"), role="search", class_="filter")(
                tags.fieldset(
                    tags.legend("Filter"),
                    *self._common_filter(given),
                    text_input("activity", "Last activity", given.get("activity", ""), hint=">-1h, <-1d"),
                    select("success", "Delivered", [("", "any"), ("yes", "delivered"), ("no", "not delivered")],
                           given.get("success", "")),  # fmt: skip
                    text_input("ids", "Webhook IDs", given.get("ids", ""), hint="e.g. 12, 13"),
                ),
                self._order(q.paging, RETIRED_SORT),
                tags.div(class_="buttons")(
                    tags.button("Apply", type="submit"), " ", tags.a("Clear", href=page.url("webhooks/retired/"))
                ),
            ),
        ]
        if listing is not None:
            hooks, has_previous, has_next = listing
            rows: list[list[Content]] = [
                [
                    tags.a(str(h.id), href=page.url(f"webhooks/{h.id}"), **{"aria-label": f"Webhook {h.id}"}),
                    h.account,
                    event_text(h.kind),
                    message_link(page, h.queue_msg_id),
                    short(safe_url(h.url), 50),
                    when(h.submitted),
                    when(h.last_activity),
                    str(h.attempts),
                    outcome(page, h),
                    last_result(h.results),
                ]
                for h in hooks
            ]
            headers = ["ID", "Account", "Event", "Message", "URL", "Submitted", "Last activity", "Attempts",
                       "Outcome", "Last result"]  # fmt: skip
            content.append(table("Retired webhooks", headers, rows, empty="No retired webhooks match."))
            key = "submitted" if q.paging.field == "submitted" else "last_activity"
            cursors = [(us(getattr(h, key)), h.id) for h in hooks]
            content.append(pager(page, "webhooks/retired/", q.params, q.paging, cursors, has_previous, has_next))
        return await page.render("Retired webhooks", *content, error=error, status=status)

    def _common_facts(self, account: str, kind: str, queue_msg_id: int, from_id: str, message_id: str,
                      subject: str, url: str, authorization: bool, page: Page) -> list[tuple[str, Content]]:  # fmt: skip
        items: list[tuple[str, Content]] = [
            ("Account", account),
            ("Event", event_text(kind)),
            ("Queue message", message_link(page, queue_msg_id)),
        ]
        if from_id:
            items.append(("FromID", from_id))
        items += [
            ("Message-ID", message_id or "-"),
            ("Subject", subject or "-"),
            ("URL", safe_url(url)),
            ("Authorization header", "sent (not shown)" if authorization else "none"),
        ]
        return items

    async def _render_hook(self, page: Page, hook: sw.Hook) -> bytes:
        r = hook.row
        now = self.ui.now()
        in_flight = r.lease_token is not None and r.next_attempt > now
        items = [
            ("State", "being sent" if in_flight else "queued"),
            *self._common_facts(r.account, r.kind, r.queue_msg_id, r.from_id, r.message_id, r.subject, r.url,
                                bool(r.auth_header), page),  # fmt: skip
            ("Webhook ID header", r.webhook_id or "-"),
            ("Submitted", when(r.created, now)),
            ("Next attempt", when(r.next_attempt, now)),
            ("Attempts", f"{r.attempts} of at most {sw.MAX_ATTEMPTS}"),
        ]
        form = tags.form(method="post", action=page.url("webhooks/"), class_="bulk")(
            hidden("csrf_token", page.csrf),
            hidden("ids", str(r.id)),
            hidden("scope", "all"),
            hidden("back", str(r.id)),
            tags.fieldset(tags.legend("Change this webhook"), action_buttons()),
        )
        content: list[Content] = [
            tags.p(tags.a("← Webhooks", href=page.url("webhooks/"))),
            facts(items),
            *attempts_table(hook.attempts),
            *payload_block(r.payload),
            tags.h2("Change"),
            form,
        ]
        return await page.render(f"Queued webhook {r.id}", *content, notice=notice(page.query))

    async def _render_retired_hook(self, page: Page, h: sw.RetiredHook) -> bytes:
        now = self.ui.now()
        items = [
            ("Outcome", outcome(page, h)),
            *self._common_facts(h.account, h.kind, h.queue_msg_id, h.from_id, h.message_id, h.subject, h.url,
                                h.authorization, page),  # fmt: skip
            ("Submitted", when(h.submitted, now)),
            ("Last activity", when(h.last_activity, now)),
            ("Attempts", str(h.attempts)),
            ("Kept until", when(h.keep_until, now)),
        ]
        content: list[Content] = [
            tags.p(tags.a("← Retired webhooks", href=page.url("webhooks/retired/"))),
            facts(items),
            *attempts_table(h.results),
            *payload_block(h.payload),
        ]
        return await page.render(f"Retired webhook {h.id}", *content, notice=notice(page.query))

    async def _confirm_cancel(self, page: Page, q: HookQuery, f: sw.HookFilter) -> bytes:
        """Cancel of every webhook matching the filter: what it applies to, and the button
        that does it (the same form again, with ``confirm=yes``)."""
        title = "Cancel webhooks?"
        effect = ("Canceling removes the webhooks from the queue unsent; they are kept as retired, "
                  f"\u201c{sw.CANCELED_ERROR}\u201d. This cannot be undone.")  # fmt: skip
        hooks = await self.ui.queue.list_hooks(attrs.evolve(f, max=CONFIRM_LIST + 1),
                                               sw.HookSort("submitted", asc=True))  # fmt: skip
        back = link(page, "webhooks/", q.params)
        content: list[Content] = [tags.p(effect)]
        if not hooks:
            content += [tags.p("No queued webhook matches; nothing would change."), tags.p(tags.a("Back", href=back))]
            return await page.render(title, *content)
        if len(hooks) > CONFIRM_LIST:
            what = f"every webhook matching the filter: more than {CONFIRM_LIST} (the first {CONFIRM_LIST} are listed)"
        else:
            what = f"{len(hooks)} webhook(s)"
        content.append(tags.p(f"This applies to {what}:"))
        now = self.ui.now()
        rows = [
            [tags.a(str(h.row.id), href=page.url(f"webhooks/{h.row.id}"), **{"aria-label": f"Webhook {h.row.id}"}),
             h.row.account, event_text(h.row.kind),
             when(h.row.created), when(h.row.next_attempt, now)]
            for h in hooks[:CONFIRM_LIST]
        ]  # fmt: skip
        content.append(table("Webhooks to cancel", ["ID", "Account", "Event", "Submitted", "Next attempt"], rows))
        content.append(
            tags.form(method="post", action=page.url("webhooks/"), class_="confirm")(
                hidden("csrf_token", page.csrf),
                [hidden(name, value) for name, value in q.params],
                hidden("scope", "all"),
                hidden("confirm", "yes"),
                tags.div(class_="buttons")(
                    tags.button("Cancel webhooks", type="submit", name="action", value="cancel"),
                    " ",
                    tags.a("Back", href=back),
                ),
            )
        )
        return await page.render(title, *content)
