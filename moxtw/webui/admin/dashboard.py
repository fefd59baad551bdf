"""Admin pages: the dashboard (``/admin/dashboard/``, where ``/admin/`` opens).

One read of the store (:func:`moxtw.store.stats.dashboard`, in the database's thread
pool): the queue by state, delivery attempts per hour over the last 24 hours (delivered
and failed, as a bar chart and as a table), the messages retired in that time by
outcome, and the webhook backlog; plus the DNSBL summary.

The chart is inline SVG built from ``twisted.web.template`` tags: no script, no style
attribute (the Content-Security-Policy allows neither), colours from classes in
``webui.css``.  It has a ``<title>`` and a description, and the same numbers are in a
table below it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...store import stats
from ..core import ADMIN_AREA, Page, WebUI, guarded, install_error_pages
from ..layout import Content, table, when
from .dnsbl import summary

HOURS = 24
#: Chart geometry (SVG user units): bar width and gaps, plot height, margins.
BAR, PAIR_GAP, HOUR_WIDTH = 8, 1, 22
PLOT_HEIGHT, LEFT, TOP, BOTTOM = 120, 34, 8, 18
#: Retired outcomes in the order shown.
OUTCOMES = ("delivered", "failed", "suppressed", "canceled")


def svg(name: str, *children: Content, **attributes: str) -> Tag:
    """An SVG element (not among ``tags``'s HTML names)."""
    return Tag(name)(*children, **attributes)


def hour_label(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:00")


def hour_range(start: float) -> str:
    first = datetime.fromtimestamp(start, UTC)
    return f"{first:%Y-%m-%d %H}:00–{datetime.fromtimestamp(start + stats.HOUR, UTC):%H}:00Z"


def scale_max(value: int) -> int:
    """A round top for the y axis, at least ``value``: 1, 2, 5, 10, 20, 50, ..."""
    magnitude = 1
    while True:
        for m in (1, 2, 5):
            if m * magnitude >= value:
                return m * magnitude
        magnitude *= 10


def chart(hours: tuple[stats.Hour, ...]) -> Tag:
    """Delivered and failed attempts per hour as bar pairs, oldest on the left."""
    top = scale_max(max([1, *(max(h.delivered, h.failed) for h in hours)]))
    width = LEFT + len(hours) * HOUR_WIDTH + 4
    height = TOP + PLOT_HEIGHT + BOTTOM
    base = TOP + PLOT_HEIGHT
    total_ok = sum(h.delivered for h in hours)
    total_bad = sum(h.failed for h in hours)
    title = "Delivery attempts per hour, last 24 hours"
    desc = (
        f"{total_ok} delivered and {total_bad} failed delivery attempts; one pair of bars per hour "
        f"(delivered, failed), from {hour_range(hours[0].start)} to {hour_range(hours[-1].start)}. "
        "The table below has the same numbers."
    )

    def y(value: int) -> float:
        return base - PLOT_HEIGHT * value / top

    grid: list[Content] = []
    for value in (0, top // 2, top) if top >= 2 else (0, top):
        grid.append(svg("line", x1=str(LEFT), x2=str(width - 4), y1=f"{y(value):g}", y2=f"{y(value):g}",
                        class_="grid"))  # fmt: skip
        grid.append(svg("text", str(value), x=str(LEFT - 4), y=f"{y(value) + 4:g}", class_="axis end"))
    bars: list[Content] = []
    for i, h in enumerate(hours):
        x = LEFT + i * HOUR_WIDTH + (HOUR_WIDTH - 2 * BAR - PAIR_GAP) // 2
        pair = svg("g", svg("title", f"{hour_range(h.start)}: {h.delivered} delivered, {h.failed} failed"),
                   class_="hour")  # fmt: skip
        for value, what, offset in ((h.delivered, "delivered", 0), (h.failed, "failed", BAR + PAIR_GAP)):
            pair(
                svg("rect", x=str(x + offset), y=f"{y(value):g}", width=str(BAR),
                    height=f"{base - y(value):g}", class_=f"bar {what}", **{"data-value": str(value)})
            )  # fmt: skip
        bars.append(pair)
        if i % 3 == 0:
            bars.append(svg("text", hour_label(h.start), x=str(LEFT + i * HOUR_WIDTH + HOUR_WIDTH // 2),
                            y=str(height - 4), class_="axis middle"))  # fmt: skip
    return svg(
        "svg",
        svg("title", title, id="chart-title"),
        svg("desc", desc, id="chart-desc"),
        svg("g", grid),
        svg("g", bars),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {height}",
        role="img",
        class_="chart",
        **{"aria-labelledby": "chart-title chart-desc"},
    )


def legend() -> Tag:
    return tags.ul(class_="legend")(
        tags.li(tags.span(class_="swatch delivered"), " delivered"),
        tags.li(tags.span(class_="swatch failed"), " failed (will be retried, or failed for good)"),
    )


def queue_table(page: Page, q: stats.QueueStates) -> Tag:
    rows: list[list[Content]] = [
        [tags.a("Queued", href=page.url("queue/")), str(q.total), "every message waiting to be delivered"],
        [tags.a("Held", href=page.url("queue/?hold=yes")), str(q.held), "kept until released"],
        ["Being delivered", str(q.delivering), "an attempt is running"],
        ["Due now", str(q.due), "not held, to be attempted now"],
        ["Retrying", str(q.retrying), "not held, an earlier attempt failed; waiting for the next"],
        ["With failed attempts", str(q.with_failures), "held or not"],
    ]
    return table("Queue by state", ["State", "Messages", "Meaning"], rows)


def hours_table(hours: tuple[stats.Hour, ...]) -> Tag:
    rows = [[hour_range(h.start), str(h.delivered), str(h.failed)] for h in reversed(hours)]
    return table("Delivery attempts per hour (UTC), newest first", ["Hour", "Delivered", "Failed"], rows)


def retired_text(retired: dict[str, int]) -> str:
    parts = [f"{retired.get(k, 0)} {k}" for k in OUTCOMES]
    parts += [f"{n} {k}" for k, n in sorted(retired.items()) if k not in OUTCOMES]
    return "Messages retired in these 24 hours (kept ones): " + ", ".join(parts) + "."


def hooks_facts(h: stats.HookBacklog, now: float) -> Content:
    if not h.queued:
        return tags.p("No webhooks are queued.")
    return tags.p(
        f"{h.queued} webhook(s) queued, {h.retrying} of them after failed attempts; the oldest is from ",
        when(h.oldest, now),
        ".",
    )


@attrs.define(eq=False)
class DashboardPages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    async def read(self) -> stats.Dashboard:
        now = self.ui.now()
        result: stats.Dashboard = await self.ui.queue.store.db.run("dashboard", stats.dashboard, now, HOURS)
        return result

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        page.current = "dashboard/"
        d = await self.read()
        dnsbl: Any = self.ui.dnsbl.status() if self.ui.dnsbl is not None else None
        content: list[Content] = [
            tags.h2("Queue"),
            queue_table(page, d.queue),
            tags.h2("Deliveries in the last 24 hours"),
            tags.figure(class_="chart")(chart(d.hours), tags.figcaption(legend())),
            tags.p(
                retired_text(d.retired),
                " Counted from the delivery history the store keeps: messages still queued, and retired "
                "messages of accounts that keep them (Keep retired messages).",
                class_="hint",
            ),
            tags.details(tags.summary("The numbers per hour"), hours_table(d.hours)),
            tags.h2("Webhooks"),
            hooks_facts(d.hooks, d.now),
            tags.p(tags.a("Webhook queue", href=page.url("webhooks/"))),
            tags.h2("DNSBL"),
            summary(dnsbl, d.now),
            tags.p(tags.a("DNSBL status", href=page.url("dnsbl/"))),
        ]
        return await page.render("Dashboard", *content)
