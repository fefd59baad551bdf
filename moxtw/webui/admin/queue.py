"""Admin pages: the outgoing queue (``/admin/queue/``, ``/admin/queue/<id>``).

The list takes mox's queue filter (account, From and To substrings, held or not, the
submitted and next-attempt time conditions such as ``<now`` or ``>-1h``, transport,
message IDs) and sort (next attempt or queued time, either direction) from the query
string and pages with keysets: "next" continues after the last row shown (its sort value
and ID), "previous" goes back from the first, so a page costs the same wherever it is,
through :func:`moxtw.store.admin.list_queue` (the admin API's QueueList), whose queries
the paging indexes of schema 0007 serve.

Bulk actions apply to the selected rows or to every message matching the filter (the
selected rows must match the filter too), through :class:`~moxtw.admin.ops.QueueAdmin`
like ``moxtw queue hold|release|fail|drop|reschedule|requiretls`` and the admin API:
Hold, Release, Reschedule (next attempt = now + N minutes, or += N), Set RequireTLS
(yes, no, default), Fail and Drop.  Fail and Drop first show a confirmation page (the
messages it applies to, and a second button), so they never happen on one click.

``/admin/queue/<id>`` shows every field of a queued message and its attempt history,
with the same actions for that message alone (posted to the list's bulk endpoint with
``ids=<id>``).  The ID of a message that left the queue redirects to its retired record
(``/admin/retired/<id>``) if one is kept; an unknown ID is a 404 page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.types import to_time, to_us
from ...store import admin as sa
from .. import delivery
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import Fields, field
from ..layout import Content, hidden, select, short, table, text_input, when

ItemT = TypeVar("ItemT")

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SORT_FIELDS = {"next_attempt": "Next attempt", "queued": "Queued"}
#: Query fields of the filter and sort (kept in links and in the bulk form).
FILTER_FIELDS = ("ids", "account", "from", "to", "hold", "submitted", "next", "transport")
SORT_PARAMS = ("sort", "order", "n")
MAX_IDS = 1000
#: Largest message ID looked up (SQLite integers are 64-bit).
MAX_ID = 2**62
#: Reschedule by at most a year either way.
MAX_MINUTES = 366 * 24 * 60
#: How many of the messages a Fail or Drop applies to its confirmation page lists.
CONFIRM_LIST = 50

NOTICES = {
    "held": "{n} message(s) held.",
    "released": "{n} message(s) released.",
    "failed": "{n} message(s) failed: a failure DSN went to each sender.",
    "dropped": "{n} message(s) dropped.",
    "rescheduled": "Next attempt of {n} message(s) changed.",
    "requiretls": "RequireTLS of {n} message(s) set.",
}
ERRORS = {"noselection": "No messages were selected; nothing was changed."}
ACTIONS = ("hold", "release", "fail", "drop", "reschedule", "requiretls")
REQUIRE_TLS = {"yes": True, "no": False, "default": None}
#: Fail and Drop: (button, confirmation title, what it does).
CONFIRM = {
    "fail": ("Fail", "Fail messages?",
             "Failing ends delivery now: each sender gets a failure DSN (delivery status notification) in its "
             "Inbox and the webhook event failed is sent. This cannot be undone."),
    "drop": ("Drop", "Drop messages?",
             "Dropping removes the messages from the queue without a DSN; the webhook event canceled is sent. "
             "This cannot be undone."),
}  # fmt: skip


# --- query strings shared with the retired pages -------------------------------------------


def parse_int(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise sa.FilterError(f"{what}: expected a number, got {text!r}") from None
    if not low <= value <= high:
        raise sa.FilterError(f"{what}: must be from {low} to {high}, got {value}")
    return value


def parse_cursor(fields: Fields, name: str) -> tuple[int, int] | None:
    """The (sort value in µs, ID) of ``name`` and ``name_id`` (after or before)."""
    value, ident = field(fields, name), field(fields, f"{name}_id")
    if not value and not ident:
        return None
    return parse_int(value, name, -(2**62), 2**62), parse_int(ident, f"{name}_id", 1, MAX_ID)


def parse_ids(fields: Fields) -> tuple[int, ...]:
    ids: list[int] = []
    for part in field(fields, "ids").replace(",", " ").split():
        ids.append(parse_int(part, "message ID", 1, MAX_ID))
    if len(ids) > MAX_IDS:
        raise sa.FilterError(f"too many message IDs (at most {MAX_IDS})")
    return tuple(ids)


def parse_choice(fields: Fields, name: str, choices: dict[str, Any], error: str) -> Any:
    """The value of field ``name``'s choice; ``error`` if it is none of them."""
    value = field(fields, name)
    if value not in choices:
        raise sa.FilterError(error)
    return choices[value]


@attrs.frozen
class Paging:
    """Sort, page size and where the page starts, common to the listings."""

    field: str
    asc: bool = False
    size: int = PAGE_SIZE
    #: Continue after / go back from the row with this (sort value in µs, ID).
    after: tuple[int, int] | None = None
    before: tuple[int, int] | None = None


def parse_paging(fields: Fields, sort_fields: dict[str, str]) -> Paging:
    default = next(iter(sort_fields))
    sort = field(fields, "sort") or default
    if sort not in sort_fields:
        raise sa.FilterError(f"sort: expected one of {', '.join(sort_fields)}")
    order = field(fields, "order") or "desc"
    if order not in ("asc", "desc"):
        raise sa.FilterError("order: expected asc or desc")
    size = parse_int(field(fields, "n"), "page size", 1, MAX_PAGE_SIZE) if field(fields, "n") else PAGE_SIZE
    after, before = parse_cursor(fields, "after"), parse_cursor(fields, "before")
    if after is not None and before is not None:
        raise sa.FilterError("give either after or before, not both")
    return Paging(sort, order == "asc", size, after, before)


def given_params(fields: Fields, names: Sequence[str] = (*FILTER_FIELDS, *SORT_PARAMS)) -> tuple[tuple[str, str], ...]:
    """The filter and sort fields that have a value, in a fixed order."""
    return tuple((name, field(fields, name)) for name in names if field(fields, name))


def link(page: Page, path: str, params: Sequence[tuple[str, str]]) -> str:
    url = page.url(path)
    return f"{url}?{urlencode(list(params))}" if params else url


def notice(fields: Fields) -> str:
    """The notice a redirect after a POST asked for (``done`` and ``count``)."""
    done = field(fields, "done")
    if done not in NOTICES:
        return ""
    try:
        n = parse_int(field(fields, "count") or "0", "count", 0, 2**62)
    except sa.FilterError:
        n = 0
    return NOTICES[done].format(n=n)


def pager(page: Page, path: str, params: Sequence[tuple[str, str]], paging: Paging, cursors: list[tuple[int, int]],
          has_previous: bool, has_next: bool) -> Content:  # fmt: skip
    """Previous/next/first page links; ``cursors`` are the rows' (sort value, ID)."""
    links: list[Content] = []
    if cursors and has_previous:
        us, ident = cursors[0]
        href = link(page, path, [*params, ("before", str(us)), ("before_id", str(ident))])
        links.append(tags.a("← Previous page", href=href, rel="prev"))
    if cursors and has_next:
        us, ident = cursors[-1]
        href = link(page, path, [*params, ("after", str(us)), ("after_id", str(ident))])
        links.append(tags.a("Next page →", href=href, rel="next"))
    if paging.after is not None or paging.before is not None:
        links.append(tags.a("First page", href=link(page, path, params)))
    if not links:
        return ""
    return tags.nav(class_="pager", **{"aria-label": "Pages"})(tags.ul([tags.li(a) for a in links]))


async def fetch_page(
    paging: Paging, size: int, list_page: Callable[[sa.Sort], Awaitable[list[ItemT]]]
) -> tuple[list[ItemT], bool, bool]:
    """One page: (rows, has previous, has next).  ``list_page(sort)`` lists ``size`` + 1
    rows from ``sort``'s position (one more than shown, to know whether there is another
    page in that direction)."""
    if paging.before is not None:
        us, ident = paging.before
        items = await list_page(sa.Sort(paging.field, not paging.asc, ident, us))
        more = len(items) > size
        items = items[:size]
        items.reverse()
        return items, more, True
    after_us, after_id = paging.after if paging.after is not None else (None, 0)
    items = await list_page(sa.Sort(paging.field, paging.asc, after_id, after_us))
    return items[:size], paging.after is not None, len(items) > size


# --- the queue list --------------------------------------------------------------------------


@attrs.frozen
class QueueQuery:
    """A list request: filter, sort, page size and where the page starts."""

    filter: sa.Filter
    field: str = "next_attempt"
    asc: bool = False
    size: int = PAGE_SIZE
    #: Continue after / go back from the row with this (sort value in µs, ID).
    after: tuple[int, int] | None = None
    before: tuple[int, int] | None = None
    #: The filter and sort fields as given (for links and forms), without the cursor.
    params: tuple[tuple[str, str], ...] = ()

    @property
    def paging(self) -> Paging:
        return Paging(self.field, self.asc, self.size, self.after, self.before)


def parse_query(fields: Fields) -> QueueQuery:
    """The list request of query or form ``fields``; :class:`~moxtw.store.admin.FilterError`
    if a field is invalid."""
    ids = parse_ids(fields)
    hold = parse_choice(fields, "hold", {"": None, "yes": True, "no": False}, "held: expected yes, no or nothing")
    transport = field(fields, "transport")
    f = sa.Filter(
        ids=ids,
        account=field(fields, "account"),
        sender=field(fields, "from"),
        recipient=field(fields, "to"),
        hold=hold,
        submitted=sa.parse_time_condition(field(fields, "submitted"), "Submitted"),
        next_attempt=sa.parse_time_condition(field(fields, "next"), "Next attempt"),
        transport=transport or None,
    )
    p = parse_paging(fields, SORT_FIELDS)
    return QueueQuery(f, p.field, p.asc, p.size, p.after, p.before, given_params(fields))


def sort_value(item: sa.QueueItem, field_name: str) -> int:
    """The sort field of a row in µs, as the store compares it (for the next cursor)."""
    t = item.row.next_attempt if field_name == "next_attempt" else item.row.queued
    return to_us(to_time(t))


@attrs.frozen
class Listing:
    items: list[sa.QueueItem]
    has_previous: bool
    has_next: bool


async def fetch(ui: WebUI, q: QueueQuery) -> Listing:
    """One page of the list."""
    limited = attrs.evolve(q.filter, max=q.size + 1)
    items, has_previous, has_next = await fetch_page(q.paging, q.size, lambda s: ui.queue.list_queue(limited, s))
    return Listing(items, has_previous, has_next)


def _state(row: Any, now: float) -> str:
    if row.lease_token is not None and row.next_attempt > now:
        return "delivery attempt in progress" + (" (held)" if row.hold else "")
    return "held" if row.hold else "queued"


@attrs.frozen
class Action:
    """A validated bulk action and its arguments."""

    name: str
    minutes: int = 0
    add: bool = False
    require_tls: bool | None = None


def parse_action(form: Fields) -> Action:
    name = field(form, "action")
    if name not in ACTIONS:
        raise sa.FilterError(f"action: expected one of {', '.join(ACTIONS)}")
    if name == "reschedule":
        minutes = parse_int(field(form, "minutes"), "minutes", -MAX_MINUTES, MAX_MINUTES)
        add = parse_choice(form, "how", {"set": False, "add": True}, "reschedule: expected set or add")
        return Action(name, minutes=minutes, add=add)
    if name == "requiretls":
        value = parse_choice(form, "require_tls", REQUIRE_TLS, "RequireTLS: expected yes, no or default")
        return Action(name, require_tls=value)
    return Action(name)


@attrs.define(eq=False)
class QueuePages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        page.current = "queue/"
        try:
            q = parse_query(page.query)
        except sa.FilterError as e:
            bad = QueueQuery(sa.Filter(), params=given_params(page.query))
            return await self._render(page, bad, None, error=str(e), status=400)
        listing = await fetch(self.ui, q)
        error = ERRORS.get(field(page.query, "error"), "")
        return await self._render(page, q, listing, notice=notice(page.query), error=error)

    @app.route("/<int:msg_id>", methods=["GET", "HEAD"])
    @guarded()
    async def detail(self, request: Request, page: Page, msg_id: int) -> bytes:
        page.current = "queue/"
        if not 0 < msg_id <= MAX_ID:
            raise PageError(404, "No such message", f"There is no message {msg_id} in the queue.")
        found = await self.ui.queue.list_queue(sa.Filter(ids=(msg_id,), max=1), sa.Sort())
        if found:
            return await self._render_detail(page, found[0])
        # Retired since (delivered, failed, dropped): its record, if one is kept.
        if await self.ui.queue.list_retired(sa.RetiredFilter(ids=(msg_id,), max=1), sa.Sort("queued")):
            raise Redirect(link(page, f"retired/{msg_id}", given_params(page.query, ("done", "count"))))
        raise PageError(404, "No such message", f"There is no message {msg_id} in the queue.")

    @app.route("/", methods=["POST"])
    @guarded()
    async def bulk(self, request: Request, page: Page) -> bytes:
        try:
            q = parse_query(page.form)
            action = parse_action(page.form)
            back = parse_int(field(page.form, "back"), "back", 1, MAX_ID) if field(page.form, "back") else None
            selected = self._selected(page)
        except sa.FilterError as e:
            raise PageError(400, "Bad request", str(e)) from None
        f = q.filter
        if selected is not None:
            if f.ids:
                selected &= set(f.ids)
            if not selected:
                # An empty ID list would mean "no ID criterion": every message matching.
                raise Redirect(link(page, "queue/", [*q.params, ("error", "noselection")]))
            f = attrs.evolve(f, ids=tuple(sorted(selected)))
        if action.name in CONFIRM and field(page.form, "confirm") != "yes":
            return await self._confirm(page, q, f, action.name, selected, back)
        ops = self.ui.queue
        if action.name in ("hold", "release"):
            n, done = await ops.set_hold(f, action.name == "hold"), "held" if action.name == "hold" else "released"
        elif action.name == "fail":
            n, done = len(await ops.fail(f)), "failed"
        elif action.name == "drop":
            n, done = len(await ops.drop(f)), "dropped"
        elif action.name == "reschedule":
            if action.add:
                n = await ops.add_next_attempt(f, action.minutes)
            else:
                n = await ops.set_next_attempt(f, action.minutes)
            done = "rescheduled"
        else:
            n, done = await ops.set_require_tls(f, action.require_tls), "requiretls"
        result = [("done", done), ("count", str(n))]
        if back is not None and action.name not in CONFIRM:
            raise Redirect(link(page, f"queue/{back}", result))
        params = [p for p in q.params if back is None or p[0] != "ids"]
        raise Redirect(link(page, "queue/", [*params, *result]))

    def _selected(self, page: Page) -> set[int] | None:
        """The selected message IDs, or None for every message matching the filter."""
        if field(page.form, "scope", "selected") == "all":
            return None
        return {parse_int(v, "message ID", 1, MAX_ID) for v in page.form.get("id", [])}

    # --- rendering --------------------------------------------------------------------------

    async def _render(
        self, page: Page, q: QueueQuery, listing: Listing | None, *, notice: str = "", error: str = "",
        status: int = 200,
    ) -> bytes:  # fmt: skip
        size = await self.ui.queue.size()
        now = self.ui.now()
        content: list[Content] = [tags.p(f"{size} message(s) in the queue.")]
        content.append(self._filter_form(page, q))
        if listing is not None:
            content.append(self._bulk_form(page, q, listing, now))
            cursors = [(sort_value(i, q.field), i.row.id) for i in listing.items]
            content.append(pager(page, "queue/", q.params, q.paging, cursors, listing.has_previous, listing.has_next))
        return await page.render("Queue", *content, notice=notice, error=error, status=status)

    def _filter_form(self, page: Page, q: QueueQuery) -> Tag:
        given = dict(q.params)
        return tags.form(method="get", action=page.url("queue/"), role="search", class_="filter")(
            tags.fieldset(
                tags.legend("Filter"),
                text_input("account", "Account", given.get("account", "")),
                text_input("from", "From contains", given.get("from", "")),
                text_input("to", "To contains", given.get("to", "")),
                select("hold", "Held", [("", "any"), ("yes", "held"), ("no", "not held")], given.get("hold", "")),
                text_input("submitted", "Submitted", given.get("submitted", ""), hint="<now, >-1h, <-30m"),
                text_input("next", "Next attempt", given.get("next", ""), hint="<now, >10m"),
                text_input("transport", "Transport", given.get("transport", "")),
                text_input("ids", "Message IDs", given.get("ids", ""), hint="e.g. 12, 13"),
            ),
            tags.fieldset(
                tags.legend("Order"),
                select("sort", "Sort by", list(SORT_FIELDS.items()), q.field),
                select("order", "Order", [("desc", "descending"), ("asc", "ascending")], "asc" if q.asc else "desc"),
                text_input("n", "Per page", str(q.size), kind="number", min="1", max=str(MAX_PAGE_SIZE)),
            ),
            tags.div(class_="buttons")(
                tags.button("Apply", type="submit"), " ", tags.a("Clear", href=page.url("queue/"))
            ),
        )

    def _bulk_form(self, page: Page, q: QueueQuery, listing: Listing, now: float) -> Tag:
        rows: list[list[Content]] = []
        for item in listing.items:
            r = item.row
            rows.append([
                tags.input(type="checkbox", name="id", value=str(r.id), **{"aria-label": f"Select message {r.id}"}),
                tags.a(str(r.id), href=page.url(f"queue/{r.id}"), **{"aria-label": f"Message {r.id}"}),
                r.account,
                delivery.sender(r),
                delivery.recipient(r),
                short(r.subject, 50),
                when(r.queued),
                when(r.next_attempt, now),
                f"{r.attempts}/{r.effective_max_attempts}",
                "held" if r.hold else "",
                delivery.last_result(item.attempts),
            ])  # fmt: skip
        headers = ["Select", "ID", "Account", "From", "To", "Subject", "Queued", "Next attempt", "Attempts",
                   "Held", "Last result"]  # fmt: skip
        return tags.form(method="post", action=page.url("queue/"), class_="bulk")(
            hidden("csrf_token", page.csrf),
            [hidden(name, value) for name, value in q.params],
            table("Queued messages", headers, rows, empty="No queued messages match.")(**{"data-select": "id"}),
            tags.fieldset(
                tags.legend("Bulk action"),
                tags.div(class_="choices")(
                    tags.label(tags.input(type="radio", name="scope", value="selected", checked="checked"),
                               " selected messages"),
                    tags.label(tags.input(type="radio", name="scope", value="all"),
                               " every message matching the filter"),
                ),  # fmt: skip
                action_buttons(),
            ),
        )

    async def _render_detail(self, page: Page, item: sa.QueueItem) -> bytes:
        row, attempts = item.row, item.attempts
        now = self.ui.now()
        items: list[tuple[str, Content]] = [("State", _state(row, now)), *delivery.common_facts(row, now)]
        items += [
            ("Next attempt", when(row.next_attempt, now)),
            ("Attempts", f"{row.attempts} of at most {row.effective_max_attempts}"),
            ("Last attempt", when(row.last_attempt, now)),
            ("Last error", delivery.last_error(row, attempts) or "-"),
            *delivery.detail_facts(row),
        ]
        form = tags.form(method="post", action=page.url("queue/"), class_="bulk")(
            hidden("csrf_token", page.csrf),
            hidden("ids", str(row.id)),
            hidden("scope", "all"),
            hidden("back", str(row.id)),
            tags.fieldset(tags.legend("Actions"), action_buttons()),
        )
        content: list[Content] = [
            tags.p(tags.a("← Queue", href=page.url("queue/"))),
            delivery.facts(items),
            *delivery.history(attempts),
            tags.h2("Change this message"),
            form,
        ]
        return await page.render(f"Queued message {row.id}", *content, notice=notice(page.query))

    async def _confirm(self, page: Page, q: QueueQuery, f: sa.Filter, action: str, selected: set[int] | None,
                       back: int | None) -> bytes:  # fmt: skip
        """The confirmation page of a Fail or Drop: what it applies to, and the button
        that does it (the same form again, with ``confirm=yes``)."""
        button, title, effect = CONFIRM[action]
        items = await self.ui.queue.list_queue(attrs.evolve(f, max=CONFIRM_LIST + 1), sa.Sort("queued", asc=True))
        cancel = page.url(f"queue/{back}") if back is not None else link(page, "queue/", q.params)
        content: list[Content] = [tags.p(effect)]
        if not items:
            content.append(tags.p("No queued message matches any more; nothing would change."))
            content.append(tags.p(tags.a("Back", href=cancel)))
            return await page.render(title, *content)
        if len(items) > CONFIRM_LIST:
            what = (f"every message matching the filter: more than {CONFIRM_LIST} (the first {CONFIRM_LIST} "
                    "by queue time are listed)")  # fmt: skip
        else:
            what = f"{len(items)} message(s)"
        content.append(tags.p(f"This applies to {what}:"))
        now = self.ui.now()
        rows = [
            [tags.a(str(i.row.id), href=page.url(f"queue/{i.row.id}")), i.row.account, delivery.sender(i.row),
             delivery.recipient(i.row), short(i.row.subject, 50), when(i.row.next_attempt, now)]
            for i in items[:CONFIRM_LIST]
        ]  # fmt: skip
        content.append(table(f"Messages to {action}", ["ID", "Account", "From", "To", "Subject", "Next attempt"], rows))
        form = tags.form(method="post", action=page.url("queue/"), class_="confirm")(
            hidden("csrf_token", page.csrf),
            [hidden(name, value) for name, value in q.params],
            hidden("scope", "all" if selected is None else "selected"),
            [hidden("id", str(i)) for i in sorted(selected or ())],
            hidden("back", str(back)) if back is not None else "",
            hidden("confirm", "yes"),
            tags.div(class_="buttons")(
                tags.button(button, type="submit", name="action", value=action), " ", tags.a("Cancel", href=cancel)
            ),
        )
        content.append(form)
        return await page.render(title, *content)


def action_buttons() -> list[Content]:
    """The actions of the list's bulk form and of a message's page (one form each)."""
    return [
        tags.div(class_="buttons")(
            tags.button("Hold", type="submit", name="action", value="hold"),
            tags.button("Release", type="submit", name="action", value="release"),
            tags.button("Fail", type="submit", name="action", value="fail"),
            tags.button("Drop", type="submit", name="action", value="drop"),
        ),
        tags.div(class_="buttons")(
            text_input("minutes", "Minutes", "0", kind="number", min=str(-MAX_MINUTES), max=str(MAX_MINUTES)),
            select("how", "Next attempt", [("set", "now + minutes"), ("add", "current + minutes")], "set"),
            tags.button("Reschedule", type="submit", name="action", value="reschedule"),
        ),
        tags.div(class_="buttons")(
            select("require_tls", "RequireTLS", [("yes", "yes"), ("no", "no"), ("default", "default")], "default"),
            tags.button("Set RequireTLS", type="submit", name="action", value="requiretls"),
        ),
    ]
