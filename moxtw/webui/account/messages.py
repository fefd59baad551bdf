"""Account pages: the account's own outgoing messages (``/account/messages/``).

Two lists, newest first (by the time the message was queued): the messages still in the
queue and the retired ones (delivered, failed, canceled, kept for the account's "keep
retired messages" period).  Each list pages with keysets of its own ("next" continues
after the last row shown, "previous" goes back from the first), through the admin
operations' :meth:`~moxtw.admin.ops.QueueAdmin.list_queue` and
:meth:`~moxtw.admin.ops.QueueAdmin.list_retired` with a filter on the session's account:
nothing in the URL can name another account.

``/account/messages/<id>`` shows one message, queued or retired, with every delivery
attempt (time, result, SMTP code and text, remote host, TLS).  The ID of another account's
message is answered exactly like an unknown ID (404).
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import urlencode

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...admin.types import to_time, to_us
from ...settings import duration_text
from ...store import admin as sa
from ...store.outbox import AttemptRow, QueueRow, RetiredRow
from ..core import ACCOUNT_AREA, Page, PageError, WebUI, guarded, install_error_pages
from ..delivery import facts as facts_list
from ..delivery import (
    history,
    last_result,
    recipient,
    require_tls,
    retired_result,
    sender,
)
from ..http import Fields, field
from ..layout import Content, short, table, when

PAGE_SIZE = 25
#: Largest message ID looked up (SQLite integers are 64-bit).
MAX_ID = 2**62
#: The two lists: (query prefix, caption).
LISTS = {"q": "Queued messages", "r": "Retired messages"}


class BadQuery(ValueError):
    """A paging field of the query string is invalid; ``str()`` says why."""


@attrs.frozen
class Cursor:
    """Where a list's page starts: after (or, ``back``, before) the row queued at ``us``
    (microseconds) with ID ``ident``; None: the newest."""

    us: int
    ident: int
    back: bool = False


def _int(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadQuery(f"{what}: expected a number, got {text!r}") from None
    if not low <= value <= high:
        raise BadQuery(f"{what}: must be from {low} to {high}, got {value}")
    return value


def parse_cursor(fields: Fields, prefix: str) -> Cursor | None:
    """The cursor of list ``prefix`` ("q" or "r"): ``q_after`` and ``q_after_id`` (or
    ``q_before``...)."""
    found: list[Cursor] = []
    for direction in ("after", "before"):
        name = f"{prefix}_{direction}"
        value, ident = field(fields, name), field(fields, f"{name}_id")
        if value or ident:
            found.append(Cursor(_int(value, name, -(2**62), 2**62), _int(ident, f"{name}_id", 1, MAX_ID),
                                back=direction == "before"))  # fmt: skip
    if len(found) > 1:
        raise BadQuery(f"give either {prefix}_after or {prefix}_before, not both")
    return found[0] if found else None


@attrs.frozen
class Listing:
    rows: list[tuple[QueueRow | RetiredRow, list[AttemptRow]]]
    has_previous: bool
    has_next: bool


async def fetch(
    ui: WebUI, account: str, prefix: str, cursor: Cursor | None, size: int = 0
) -> Listing:
    """One page of list ``prefix`` of ``account``, newest first (``size`` rows, default
    :data:`PAGE_SIZE`); one more row than shown is asked for, to know whether there is
    another page in that direction."""
    size = size or PAGE_SIZE
    asc = cursor is not None and cursor.back
    sort = sa.Sort(field="queued", asc=asc)
    if cursor is not None:
        sort = sa.Sort(field="queued", asc=asc, last_id=cursor.ident, last_us=cursor.us)
    rows: list[tuple[QueueRow | RetiredRow, list[AttemptRow]]]
    if prefix == "q":
        queued = await ui.queue.list_queue(sa.Filter(account=account, max=size + 1), sort)
        rows = [(i.row, i.attempts) for i in queued]
    else:
        retired = await ui.queue.list_retired(sa.RetiredFilter(account=account, max=size + 1), sort)
        rows = [(i.row, i.attempts) for i in retired]
    more = len(rows) > size
    rows = rows[:size]
    if asc:
        rows.reverse()
        return Listing(rows, has_previous=more, has_next=True)
    return Listing(rows, has_previous=cursor is not None, has_next=more)


async def find(
    ui: WebUI, account: str, msg_id: int
) -> tuple[QueueRow | RetiredRow, list[AttemptRow]] | None:
    """The queued or retired message ``msg_id`` of ``account`` (None: none of its own)."""
    queued = await ui.queue.list_queue(
        sa.Filter(ids=(msg_id,), account=account, max=1), sa.Sort("queued")
    )
    if queued:
        return queued[0].row, queued[0].attempts
    retired = await ui.queue.list_retired(
        sa.RetiredFilter(ids=(msg_id,), account=account, max=1), sa.Sort("queued")
    )
    if retired:
        return retired[0].row, retired[0].attempts
    return None


def state(row: QueueRow | RetiredRow) -> str:
    """ "queued", "held", "delivered", or the retired message's last event."""
    if isinstance(row, QueueRow):
        return "held" if row.hold else "queued"
    return retired_result(row)


def _cursor_params(
    prefix: str, direction: str, row: QueueRow | RetiredRow
) -> list[tuple[str, str]]:
    return [
        (f"{prefix}_{direction}", str(to_us(to_time(row.queued)))),
        (f"{prefix}_{direction}_id", str(row.id)),
    ]


@attrs.define(eq=False)
class MessagePages:
    ui: WebUI
    area: ClassVar = ACCOUNT_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        page.current = "messages/"
        account = page.login().account
        try:
            cursors = {prefix: parse_cursor(page.query, prefix) for prefix in LISTS}
        except BadQuery as e:
            raise PageError(400, "Bad request", str(e)) from None
        now = self.ui.now()
        keep = account.keep_retired_messages
        content: list[Content] = [
            tags.p(
                f"The messages account {account.name} sent, newest first. Retired messages (delivered, failed or "
                "canceled) are "
                + (
                    f"kept for {duration_text(keep)} after their last attempt"
                    if keep > 0
                    else "not kept"
                )
                + " (see Settings, Keep retired messages)."
            )
        ]
        # Queued first, then retired: a message retired between the two reads is in both
        # and is shown once, as retired (the later read).
        listings = {prefix: await fetch(self.ui, account.name, prefix, cursors[prefix]) for prefix in LISTS}
        retired_ids = {row.id for row, _ in listings["r"].rows}
        listings["q"].rows[:] = [(row, attempts) for row, attempts in listings["q"].rows if row.id not in retired_ids]
        for prefix, caption in LISTS.items():
            listing = listings[prefix]
            content.append(tags.h2(caption, id=f"{prefix}-list"))
            content.append(self._table(page, prefix, caption, listing, now))
            content.append(self._pager(page, prefix, caption, cursors, listing))
        return await page.render("Messages", *content)

    @app.route("/<int:msg_id>", methods=["GET", "HEAD"])
    @guarded()
    async def detail(self, request: Request, page: Page, msg_id: int) -> bytes:
        page.current = "messages/"
        account = page.login().account.name
        found = await find(self.ui, account, msg_id) if 0 < msg_id <= MAX_ID else None
        if found is None:
            # Another account's message is answered like one that does not exist.
            raise PageError(
                404, "No such message", f"There is no message {msg_id} in this account."
            )
        row, attempts = found
        now = self.ui.now()
        facts: list[tuple[str, Content]] = [
            ("State", state(row)),
            ("From", sender(row)),
            ("To", recipient(row)),
            ("Subject", row.subject or "-"),
            ("Message-ID", row.message_id or "-"),
            ("Queued", when(row.queued, now)),
        ]
        if isinstance(row, QueueRow):
            facts.append(("Next attempt", when(row.next_attempt, now)))
            facts.append(("Attempts", f"{row.attempts} of at most {row.effective_max_attempts}"))
        else:
            facts.append(("Last activity", when(row.last_activity, now)))
            facts.append(("Attempts", str(row.attempts)))
            facts.append(("Kept until", when(row.keep_until, now)))
        if row.from_id:
            facts.append(("FromID", row.from_id))
        facts.append(("Size", f"{row.size} bytes"))
        if row.transport:
            facts.append(("Transport", row.transport))
        if row.require_tls is not None:
            facts.append(("RequireTLS", require_tls(row.require_tls)))
        content: list[Content] = [
            tags.p(tags.a("← All messages", href=page.url("messages/"))),
            facts_list(facts),
            *history(attempts),
        ]
        return await page.render(f"Message {row.id}", *content)

    # --- rendering --------------------------------------------------------------------------

    def _table(self, page: Page, prefix: str, caption: str, listing: Listing, now: float) -> Tag:
        rows: list[list[Content]] = []
        for row, attempts in listing.rows:
            rows.append([
                tags.a(str(row.id), href=page.url(f"messages/{row.id}"), **{"aria-label": f"Message {row.id}"}),
                when(row.queued, now),
                sender(row),
                recipient(row),
                short(row.subject, 50),
                state(row),
                str(row.attempts),
                last_result(attempts),
            ])  # fmt: skip
        headers = ["ID", "Queued", "From", "To", "Subject", "State", "Attempts", "Last result"]
        empty = "No queued messages." if prefix == "q" else "No retired messages."
        return table(caption, headers, rows, empty=empty)

    def _pager(self, page: Page, prefix: str, caption: str, cursors: dict[str, Cursor | None],
               listing: Listing) -> Content:  # fmt: skip
        # The other list stays where it is.
        keep: list[tuple[str, str]] = []
        for other, cursor in cursors.items():
            if other != prefix and cursor is not None:
                direction = "before" if cursor.back else "after"
                keep += [
                    (f"{other}_{direction}", str(cursor.us)),
                    (f"{other}_{direction}_id", str(cursor.ident)),
                ]

        def link(params: list[tuple[str, str]]) -> str:
            params = keep + params
            return (
                page.url("messages/")
                + ("?" + urlencode(params) if params else "")
                + f"#{prefix}-list"
            )

        links: list[Content] = []
        if listing.rows and listing.has_previous:
            links.append(tags.a("← Newer", href=link(_cursor_params(prefix, "before", listing.rows[0][0])),
                                rel="prev"))  # fmt: skip
        if listing.rows and listing.has_next:
            links.append(tags.a("Older →", href=link(_cursor_params(prefix, "after", listing.rows[-1][0])),
                                rel="next"))  # fmt: skip
        if cursors[prefix] is not None:
            links.append(tags.a("Newest", href=link([])))
        if not links:
            return ""
        label = f"Pages of {caption.lower()}"
        return tags.nav(class_="pager", **{"aria-label": label})(
            tags.ul([tags.li(a) for a in links])
        )
