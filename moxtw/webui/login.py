"""Login, logout and the index of each area (``/admin/``, ``/account/``).

Admins log in with the admin password (``admin_password_hash``; without one the admin
pages are disabled), account users with a login address and its password, checked by
the same :class:`~moxtw.passwords.PasswordVerifier` and accounts index as the webapi.
Failed logins count in the webapi's limiter (per IP and network; over the limit: 429)
and are answered after ``bad_auth_delay`` (1 s) without holding up the reactor.

The login form has no session to bind a CSRF token to, so it sets a short-lived random
cookie and carries a MAC of it (a signed double-submit cookie); the same-origin check of
:func:`~moxtw.webui.core.guarded` applies too.

Logging out ends the session in every process, not just in this browser: its ID goes
into the store (:mod:`moxtw.store.websessions`) until the session would have expired, so
a copy of the cookie is refused too.  "Log out everywhere" (the same form, with
``everywhere``) ends every session of the login (the admin's, or the account's whatever
address it logged in with) issued until then.
"""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

import attrs
from klein import Klein
from twisted.internet.task import deferLater
from twisted.web.server import Request
from twisted.web.template import Tag, tags

from .. import metrics
from ..store import websessions
from .core import Area, Page, PageError, Redirect, WebUI, guarded, install_error_pages
from .http import Transport, cookie, field, safe_next, set_cookie
from .layout import hidden, text_input
from .session import ADMIN, LOGIN_FORM_LIFETIME, unb64


def client_ip(request: Any, via: Transport) -> str:
    """The address failed logins are counted for: the peer's, or through a local proxy
    the last ``X-Forwarded-For`` entry (the one the proxy itself added)."""
    if via.proxied:
        forwarded = (request.getHeader(b"x-forwarded-for") or b"").decode("latin-1")
        last = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            pass
    host = getattr(request.getClientAddress(), "host", None)
    try:
        return str(ipaddress.ip_address(host or ""))
    except ValueError:
        return "127.0.0.1"  # a UNIX socket peer: this machine


@attrs.define(eq=False)
class LoginPages:
    """``/``, ``login`` and ``logout`` of one area."""

    ui: WebUI
    area: Area

    app: ClassVar[Klein] = Klein()
    install_error_pages(app)

    @property
    def disabled(self) -> bool:
        return self.area.kind == ADMIN and not self.ui.admin_password_hash

    @app.route("/", methods=["GET", "HEAD"])
    @guarded()
    async def index(self, request: Request, page: Page) -> bytes:
        nav = self.ui.nav.get(self.area.kind)
        if nav:
            raise Redirect(page.url(nav[0][0]))
        return await page.render(self.area.label, tags.p("There are no pages here yet."))

    @app.route("/login", methods=["GET", "HEAD"])
    @guarded(login=False)
    async def login_form(self, request: Request, page: Page) -> bytes:
        if self.disabled:
            return await self._disabled(page)
        if await self.ui.authenticate(request, self.area) is not None:
            raise Redirect(self._next(page.query.get("next", [""])[0]))
        return await self._form(page)

    @app.route("/login", methods=["POST"])
    @guarded(login=False)
    async def login(self, request: Request, page: Page) -> bytes:
        if self.disabled:
            return await self._disabled(page)
        nonce = cookie(request, self.area.login_cookie)
        if not self.ui.sessions.check_login_token(self.area.kind, nonce, field(page.form, "csrf_token")):
            return await self._form(
                page, status=403, error="The login form expired or was not sent from this site. Please try again."
            )
        ip = client_ip(request, page.via)
        kind = f"web{self.area.kind}"
        if not await self.ui.auth_limiter.begin_attempt(ip):
            metrics.authentication_ratelimited.labels(kind).inc()
            raise PageError(
                429, "Too many login attempts", "Too many failed logins from your address. Try again later."
            )
        password = page.form.get("password", [""])[0]
        address = field(page.form, "address")
        ok, disabled = False, False
        try:
            if self.area.kind == ADMIN:
                password_hash, who, name = self.ui.admin_password_hash, "", ""
            else:
                login = self.ui.accounts.login(address)
                password_hash = login.account.password_hash if login is not None else ""
                disabled = login is not None and bool(login.account.login_disabled)
                who = "" if login is None else str(login.address)
                name = "" if login is None else login.account.name
            if password_hash and password:
                ok = await self.ui.verifier.verify(password, password_hash)
        finally:
            self.ui.auth_limiter.end_attempt(ip, ok and not disabled)
        if not ok:
            metrics.authentication(kind, "weblogin", "badcreds")
            await deferLater(self.ui.clock, self.ui.bad_auth_delay, lambda: None)
            wrong = "Wrong password." if self.area.kind == ADMIN else "Wrong login address or password."
            return await self._form(page, status=403, error=wrong, address=address)
        if disabled:
            metrics.authentication(kind, "weblogin", "logindisabled")
            return await self._form(page, status=403, error="Login is disabled for this account.", address=address)
        metrics.authentication(kind, "weblogin", "ok")
        value, _ = self.ui.sessions.issue(self.area.kind, name, who, password_hash)
        secure = page.via.secure
        set_cookie(request, self.area.cookie, value, self.area.path, int(self.ui.sessions.lifetime), secure)
        set_cookie(request, self.area.login_cookie, "", self.area.path, 0, secure)
        raise Redirect(self._next(field(page.form, "next")))

    @app.route("/logout", methods=["POST"])
    @guarded()
    async def logout(self, request: Request, page: Page) -> bytes:
        session = page.session
        assert session is not None  # (guarded)
        now = self.ui.sessions.now()
        if field(page.form, "everywhere"):
            # Every session of the login issued until now has expired a lifetime later.
            ended, until = websessions.EVERYWHERE, now + self.ui.sessions.lifetime
        else:
            ended, until = session.id, float(session.expires)
        await self.ui.queue.store.db.run(
            "web logout", websessions.end_session, session.kind, session.account, ended, now, until
        )
        set_cookie(request, self.area.cookie, "", self.area.path, 0, page.via.secure)
        raise Redirect(self.area.login_url())

    # --- helpers --------------------------------------------------------------------------

    def _next(self, text: str) -> str:
        return safe_next(text, self.area.path) or self.area.path

    async def _disabled(self, page: Page) -> bytes:
        raise PageError(
            403,
            "Admin pages disabled",
            "No admin password is configured (admin_password_hash). Set one with "
            "`moxtw setpassword --admin --config FILE` and restart moxtw.",
        )

    async def _form(self, page: Page, *, status: int = 200, error: str = "", address: str = "") -> bytes:
        nonce = cookie(page.request, self.area.login_cookie)
        if not _valid_nonce(nonce):
            nonce = self.ui.sessions.login_nonce()
        # (Re)set on every form: a form shown is usable for the next hour.
        set_cookie(
            page.request, self.area.login_cookie, nonce, self.area.path, int(LOGIN_FORM_LIFETIME), page.via.secure
        )
        next_path = field(page.form, "next") or page.query.get("next", [""])[0]
        form: Tag = tags.form(method="post", action=page.url("login"), class_="login")(
            hidden("csrf_token", self.ui.sessions.login_token(self.area.kind, nonce)),
            hidden("next", safe_next(next_path, self.area.path) or ""),
        )
        if self.area.kind == ADMIN:
            form(text_input("password", "Admin password", kind="password", autocomplete="current-password",
                            required="required", autofocus="autofocus"))  # fmt: skip
        else:
            form(
                text_input("address", "Login address", address, kind="email", autocomplete="username",
                           required="required", autofocus="autofocus"),
                text_input("password", "Password", kind="password", autocomplete="current-password",
                           required="required"),
            )  # fmt: skip
        form(tags.button("Log in", type="submit"))
        return await page.render("Log in", form, status=status, error=error)


def _valid_nonce(text: str) -> bool:
    try:
        return len(unb64(text)) == 16
    except ValueError:
        return False
