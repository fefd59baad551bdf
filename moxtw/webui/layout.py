"""The page layout and small building blocks, as ``twisted.web.template`` tags.

Every text and attribute value given to a tag is escaped when the page is flattened,
so data (subjects, addresses, error messages) can be passed as they are; there is no
way to insert raw markup here, on purpose.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from twisted.web.template import Flattenable, Tag, flattenString, tags

from .. import __version__

#: Children of a tag: tags, strings, or lists of them.
Content = Flattenable


def page(
    *,
    title: str,
    area_label: str,
    base: str,
    content: Sequence[Content],
    nav: Sequence[tuple[str, str]] = (),
    current: str = "",
    who: str = "",
    csrf: str = "",
    notice: str = "",
    error: str = "",
) -> Tag:
    """A whole page: ``base`` is the area's path (``/admin/``), ``nav`` its (path below
    ``base``, label) entries, ``current`` the one shown, ``who`` the logged-in user (with
    the logout buttons; "" when not logged in), ``csrf`` the session's CSRF token."""
    head = tags.head(
        tags.meta(charset="utf-8"),
        tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
        tags.title(f"{title} - {area_label}"),
        tags.link(rel="stylesheet", href=f"{base}static/webui.css"),
        tags.script(src=f"{base}static/webui.js", defer="defer"),
    )
    if csrf:
        head(tags.meta(name="csrf-token", content=csrf))
    header = tags.header(class_="top")(tags.p(class_="brand")(tags.a(area_label, href=base)))
    if nav:
        items = []
        for path, label in nav:
            link = tags.a(label, href=base + path)
            if path == current:
                link(**{"aria-current": "page"})
            items.append(tags.li(link))
        header(tags.nav(**{"aria-label": "Main"})(tags.ul(items)))
    if who:
        header(
            tags.form(method="post", action=f"{base}logout", class_="logout")(
                tags.span(who, class_="who"),
                hidden("csrf_token", csrf),
                tags.button("Log out", type="submit"),
                tags.button("Log out everywhere", type="submit", name="everywhere", value="1"),
            )
        )
    main = Tag("main")(id="main", tabindex="-1")(tags.h1(title))  # (not in ``tags``)
    if notice:
        main(tags.p(notice, class_="notice", role="status"))
    if error:
        main(tags.p(error, class_="error", role="alert"))
    main(list(content))
    body = tags.body(
        tags.a("Skip to main content", href="#main", class_="skip"),
        header,
        main,
        tags.footer(tags.p(f"moxtw {__version__}")),
    )
    return tags.html(lang="en")(head, body)


async def flatten(tag: Tag) -> bytes:
    """The page's HTML, with its doctype."""
    body: bytes = await flattenString(None, tag)
    return b"<!DOCTYPE html>\n" + body


# --- building blocks -----------------------------------------------------------------------


def hidden(name: str, value: str) -> Tag:
    return tags.input(type="hidden", name=name, value=value)


def text_input(name: str, label: str, value: str = "", *, hint: str = "", kind: str = "text", **attrs: str) -> Tag:
    """A labelled input; ``hint`` is shown below it and announced with it."""
    ident = f"f-{name}"
    field = tags.input(type=kind, name=name, id=ident, value=value, **attrs)
    out = tags.div(class_="field")(tags.label(label, for_=ident), field)
    if hint:
        field(**{"aria-describedby": f"{ident}-hint"})
        out(tags.small(hint, id=f"{ident}-hint", class_="hint"))
    return out


def select(name: str, label: str, options: Iterable[tuple[str, str]], value: str = "") -> Tag:
    """A labelled select of (value, text) options."""
    ident = f"f-{name}"
    sel = tags.select(name=name, id=ident)
    for v, text in options:
        option = tags.option(text, value=v)
        if v == value:
            option(selected="selected")
        sel(option)
    return tags.div(class_="field")(tags.label(label, for_=ident), sel)


def table(caption: str, headers: Sequence[Content], rows: Iterable[Sequence[Content]], *, empty: str = "None.") -> Tag:
    body = [tags.tr([tags.td(cell) for cell in row]) for row in rows]
    if not body:
        return tags.p(empty, class_="empty")
    return tags.div(class_="table")(
        tags.table(
            tags.caption(caption),
            tags.thead(tags.tr([tags.th(h, scope="col") for h in headers])),
            tags.tbody(body),
        )
    )


def when(t: float | None, now: float | None = None) -> Content:
    """A time as ``2026-11-24 10:23:13Z`` (UTC) in a ``<time>``, with "(in 5m)" or "(3h
    ago)" relative to ``now`` if given."""
    if t is None:
        return "-"
    dt = datetime.fromtimestamp(t, UTC)
    out = tags.time(dt.strftime("%Y-%m-%d %H:%M:%SZ"), datetime=dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
    if now is None:
        return out
    return [out, " ", tags.span(f"({relative(t - now)})", class_="rel")]


def relative(delta: float) -> str:
    """``in 5m`` / ``3h ago`` / ``now``."""
    seconds = abs(delta)
    if seconds < 1:
        return "now"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            amount = f"{int(seconds // size)}{unit}"
            break
    return f"in {amount}" if delta > 0 else f"{amount} ago"


def short(text: str, width: int = 60) -> Content:
    """``text`` cut to ``width`` characters (the whole text in the title)."""
    if len(text) <= width:
        return text
    return tags.span(text[: width - 1] + "…", title=text)
