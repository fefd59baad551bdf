"""What every page of the web interface shares: the areas, the :class:`WebUI` context,
the per-request :class:`Page`, and :func:`guarded`, which every page handler wears.

A page group is a class with ``ui`` (the :class:`WebUI`), ``area`` (:data:`ADMIN_AREA` or
:data:`ACCOUNT_AREA`) and a class-level ``Klein`` app whose routes are decorated with
``@guarded()``.  The decorator does, before the handler runs:

1. security headers (CSP without inline script, no framing, ``no-store``);
2. the transport check (:func:`moxtw.webui.http.transport`): outside localserve only
   TLS (direct or via a local proxy) or local browsers;
3. for every method but GET/HEAD: the same-origin check and form parsing;
4. the session (the area's cookie, not logged out): GET without one redirects to the
   login page, anything else gets a 403 page;
5. for every method but GET/HEAD: the CSRF token (form field ``csrf_token`` or header
   ``X-CSRF-Token``), compared in constant time; a wrong or missing one is a 403 page.

So a handler that runs has a valid session and, if it may change state, a valid token.
:class:`PageError` and :class:`Redirect` raised by handlers become pages; any other
exception is logged and answered with a 500 page (no traceback).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import attrs
from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from twisted.web.template import tags
from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import RequestRedirect

from ..accounts import Accounts, Login
from ..admin.ops import QueueAdmin
from ..dnsbl import DNSBLSource
from ..passwords import PasswordVerifier
from ..ratelimit import Limiter
from ..settings import SettingsOps
from ..store import websessions
from ..webapi.methods import Methods
from . import layout
from .http import (
    BadForm,
    Fields,
    Transport,
    cookie,
    field,
    form,
    page_headers,
    query,
    same_origin,
    transport,
)
from .session import ACCOUNT, ADMIN, Session, Sessions

log = Logger()


@attrs.frozen
class Area:
    """The admin pages or the account pages: where, and which cookies."""

    kind: str
    path: str
    label: str

    @property
    def cookie(self) -> str:
        """The session cookie's name."""
        return f"moxtw_{self.kind}_session"

    @property
    def login_cookie(self) -> str:
        """The login form's cookie (holds the value its CSRF token is bound to)."""
        return f"moxtw_{self.kind}_login"

    def login_url(self, next_path: str = "") -> str:
        url = f"{self.path}login"
        return f"{url}?next={quote(next_path, safe='/')}" if next_path else url


ADMIN_AREA = Area(ADMIN, "/admin/", "moxtw admin")
ACCOUNT_AREA = Area(ACCOUNT, "/account/", "moxtw account")


@attrs.define(eq=False)
class WebUI:
    """The web interface's dependencies, shared by every page group.

    The admin pages change the queue through ``queue`` (the same :class:`QueueAdmin` as
    the admin API and the CLI); the account pages go through the webapi's ``methods``
    (the same code as the webapi calls).  ``accounts`` and ``admin_password_hash`` are
    read on every request: a configuration reload that replaces them takes effect, and
    ends the sessions of changed passwords.
    """

    sessions: Sessions
    accounts: Accounts
    verifier: PasswordVerifier
    #: The failed-login limiter, the same object as the webapi's and SMTP AUTH's.
    auth_limiter: Limiter
    clock: Any
    admin_password_hash: str
    queue: QueueAdmin
    methods: Methods
    localserve: bool = False
    #: Account settings (the same :class:`SettingsOps` as the admin API); None: the
    #: settings pages answer that settings cannot be changed here.
    settings: SettingsOps | None = None
    #: The DNSBL monitor's results as this process sees them (the admin DNSBL page and
    #: the dashboard); None: not known here.
    dnsbl: DNSBLSource | None = None
    #: Delay before answering a failed login (slows down password guessing).
    bad_auth_delay: float = 1.0
    #: Navigation of each area (by kind): (path below the area, label); filled when the
    #: page groups are mounted (:mod:`moxtw.webui.site`).
    nav: dict[str, list[tuple[str, str]]] = attrs.Factory(dict)

    def now(self) -> float:
        return float(self.clock.seconds())

    def account_login(self, address: str) -> Login | None:
        """The login of ``address`` if it may log in (known, has a password, enabled)."""
        login = self.accounts.login(address)
        if login is None or not login.account.password_hash or login.account.login_disabled:
            return None
        return login

    def current_password_hash(self, session: Session) -> str | None:
        """The password hash a session must have been opened with, None: no login."""
        if session.kind == ADMIN:
            return self.admin_password_hash or None
        login = self.account_login(session.address)
        if login is None or login.account.name != session.account:
            return None
        return login.account.password_hash

    async def authenticate(self, request: Any, area: Area) -> Session | None:
        """The request's session of ``area`` if its cookie is valid and it was not logged
        out: one read of the store (``queue.store``, which every process shares)."""
        session = self.sessions.verify(cookie(request, area.cookie), area.kind, self.current_password_hash)
        if session is None:
            return None
        ended: bool = await self.queue.store.db.run(
            "web session", websessions.session_ended, session.kind, session.account, session.id, session.issued
        )
        return None if ended else session


class PageError(Exception):
    """Answer with an error page: status, title, message (plain text, escaped)."""

    def __init__(self, status: int, title: str, message: str, *, login_link: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.login_link = login_link


class Redirect(Exception):
    """Answer ``303 See Other`` to a local path."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


@attrs.define(eq=False)
class Page:
    """One request to a page: what :func:`guarded` found out, and how to answer."""

    ui: WebUI
    area: Area
    request: Request
    via: Transport
    query: Fields
    session: Session | None = None
    form: Fields = attrs.Factory(dict)
    #: The nav entry to mark as current.
    current: str = ""

    @property
    def csrf(self) -> str:
        return "" if self.session is None else self.ui.sessions.csrf_token(self.session)

    def url(self, path: str = "") -> str:
        """A path below the area (``queue/`` → ``/admin/queue/``)."""
        return self.area.path + path

    def login(self) -> Login:
        """The account session's login (account pages only; the session was checked)."""
        assert self.session is not None and self.session.kind == ACCOUNT
        login = self.ui.account_login(self.session.address)
        if login is None:  # logged out between the check and now
            raise PageError(403, "Not logged in", "Your session has ended. Log in again.", login_link=True)
        return login

    def who(self) -> str:
        if self.session is None:
            return ""
        if self.session.kind == ADMIN:
            return "admin"
        return f"{self.session.address} (account {self.session.account})"

    async def render(
        self, title: str, *content: layout.Content, status: int = 200, notice: str = "", error: str = ""
    ) -> bytes:
        self.request.setResponseCode(status)
        tag = layout.page(
            title=title,
            area_label=self.area.label,
            base=self.area.path,
            content=content,
            nav=self.ui.nav.get(self.area.kind, []) if self.session is not None else [],
            current=self.current,
            who=self.who(),
            csrf=self.csrf,
            notice=notice,
            error=error,
        )
        return _length(self.request, await layout.flatten(tag))

    def redirect(self, location: str) -> bytes:
        self.request.setResponseCode(303)
        self.request.setHeader(b"location", location.encode("utf-8"))
        return _length(self.request, b"")

    async def error(self, e: PageError) -> bytes:
        content: list[layout.Content] = [tags.p(e.message)]
        if e.login_link:
            content.append(tags.p(tags.a("Log in", href=self.area.login_url())))
        return await self.render(e.title, *content, status=e.status)


def _length(request: Request, body: bytes) -> bytes:
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


Handler = Callable[..., Awaitable[bytes]]

#: Methods that may change state: same-origin check, form, CSRF token.
SAFE_METHODS = (b"GET", b"HEAD")


def guarded(*, login: bool = True) -> Callable[[Handler], Handler]:
    """Decorate a page handler ``(self, request, page, **route_args)`` (see the module
    docstring); ``login=False`` for the login pages, which check their own token."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Request, **kwargs: Any) -> bytes:
            ui: WebUI = self.ui
            area: Area = self.area
            page_headers(request)
            page = Page(ui, area, request, transport(request), query(request))
            try:
                await _check(page, login)
                return await handler(self, request, page, **kwargs)
            except Redirect as r:
                return page.redirect(r.location)
            except PageError as e:
                return await page.error(e)
            except Exception:
                log.failure("web interface {method} {uri}", method=request.method, uri=request.uri)
                return await page.error(PageError(500, "Server error", "Something went wrong; see the daemon's log."))

        return wrapper

    return decorate


async def _check(page: Page, login: bool) -> None:
    request, ui, area = page.request, page.ui, page.area
    if not page.via.allowed(ui.localserve):
        raise PageError(
            403,
            "HTTPS required",
            "The web interface only answers over HTTPS (or from this machine). Use the https:// address.",
        )
    changing = request.method not in SAFE_METHODS
    if changing:
        if not same_origin(request, page.via):
            raise PageError(403, "Cross-origin request refused", "This form was not sent from this site's pages.")
        try:
            page.form = form(request)
        except BadForm as e:
            raise PageError(400, "Bad request", str(e)) from None
    if not login:
        return
    page.session = await ui.authenticate(request, area)
    if page.session is None:
        if changing:
            raise PageError(403, "Not logged in", "Your session has ended. Log in again.", login_link=True)
        raise Redirect(area.login_url(request.uri.decode("latin-1")))
    if changing:
        token = field(page.form, "csrf_token") or (request.getHeader(b"x-csrf-token") or b"").decode("latin-1")
        if not ui.sessions.check_csrf(page.session, token):
            raise PageError(
                403,
                "Invalid form token",
                "The form's security token is missing or wrong (an old page, or a request from elsewhere). "
                "Nothing was changed; reload the page and try again.",
            )


# --- Klein error pages -----------------------------------------------------------------------


def install_error_pages(app: Klein) -> None:
    """Routing misses, wrong methods and slash redirects of a page group's Klein app as
    pages (call it in the class body after ``app = Klein()``)."""

    async def _page(self: Any, request: IRequest, status: int, title: str, message: str) -> bytes:
        assert isinstance(request, Request)
        page_headers(request)
        page = Page(self.ui, self.area, request, transport(request), {})
        return await page.error(PageError(status, title, message))

    @app.handle_errors(RequestRedirect)
    def slash(self: Any, request: IRequest, failure: Failure) -> bytes:
        """``/admin/queue`` → ``/admin/queue/`` (the path only, never another host)."""
        assert isinstance(failure.value, RequestRedirect)
        path = failure.value.new_url.split("://", 1)[-1]
        path = "/" + path.split("/", 1)[1] if "/" in path else "/"
        request.setResponseCode(303)
        request.setHeader(b"location", path.encode("utf-8"))
        request.setHeader(b"content-length", b"0")
        return b""

    @app.handle_errors(NotFound)
    async def not_found(self: Any, request: IRequest, failure: Failure) -> bytes:
        return await _page(self, request, 404, "Not found", "There is no page at this address.")

    @app.handle_errors(MethodNotAllowed)
    async def not_allowed(self: Any, request: IRequest, failure: Failure) -> bytes:
        assert isinstance(failure.value, MethodNotAllowed)
        allowed = sorted(m for m in failure.value.valid_methods or ["GET"] if m != "HEAD")
        request.setHeader(b"allow", ", ".join(allowed).encode())
        return await _page(self, request, 405, "Method not allowed", "This page does not accept this request.")

    @app.handle_errors(Exception)
    async def unhandled(self: Any, request: IRequest, failure: Failure) -> bytes:
        log.failure("web interface request", failure=failure)
        return await _page(self, request, 500, "Server error", "Something went wrong; see the daemon's log.")
