"""Admin pages: the outgoing queue (``/admin/queue/``).

The list takes mox's queue filter (account, From and To substrings, held or not, the
submitted and next-attempt time conditions such as ``<now`` or ``>-1h``, transport,
message IDs) and sort (next attempt or queued time, either direction) from the query
string and pages with keysets: "next" continues after the last row shown (its sort value
and ID), "previous" goes back from the first, so a page costs the same wherever it is,
through :func:`moxtw.store.admin.list_queue` (the admin API's QueueList).

Bulk actions (hold, release) apply to the selected rows or to every message matching
the filter, through :class:`~moxtw.admin.ops.QueueAdmin` like ``moxtw queue hold`` and the
admin API's QueueHoldSet; the selected rows must match the filter too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.types import to_time, to_us
from ...store import admin as sa
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import Fields, field
from ..layout import Content, hidden, select, short, table, text_input, when

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
SORT_FIELDS = {"next_attempt": "Next attempt", "queued": "Queued"}
#: Query fields of the filter and sort (kept in links and in the bulk form).
FILTER_FIELDS = ("ids", "account", "from", "to", "hold", "submitted", "next", "transport")
SORT_PARAMS = ("sort", "order", "n")
MAX_IDS = 1000

NOTICES = {"held": "{n} message(s) held.", "released": "{n} message(s) released."}
ERRORS = {"noselection": "No messages were selected; nothing was changed."}


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


def _int(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise sa.FilterError(f"{what}: expected a number, got {text!r}") from None
    if not low <= value <= high:
        raise sa.FilterError(f"{what}: must be from {low} to {high}, got {value}")
    return value


def _cursor(fields: Fields, name: str) -> tuple[int, int] | None:
    value, ident = field(fields, name), field(fields, f"{name}_id")
    if not value and not ident:
        return None
    return _int(value, name, -(2**62), 2**62), _int(ident, f"{name}_id", 1, 2**62)


def parse_query(fields: Fields) -> QueueQuery:
    """The list request of query or form ``fields``; :class:`~moxtw.store.admin.FilterError`
    if a field is invalid."""
    ids: list[int] = []
    for part in field(fields, "ids").replace(",", " ").split():
        ids.append(_int(part, "message ID", 1, 2**62))
    if len(ids) > MAX_IDS:
        raise sa.FilterError(f"too many message IDs (at most {MAX_IDS})")
    hold = {"": None, "yes": True, "no": False}.get(field(fields, "hold"), "bad")
    if hold == "bad":
        raise sa.FilterError("held: expected yes, no or nothing")
    assert hold is None or isinstance(hold, bool)
    sort = field(fields, "sort") or "next_attempt"
    if sort not in SORT_FIELDS:
        raise sa.FilterError(f"sort: expected one of {', '.join(SORT_FIELDS)}")
    order = field(fields, "order") or "desc"
    if order not in ("asc", "desc"):
        raise sa.FilterError("order: expected asc or desc")
    transport = field(fields, "transport")
    f = sa.Filter(
        ids=tuple(ids),
        account=field(fields, "account"),
        sender=field(fields, "from"),
        recipient=field(fields, "to"),
        hold=hold,
        submitted=sa.parse_time_condition(field(fields, "submitted"), "Submitted"),
        next_attempt=sa.parse_time_condition(field(fields, "next"), "Next attempt"),
        transport=transport or None,
    )
    size = _int(field(fields, "n"), "page size", 1, MAX_PAGE_SIZE) if field(fields, "n") else PAGE_SIZE
    after, before = _cursor(fields, "after"), _cursor(fields, "before")
    if after is not None and before is not None:
        raise sa.FilterError("give either after or before, not both")
    return QueueQuery(f, sort, order == "asc", size, after, before, given_params(fields))


def given_params(fields: Fields) -> tuple[tuple[str, str], ...]:
    """The filter and sort fields that have a value, in a fixed order."""
    return tuple((name, field(fields, name)) for name in (*FILTER_FIELDS, *SORT_PARAMS) if field(fields, name))


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
    """One page of the list: one more row than shown is asked for to know whether there
    is another page in that direction."""
    limited = attrs.evolve(q.filter, max=q.size + 1)
    if q.before is not None:
        us, ident = q.before
        items = await ui.queue.list_queue(limited, sa.Sort(q.field, not q.asc, ident, us))
        more = len(items) > q.size
        items = items[: q.size]
        items.reverse()
        return Listing(items, has_previous=more, has_next=True)
    after_us, after_id = q.after if q.after is not None else (None, 0)
    items = await ui.queue.list_queue(limited, sa.Sort(q.field, q.asc, after_id, after_us))
    more = len(items) > q.size
    return Listing(items[: q.size], has_previous=q.after is not None, has_next=more)


def _link(page: Page, params: Sequence[tuple[str, str]]) -> str:
    url = page.url("queue/")
    return f"{url}?{urlencode(list(params))}" if params else url


def _last_result(item: sa.QueueItem) -> Content:
    if not item.attempts:
        return "-"
    a = item.attempts[-1]
    if a.duration is None:
        return "in progress"
    if a.success:
        return "ok"
    text = " ".join(p for p in (str(a.code) if a.code else "", a.secode, a.error) if p)
    return short(text or "failed", 80)


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
        notice = ""
        done = field(page.query, "done")
        if done in NOTICES:
            try:
                n = _int(field(page.query, "count") or "0", "count", 0, 2**62)
            except sa.FilterError:
                n = 0
            notice = NOTICES[done].format(n=n)
        error = ERRORS.get(field(page.query, "error"), "")
        return await self._render(page, q, listing, notice=notice, error=error)

    @app.route("/", methods=["POST"])
    @guarded()
    async def bulk(self, request: Request, page: Page) -> bytes:
        try:
            q = parse_query(page.form)
        except sa.FilterError as e:
            raise PageError(400, "Bad filter", str(e)) from None
        action = field(page.form, "action")
        if action not in ("hold", "release"):
            raise PageError(400, "Bad request", "action: expected hold or release")
        f = q.filter
        if field(page.form, "scope", "selected") != "all":
            try:
                selected = {_int(v, "message ID", 1, 2**62) for v in page.form.get("id", [])}
            except sa.FilterError as e:
                raise PageError(400, "Bad request", str(e)) from None
            if f.ids:
                selected &= set(f.ids)
            if not selected:
                # An empty ID list would mean "no ID criterion": every message matching.
                raise Redirect(_link(page, [*q.params, ("error", "noselection")]))
            f = attrs.evolve(f, ids=tuple(sorted(selected)))
        n = await self.ui.queue.set_hold(f, action == "hold")
        done = "held" if action == "hold" else "released"
        raise Redirect(_link(page, [*q.params, ("done", done), ("count", str(n))]))

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
            content.append(self._pager(page, q, listing))
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
                str(r.id),
                r.account,
                f"{r.sender_localpart}@{r.sender_domain}",
                f"{r.recipient_localpart}@{r.recipient_domain}",
                short(r.subject, 50),
                when(r.queued),
                when(r.next_attempt, now),
                f"{r.attempts}/{r.effective_max_attempts}",
                "held" if r.hold else "",
                _last_result(item),
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
                tags.button("Hold", type="submit", name="action", value="hold"),
                " ",
                tags.button("Release", type="submit", name="action", value="release"),
            ),
        )

    def _pager(self, page: Page, q: QueueQuery, listing: Listing) -> Content:
        links: list[Content] = []
        if listing.items and listing.has_previous:
            first = listing.items[0]
            cursor = [("before", str(sort_value(first, q.field))), ("before_id", str(first.row.id))]
            links.append(tags.a("← Previous page", href=_link(page, [*q.params, *cursor]), rel="prev"))
        if listing.items and listing.has_next:
            last = listing.items[-1]
            cursor = [("after", str(sort_value(last, q.field))), ("after_id", str(last.row.id))]
            links.append(tags.a("Next page →", href=_link(page, [*q.params, *cursor]), rel="next"))
        if q.after is not None or q.before is not None:
            links.append(tags.a("First page", href=_link(page, q.params)))
        if not links:
            return ""
        return tags.nav(class_="pager", **{"aria-label": "Pages"})(tags.ul([tags.li(link) for link in links]))
