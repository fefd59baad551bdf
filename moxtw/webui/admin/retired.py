"""Admin pages: retired messages (``/admin/retired/``, ``/admin/retired/<id>``).

Messages that left the queue (delivered, failed, canceled, suppressed) are kept for their
account's "keep retired messages" period.  The list takes the filter of ``moxtw retired
list`` and the admin API's RetiredList (account, From and To substrings, delivered or
not, the submitted and last-activity time conditions such as ``>-1h``, transport,
message IDs) and sort (last activity or queued time, either direction), and pages with
keysets like the queue list, through :func:`moxtw.store.admin.list_retired`.

``/admin/retired/<id>`` shows the retired record with its final result and every
delivery attempt.  The ID of a message still in the queue redirects to the queue's page
of it; an unknown ID is a 404 page.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.types import to_time, to_us
from ...store import admin as sa
from .. import delivery
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..http import Fields, field
from ..layout import Content, select, short, table, text_input, when
from .queue import (
    MAX_ID,
    MAX_PAGE_SIZE,
    SORT_PARAMS,
    Paging,
    fetch_page,
    given_params,
    notice,
    pager,
    parse_choice,
    parse_ids,
    parse_paging,
)

SORT_FIELDS = {"last_activity": "Last activity", "queued": "Queued"}
#: Query fields of the filter and sort (kept in links).
FILTER_FIELDS = ("ids", "account", "from", "to", "success", "submitted", "activity", "transport")
PARAMS = (*FILTER_FIELDS, *SORT_PARAMS)
RESULTS = {"": None, "yes": True, "no": False}


@attrs.frozen
class RetiredQuery:
    filter: sa.RetiredFilter
    paging: Paging
    #: The filter and sort fields as given (for links and forms), without the cursor.
    params: tuple[tuple[str, str], ...] = ()


def parse_query(fields: Fields) -> RetiredQuery:
    """The list request of query ``fields``; :class:`~moxtw.store.admin.FilterError` if a
    field is invalid."""
    transport = field(fields, "transport")
    f = sa.RetiredFilter(
        ids=parse_ids(fields),
        account=field(fields, "account"),
        sender=field(fields, "from"),
        recipient=field(fields, "to"),
        success=parse_choice(fields, "success", RESULTS, "result: expected yes (delivered), no or nothing"),
        submitted=sa.parse_time_condition(field(fields, "submitted"), "Submitted"),
        last_activity=sa.parse_time_condition(field(fields, "activity"), "Last activity"),
        transport=transport or None,
    )
    return RetiredQuery(f, parse_paging(fields, SORT_FIELDS), given_params(fields, PARAMS))


def sort_value(item: sa.RetiredItem, field_name: str) -> int:
    """The sort field of a row in µs, as the store compares it (for the next cursor)."""
    t = item.row.last_activity if field_name == "last_activity" else item.row.queued
    return to_us(to_time(t))


@attrs.define(eq=False)
class RetiredPages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        page.current = "retired/"
        try:
            q = parse_query(page.query)
        except sa.FilterError as e:
            bad = RetiredQuery(sa.RetiredFilter(), Paging("last_activity"), given_params(page.query, PARAMS))
            return await page.render("Retired messages", self._filter_form(page, bad), error=str(e), status=400)
        size = q.paging.size
        limited = attrs.evolve(q.filter, max=size + 1)
        items, has_previous, has_next = await fetch_page(
            q.paging, size, lambda s: self.ui.queue.list_retired(limited, s)
        )
        now = self.ui.now()
        cursors = [(sort_value(i, q.paging.field), i.row.id) for i in items]
        content: list[Content] = [
            tags.p(
                "Messages that left the queue: delivered, failed, canceled or suppressed. Each account keeps them "
                "for its keep-retired period."
            ),
            self._filter_form(page, q),
            self._table(page, items, now),
            pager(page, "retired/", q.params, q.paging, cursors, has_previous, has_next),
        ]
        return await page.render("Retired messages", *content)

    @app.route("/<int:msg_id>", methods=["GET", "HEAD"])
    @guarded()
    async def detail(self, request: Request, page: Page, msg_id: int) -> bytes:
        page.current = "retired/"
        if not 0 < msg_id <= MAX_ID:
            raise PageError(404, "No such message", f"There is no retired message {msg_id}.")
        found = await self.ui.queue.list_retired(sa.RetiredFilter(ids=(msg_id,), max=1), sa.Sort("queued"))
        if not found:
            if await self.ui.queue.list_queue(sa.Filter(ids=(msg_id,), max=1), sa.Sort()):
                raise Redirect(page.url(f"queue/{msg_id}"))
            raise PageError(404, "No such message", f"There is no retired message {msg_id}.")
        row, attempts = found[0].row, found[0].attempts
        now = self.ui.now()
        final: Content = "-"
        if attempts:
            final = delivery.smtp_text(attempts[-1]) or delivery.attempt_result(attempts[-1])
        items: list[tuple[str, Content]] = [
            ("Result", delivery.retired_result(row)),
            ("Final result", final),
            *delivery.common_facts(row, now),
            ("Last activity", when(row.last_activity, now)),
            ("Last attempt", when(row.last_attempt, now)),
            ("Attempts", str(row.attempts)),
            ("Kept until", when(row.keep_until, now)),
            *delivery.detail_facts(row),
        ]
        content: list[Content] = [
            tags.p(tags.a("← Retired messages", href=page.url("retired/"))),
            delivery.facts(items),
            *delivery.history(attempts),
        ]
        return await page.render(f"Retired message {row.id}", *content, notice=notice(page.query))

    # --- rendering --------------------------------------------------------------------------

    def _filter_form(self, page: Page, q: RetiredQuery) -> Tag:
        given = dict(q.params)
        results = [("", "any"), ("yes", "delivered"), ("no", "not delivered")]
        return tags.form(method="get", action=page.url("retired/"), role="search", class_="filter")(
            tags.fieldset(
                tags.legend("Filter"),
                text_input("account", "Account", given.get("account", "")),
                text_input("from", "From contains", given.get("from", "")),
                text_input("to", "To contains", given.get("to", "")),
                select("success", "Result", results, given.get("success", "")),
                text_input("submitted", "Submitted", given.get("submitted", ""), hint="<now, >-1h, <-30m"),
                text_input("activity", "Last activity", given.get("activity", ""), hint=">-1h, <-1d"),
                text_input("transport", "Transport", given.get("transport", "")),
                text_input("ids", "Message IDs", given.get("ids", ""), hint="e.g. 12, 13"),
            ),
            tags.fieldset(
                tags.legend("Order"),
                select("sort", "Sort by", list(SORT_FIELDS.items()), q.paging.field),
                select("order", "Order", [("desc", "descending"), ("asc", "ascending")],
                       "asc" if q.paging.asc else "desc"),  # fmt: skip
                text_input("n", "Per page", str(q.paging.size), kind="number", min="1", max=str(MAX_PAGE_SIZE)),
            ),
            tags.div(class_="buttons")(
                tags.button("Apply", type="submit"), " ", tags.a("Clear", href=page.url("retired/"))
            ),
        )

    def _table(self, page: Page, items: list[sa.RetiredItem], now: float) -> Tag:
        rows: list[list[Content]] = []
        for item in items:
            r = item.row
            rows.append([
                tags.a(str(r.id), href=page.url(f"retired/{r.id}"), **{"aria-label": f"Retired message {r.id}"}),
                r.account,
                delivery.sender(r),
                delivery.recipient(r),
                short(r.subject, 50),
                when(r.queued),
                when(r.last_activity, now),
                str(r.attempts),
                delivery.retired_result(r),
                delivery.last_result(item.attempts),
            ])  # fmt: skip
        headers = ["ID", "Account", "From", "To", "Subject", "Queued", "Last activity", "Attempts", "Result",
                   "Last attempt"]  # fmt: skip
        return table("Retired messages", headers, rows, empty="No retired messages match.")
