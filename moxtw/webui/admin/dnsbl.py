"""Admin pages: the DNSBL status of our outgoing IPs (``/admin/dnsbl/``).

Shows the monitor's latest result of every (IP, zone) pair (:mod:`moxtw.dnsbl`): listed
or not, the zone's TXT reason or the lookup's error, and when the last check ran, as
``moxtw dnsbl check`` and the admin API's DNSBLStatus report them: from the monitor in
the main process, from ``<data_dir>/dnsbl-status.json`` in an HTTP worker.

"Check now" asks the monitor for a check at once (in a worker, through the main
process); the check runs in the background, one lookup a second, so the page only says
it was requested.  Without ``[dnsbl] zones`` (or in localserve) nothing is checked and
the page says so.
"""

from __future__ import annotations

from typing import ClassVar

import attrs
from klein import Klein
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from ...dnsbl import FAIL, PASS, DNSBLStatus, kind
from ..core import ADMIN_AREA, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from ..delivery import facts
from ..http import field
from ..layout import Content, hidden, table, when

NOTICES = {
    "requested": "A check was requested: every IP is looked up in every zone, one lookup a second. "
    "Reload this page in a moment for the results.",
}
NOT_CONFIGURED = "No DNSBL zones configured."


def describe(status: str) -> tuple[str, str]:
    """A status string (``pass``, ``fail: <TXT>``, ``temperror: <error>``) as (state,
    reason)."""
    state = kind(status)
    detail = status.partition(":")[2].strip()
    if state == PASS:
        return "not listed", ""
    if state == FAIL:
        return "listed", detail or "(the zone gave no TXT reason)"
    return "lookup failed", detail or status


def listed(status: DNSBLStatus) -> list[tuple[str, str, str]]:
    """(ip, zone, reason) of every listing."""
    out = []
    for ip, by_zone in sorted(status.results.items()):
        for zone, value in sorted(by_zone.items()):
            if kind(value) == FAIL:
                out.append((ip, zone, describe(value)[1]))
    return out


def failed_lookups(status: DNSBLStatus) -> int:
    return sum(1 for by_zone in status.results.values() for v in by_zone.values() if kind(v) not in (PASS, FAIL))


def summary(status: DNSBLStatus | None, now: float) -> Content:
    """One paragraph for the dashboard: listed anywhere or not."""
    if status is None or not status.monitoring:
        return tags.p(NOT_CONFIGURED if status is None or not status.zones else "Not checked in localserve.")
    if status.checked is None and not status.results:
        return tags.p("Not checked yet (the daemon checks at startup, one lookup a second).")
    found = listed(status)
    checked: Content = ["last checked ", when(status.checked, now)] if status.checked is not None else "checked"
    if found:
        where = "; ".join(f"{ip} in {zone}" for ip, zone, _ in found)
        return tags.p(class_="alert")(tags.strong(f"Listed: {where}"), " (", checked, ").")
    pairs = sum(len(z) for z in status.results.values())
    failed = failed_lookups(status)
    text = f"Not listed in any zone ({pairs} IP/zone pair(s)"
    if failed:
        text += f", {failed} lookup(s) failed"
    return tags.p(text, "; ", checked, ").")


@attrs.define(eq=False)
class DNSBLPages:
    ui: WebUI
    area: ClassVar = ADMIN_AREA

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def show(self, request: Request, page: Page) -> bytes:
        page.current = "dnsbl/"
        return await page.render("DNSBL", *self._content(page), notice=NOTICES.get(field(page.query, "done"), ""))

    @app.route("/", methods=["POST"])
    @guarded()
    async def check(self, request: Request, page: Page) -> bytes:
        source = self.ui.dnsbl
        if source is None or not source.monitoring or source.request_check is None:
            raise PageError(400, "Cannot check now", "No DNSBL monitor runs, so there is nothing to check.")
        if source.request_check() is False:
            raise PageError(503, "Cannot check now", "The DNSBL monitor is not running (the daemon is stopping?).")
        raise Redirect(page.url("dnsbl/") + "?done=requested")

    def _content(self, page: Page) -> list[Content]:
        source = self.ui.dnsbl
        intro = tags.p(
            "moxtw checks whether the IPs it sends from are listed in the DNS blocklists of "
            "[dnsbl] zones, to warn you before recipients refuse its mail. Monitoring only: "
            "incoming mail is never filtered by DNSBL."
        )
        if source is None:
            return [intro, tags.p("The DNSBL status is not known in this process.")]
        status = source.status()
        if not status.monitoring:
            if status.zones:
                text = (f"Zones are configured ({', '.join(status.zones)}), but they are not checked in "
                        "localserve.")  # fmt: skip
                return [intro, tags.p(text)]
            return [
                intro,
                tags.p(tags.strong(NOT_CONFIGURED), " Set [dnsbl] zones in the configuration file (and restart) "
                       "to have moxtw check its IPs, for example zones = [\"zen.spamhaus.org\"]."),
            ]  # fmt: skip
        now = self.ui.now()
        checked: Content = when(status.checked, now) if status.checked is not None else "not yet"
        rows: list[list[Content]] = []
        for ip, by_zone in sorted(status.results.items()):
            for zone, value in sorted(by_zone.items()):
                state, reason = describe(value)
                rows.append([ip, zone, tags.strong(state) if state == "listed" else state, reason or "-",
                             when(status.checked, now) if status.checked is not None else "-"])  # fmt: skip
        content: list[Content] = [
            intro,
            facts([("Zones", ", ".join(status.zones)), ("Last check", checked)]),
            summary(status, now),
            table("DNSBL status", ["IP", "Zone", "Status", "Reason", "Checked"], rows,
                  empty="No results yet: the daemon checks at startup, one lookup a second (or found no public "
                  "IPs to check: set [dnsbl] ips)."),
        ]  # fmt: skip
        content.append(self._check_form(page, source.request_check is not None))
        return content

    def _check_form(self, page: Page, possible: bool) -> Tag:
        form = tags.form(method="post", action=page.url("dnsbl/"), class_="inline")(hidden("csrf_token", page.csrf))
        if not possible:
            return tags.p("A check cannot be requested from this process.")
        return tags.div(
            form(tags.button("Check now", type="submit")),
            tags.p(
                "Otherwise the daemon checks at startup, after 100 outgoing connections and at least every "
                "3 hours.",
                class_="hint",
            ),
        )
