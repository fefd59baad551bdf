"""Logins, sessions, transport rules and CSRF of the web interface, over StubTreq."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from moxtw.accounts import Accounts
from moxtw.app import build_parts
from moxtw.localserve import ADMIN_PASSWORD
from moxtw.passwords import hash_password
from moxtw.webui.session import b64, unb64
from tests.webui.fixture import MOX, OTHER, Browser, WebUIFixture

ADMIN_COOKIE = "moxtw_admin_session"
ACCOUNT_COOKIE = "moxtw_account_session"


def no_admin_password(text: str) -> str:
    line = text[text.index("admin_password_hash =") :].split("\n", 1)[0]
    return text.replace(line, 'admin_password_hash = ""')


class AdminLoginTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()

    async def test_redirect_login_and_logout(self) -> None:
        reply = await self.b.get("/admin/queue/?to=x")
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/login?next=/admin/queue/%3Fto%3Dx"))
        form = await self.b.get("/admin/login?next=/admin/queue/%3Fto%3Dx")
        self.assertEqual(form.status, 200)
        self.assertIn('<label for="f-password">Admin password</label>', form.text)
        self.assertIn('name="next" value="/admin/queue/?to=x"', form.text)
        login = form.set_cookies()["moxtw_admin_login"]
        self.assertEqual((login["path"], login["httponly"], login["samesite"]), ("/admin/", True, "Strict"))
        reply = await self.b.post("/admin/login", {"csrf_token": form.csrf(), "password": ADMIN_PASSWORD,
                                                   "next": "/admin/queue/?to=x"})  # fmt: skip
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/queue/?to=x"))
        cookie = reply.set_cookies()[ADMIN_COOKIE]
        self.assertEqual(
            {k: v for k, v in cookie.items() if k != "value"},
            {"path": "/admin/", "max-age": str(12 * 3600), "httponly": True, "samesite": "Strict"},
        )  # no Secure over plain HTTP from this machine
        self.assertNotIn("moxtw_admin_login", self.b.cookies)  # used up
        page = await self.b.get("/admin/queue/")
        self.assertEqual(page.status, 200)
        self.assertIn("<h1>Queue</h1>", page.text)
        # The session's CSRF token is on the page (logout form, meta for scripts).
        token = page.csrf()
        self.assertIn(f'<meta name="csrf-token" content="{token}" />', page.text)
        reply = await self.b.post("/admin/logout", {"csrf_token": token})
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/login"))
        self.assertEqual(reply.set_cookies()[ADMIN_COOKIE]["max-age"], "0")
        self.assertNotIn(ADMIN_COOKIE, self.b.cookies)
        self.assertEqual((await self.b.get("/admin/queue/")).status, 303)

    async def test_secure_cookie_over_https(self) -> None:
        b = self.f.browser(scheme="https")
        reply = await b.login_admin()
        self.assertEqual(reply.status, 303)
        self.assertIs(reply.set_cookies()[ADMIN_COOKIE]["secure"], True)

    async def test_wrong_password(self) -> None:
        reply = await self.b.login_admin("wrong")
        self.assertEqual(reply.status, 403)
        self.assertIn("Wrong password.", reply.text)
        self.assertIn('role="alert"', reply.text)
        self.assertNotIn(ADMIN_COOKIE, reply.set_cookies())
        # The account's password is not the admin password.
        reply = await self.b.login_admin(MOX[1])
        self.assertEqual(reply.status, 403)
        self.assertEqual((await self.b.get("/admin/queue/")).status, 303)

    async def test_login_form_token(self) -> None:
        form = await self.b.get("/admin/login")
        # Without the token, with another token, without the form's cookie: refused
        # before the password is looked at.
        for fields, cookies in (
            ({"password": ADMIN_PASSWORD}, True),
            ({"password": ADMIN_PASSWORD, "csrf_token": form.csrf()[:-1] + "x"}, True),
            ({"password": ADMIN_PASSWORD, "csrf_token": form.csrf()}, False),
        ):
            b = Browser(self.f)
            if cookies:
                b.cookies = dict(self.b.cookies)
            reply = await b.post("/admin/login", fields)
            self.assertEqual(reply.status, 403, fields)
            self.assertIn("The login form expired", reply.text)
            self.assertNotIn(ADMIN_COOKIE, reply.set_cookies())
        self.assertEqual(self.f.ui.auth_limiter.tracked_entries(), 0)
        # Cross-origin, even with the right token.
        reply = await self.b.post("/admin/login", {"csrf_token": form.csrf(), "password": ADMIN_PASSWORD},
                                  headers={"Origin": "http://evil.example"})  # fmt: skip
        self.assertEqual(reply.status, 403)
        self.assertIn("Cross-origin request refused", reply.text)
        self.assertNotIn(ADMIN_COOKIE, self.b.cookies)

    async def test_rate_limited_with_the_webapi(self) -> None:
        """Failed logins share the webapi's limiter: 10 a minute per IP, then 429."""
        self.assertIs(self.f.ui.auth_limiter, self.f.parts.webapi.auth_limiter)
        for _ in range(5):
            reply = await self.b.post("/webapi/v0/SuppressionList", {"request": "{}"}, auth=("mox@localhost", "x"),
                                      origin=False)  # fmt: skip
            self.assertEqual(reply.status, 401)
        for _ in range(5):
            self.assertEqual((await self.b.login_admin("wrong")).status, 403)
        reply = await self.b.login_admin()
        self.assertEqual(reply.status, 429)
        self.assertIn("Too many failed logins", reply.text)
        self.assertNotIn(ADMIN_COOKIE, self.b.cookies)
        # Another address is not limited; the window passes.
        self.assertEqual((await self.f.browser(ip="127.0.0.2").login_admin()).status, 303)
        self.f.clock.advance(61)
        self.assertEqual((await self.b.login_admin()).status, 303)

    async def test_tampered_and_expired_cookies(self) -> None:
        await self.b.login_admin()
        value = self.b.cookies[ADMIN_COOKIE]
        payload, mac = value.split(".")
        body = json.loads(unb64(payload))
        body["e"] += 3600
        for bad in (f"{b64(json.dumps(body).encode())}.{mac}", value[:-3], "x.y", ""):
            self.b.cookies[ADMIN_COOKIE] = bad
            self.assertEqual((await self.b.get("/admin/queue/")).status, 303, bad)
        self.b.cookies[ADMIN_COOKIE] = value
        self.assertEqual((await self.b.get("/admin/queue/")).status, 200)
        self.f.clock.advance(12 * 3600)
        reply = await self.b.get("/admin/queue/")
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/login?next=/admin/queue/"))

    async def test_password_change_ends_sessions(self) -> None:
        await self.b.login_admin()
        self.assertEqual((await self.b.get("/admin/queue/")).status, 200)
        self.f.ui.admin_password_hash = hash_password("new admin password")
        self.assertEqual((await self.b.get("/admin/queue/")).status, 303)
        self.assertEqual((await self.b.login_admin("new admin password")).status, 303)
        self.assertEqual((await self.b.get("/admin/queue/")).status, 200)

    async def test_disabled_without_admin_password(self) -> None:
        f = await WebUIFixture(self, edit=no_admin_password).start()
        b = f.browser()
        reply = await b.get("/admin/login")
        self.assertEqual(reply.status, 403)
        self.assertIn("No admin password is configured", reply.text)
        self.assertIn("moxtw setpassword --admin", reply.text)
        reply = await b.post("/admin/login", {"password": ""})
        self.assertEqual(reply.status, 403)
        self.assertIn("No admin password is configured", reply.text)
        # A session made with an empty hash is worth nothing either.
        value, _ = f.ui.sessions.issue("admin", "", "", "")
        b.cookies[ADMIN_COOKIE] = value
        self.assertEqual((await b.get("/admin/queue/")).status, 303)


class AccountLoginTests(TestCase):
    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()

    async def test_login(self) -> None:
        form = await self.b.get("/account/login")
        self.assertIn('<label for="f-address">Login address</label>', form.text)
        reply = await self.b.login_account()
        self.assertEqual((reply.status, reply.header("location")), (303, "/account/"))
        self.assertEqual(reply.set_cookies()[ACCOUNT_COOKIE]["path"], "/account/")
        reply = await self.b.get("/account/")
        self.assertEqual((reply.status, reply.header("location")), (303, "/account/messages/"))
        page = await self.b.get("/account/messages/")
        self.assertIn("mox@localhost (account mox)", page.text)

    async def test_wrong_credentials(self) -> None:
        for login in (("mox@localhost", "wrong"), ("nobody@example.org", "moxmoxmox"), ("not an address", "x"),
                      ("other@example.org", MOX[1])):  # fmt: skip
            reply = await self.f.browser().login_account(login)
            self.assertEqual(reply.status, 403, login)
            self.assertIn("Wrong login address or password.", reply.text)
            self.assertNotIn(ACCOUNT_COOKIE, reply.set_cookies())

    async def test_login_disabled(self) -> None:
        accounts = self.f.ui.accounts
        mox = attrs.evolve(accounts.accounts["mox"], login_disabled="suspended")
        self.f.ui.accounts = Accounts(accounts.domains, {**accounts.accounts, "mox": mox})
        reply = await self.b.login_account()
        self.assertEqual(reply.status, 403)
        self.assertIn("Login is disabled for this account.", reply.text)
        self.assertNotIn(ACCOUNT_COOKIE, self.b.cookies)

    async def test_password_change_and_disabling_end_sessions(self) -> None:
        await self.b.login_account()
        await self.f.browser().login_account(OTHER)
        self.assertEqual((await self.b.get("/account/suppressions/")).status, 200)
        accounts = self.f.ui.accounts
        for change in ({"password_hash": hash_password("new password")}, {"login_disabled": "no"}):
            mox = attrs.evolve(accounts.accounts["mox"], **change)
            self.f.ui.accounts = Accounts(accounts.domains, {**accounts.accounts, "mox": mox})
            self.assertEqual((await self.b.get("/account/suppressions/")).status, 303, change)
        self.f.ui.accounts = accounts
        self.assertEqual((await self.b.get("/account/suppressions/")).status, 200)

    async def test_admin_and_account_sessions_are_separate(self) -> None:
        await self.b.login_account()
        # The account cookie under the admin cookie's name (and the other way round).
        self.b.cookies[ADMIN_COOKIE] = self.b.cookies[ACCOUNT_COOKIE]
        self.assertEqual((await self.b.get("/admin/queue/")).status, 303)
        admin = self.f.browser()
        await admin.login_admin()
        admin.cookies[ACCOUNT_COOKIE] = admin.cookies[ADMIN_COOKIE]
        self.assertEqual((await admin.get("/account/suppressions/")).status, 303)


class TransportTests(TestCase):
    """Outside localserve: TLS (direct or via a local proxy) or a browser on this machine."""

    async def setUp(self) -> None:
        self.f = await WebUIFixture(self, localserve=False).start()

    async def test_plain_http_from_elsewhere_refused(self) -> None:
        b = self.f.browser(ip="192.0.2.7")
        for reply in (await b.get("/admin/login"), await b.post("/admin/login", {"password": ADMIN_PASSWORD}), await b.get("/account/login")):
            self.assertEqual(reply.status, 403)
            self.assertIn("HTTPS required", reply.text)
            self.assertNotIn(ADMIN_COOKIE, reply.set_cookies())
        # Forwarding headers from another machine change nothing.
        reply = await b.get("/admin/login", headers={"X-Forwarded-Proto": "https"})
        self.assertEqual(reply.status, 403)

    async def test_allowed(self) -> None:
        # TLS from elsewhere: Secure cookie.
        reply = await self.f.browser(ip="192.0.2.7", scheme="https").login_admin()
        self.assertEqual(reply.status, 303)
        self.assertIs(reply.set_cookies()[ADMIN_COOKIE]["secure"], True)
        # A browser on this machine.
        reply = await self.f.browser(ip="::1").login_admin()
        self.assertEqual(reply.status, 303)
        self.assertNotIn("secure", reply.set_cookies()[ADMIN_COOKIE])

    async def test_local_proxy(self) -> None:
        """A TLS proxy on this machine: plain HTTP to us, the browser's view in headers."""
        tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7", "X-Forwarded-Host": "mail.example.org"}
        b = self.f.browser(host="127.0.0.1:1080", origin="https://mail.example.org")
        form = await b.get("/admin/login", headers=tls)
        self.assertEqual(form.status, 200)
        reply = await b.post("/admin/login", {"csrf_token": form.csrf(), "password": ADMIN_PASSWORD}, headers=tls)
        self.assertEqual(reply.status, 303)
        self.assertIs(reply.set_cookies()[ADMIN_COOKIE]["secure"], True)
        self.assertEqual((await b.get("/admin/queue/", headers=tls)).status, 200)
        # The proxy's own host is not the browser's origin.
        token = (await b.get("/admin/queue/", headers=tls)).csrf()
        no_host = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7"}
        reply = await b.post("/admin/logout", {"csrf_token": token}, headers=no_host)
        self.assertEqual(reply.status, 403)
        # A proxy that forwards plain HTTP from elsewhere.
        plain = {"X-Forwarded-Proto": "http", "X-Forwarded-For": "192.0.2.7"}
        reply = await self.f.browser(host="127.0.0.1:1080").get("/admin/login", headers=plain)
        self.assertEqual(reply.status, 403)
        self.assertIn("HTTPS required", reply.text)

    async def test_failed_logins_counted_per_forwarded_client(self) -> None:
        """Through a local proxy the limiter counts the client the proxy saw."""
        b = self.f.browser(origin="https://localhost")
        tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9, 192.0.2.7"}
        for _ in range(10):
            form = await b.get("/admin/login", headers=tls)
            reply = await b.post("/admin/login", {"csrf_token": form.csrf(), "password": "x"}, headers=tls)
            self.assertEqual(reply.status, 403)
        form = await b.get("/admin/login", headers=tls)
        reply = await b.post("/admin/login", {"csrf_token": form.csrf(), "password": ADMIN_PASSWORD}, headers=tls)
        self.assertEqual(reply.status, 429)
        # The first entry is whatever the client claims; the proxy's own entry counts.
        other = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "192.0.2.7, 198.51.100.1"}
        form = await b.get("/admin/login", headers=other)
        reply = await b.post("/admin/login", {"csrf_token": form.csrf(), "password": ADMIN_PASSWORD}, headers=other)
        self.assertEqual(reply.status, 303)


class CSRFTests(TestCase):
    """Every state-changing request needs the session's token and our origin."""

    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()
        self.b = self.f.browser()
        await self.b.login_account()
        self.token = (await self.b.get("/account/suppressions/")).csrf()

    async def add(self, **kwargs: object) -> int:
        fields = {"action": "add", "address": "victim@example.com", **kwargs.pop("fields", {})}  # type: ignore[dict-item]
        reply = await self.b.post("/account/suppressions/", fields, **kwargs)
        return reply.status

    async def test_missing_or_wrong_token(self) -> None:
        other = self.f.browser()
        await other.login_account(OTHER)
        other_token = (await other.get("/account/suppressions/")).csrf()
        again = self.f.browser()
        await again.login_account()
        own_other_session = (await again.get("/account/suppressions/")).csrf()
        for fields in ({}, {"csrf_token": ""}, {"csrf_token": "x" + self.token[1:]}, {"csrf_token": other_token},
                       {"csrf_token": own_other_session}):  # fmt: skip
            self.assertEqual(await self.add(fields=fields), 403, fields)
        reply = await self.b.post("/account/suppressions/", {"action": "add", "address": "victim@example.com"})
        self.assertIn("Invalid form token", reply.text)
        self.assertIn("Nothing was changed", reply.text)
        self.assertEqual(await self.f.suppressions("mox"), [])
        # The right token works, as a field or as a header.
        self.assertEqual(await self.add(fields={"csrf_token": self.token}), 303)
        self.assertEqual(await self.f.suppressions("mox"), ["victim@example.com"])
        reply = await self.b.post("/account/suppressions/", {"action": "remove", "address": "victim@example.com"},
                                  headers={"X-CSRF-Token": self.token})  # fmt: skip
        self.assertEqual(reply.status, 303)
        self.assertEqual(await self.f.suppressions("mox"), [])

    async def test_cross_origin_refused(self) -> None:
        good = {"csrf_token": self.token}
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "https://localhost"},
                        {"Sec-Fetch-Site": "cross-site"}):  # fmt: skip
            self.assertEqual(await self.add(fields=good, headers=headers, origin=False), 403, headers)
        self.assertEqual(await self.f.suppressions("mox"), [])
        # Without Origin (a non-browser client) the token alone is enough.
        self.assertEqual(await self.add(fields=good, origin=False), 303)

    async def test_logged_out_post(self) -> None:
        b = self.f.browser()
        reply = await b.post("/account/suppressions/", {"action": "add", "address": "x@example.com",
                                                        "csrf_token": self.token})  # fmt: skip
        self.assertEqual(reply.status, 403)
        self.assertIn("Your session has ended", reply.text)
        self.assertEqual(await self.f.suppressions("mox"), [])

    async def test_other_methods_refused(self) -> None:
        for method in ("PUT", "DELETE", "PATCH"):
            reply = await self.b.request(method, "/account/suppressions/", data=b"action=add&address=x@example.com")
            self.assertEqual(reply.status, 405, method)
        self.assertEqual(await self.f.suppressions("mox"), [])


class LogoutTests(TestCase):
    """Logging out ends the session in the store: a copy of the cookie (another browser,
    another process) is refused afterwards, other sessions of the login are not."""

    async def setUp(self) -> None:
        self.f = await WebUIFixture(self).start()

    def copy(self, browser: Browser, fixture: Any = None) -> Browser:
        """Another browser holding ``browser``'s cookies (a copied cookie)."""
        other = Browser(fixture or self.f)
        other.cookies = dict(browser.cookies)
        return other

    async def token(self, browser: Browser, path: str) -> str:
        page = await browser.get(path)
        self.assertEqual(page.status, 200, path)
        return page.csrf()

    async def logouts(self) -> list[tuple[Any, ...]]:
        def read(cursor: Any) -> list[tuple[Any, ...]]:
            cursor.execute("SELECT kind, account, session = '', at, expires FROM webui_logout ORDER BY at, kind")
            return [tuple(r) for r in cursor.fetchall()]

        result: list[tuple[Any, ...]] = await self.f.parts.store.db.run("logouts", read)
        return result

    async def test_admin_copied_cookie_refused_after_logout(self) -> None:
        b, second = self.f.browser(), self.f.browser()
        await b.login_admin()
        await second.login_admin()  # the same login in another browser
        token = await self.token(b, "/admin/holdrules/")
        stolen = self.copy(b)
        self.assertEqual((await stolen.get("/admin/holdrules/")).status, 200)
        reply = await b.post("/admin/logout", {"csrf_token": token})
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/login"))
        self.assertNotIn(ADMIN_COOKIE, b.cookies)
        self.assertEqual(await self.logouts(), [("admin", "", 0, 1_800_000_000.0, 1_800_000_000 + 12 * 3600)])
        # The copy: GET goes to the login page, POST (with the session's token) is refused.
        reply = await stolen.get("/admin/holdrules/")
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/login?next=/admin/holdrules/"))
        rules = await self.f.ui.queue.hold_rules()
        add = {"account": "mox", "sender_domain": "", "recipient_domain": "", "csrf_token": token}
        reply = await stolen.post("/admin/holdrules/", add)
        self.assertEqual(reply.status, 403)
        self.assertIn("Your session has ended", reply.text)
        self.assertEqual(await self.f.ui.queue.hold_rules(), rules)
        self.assertEqual((await stolen.post("/admin/logout", {"csrf_token": token})).status, 403)
        # The login page asks for the password again.
        self.assertEqual((await stolen.get("/admin/login")).status, 200)
        # The other browser's session goes on, and may change things.
        self.assertEqual((await second.get("/admin/holdrules/")).status, 200)
        add["csrf_token"] = await self.token(second, "/admin/holdrules/")
        self.assertEqual((await second.post("/admin/holdrules/", add)).status, 303)
        self.assertEqual(len(await self.f.ui.queue.hold_rules()), len(rules) + 1)

    async def test_account_copied_cookie_refused_after_logout(self) -> None:
        b, second = self.f.browser(), self.f.browser()
        await b.login_account()
        await second.login_account()
        token = await self.token(b, "/account/suppressions/")
        stolen = self.copy(b)
        self.assertEqual((await stolen.get("/account/suppressions/")).status, 200)
        self.assertEqual((await b.post("/account/logout", {"csrf_token": token})).status, 303)
        self.assertEqual(await self.logouts(), [("account", "mox", 0, 1_800_000_000.0, 1_800_000_000 + 12 * 3600)])
        reply = await stolen.get("/account/suppressions/")
        self.assertEqual((reply.status, reply.header("location")), (303, "/account/login?next=/account/suppressions/"))
        add = {"action": "add", "address": "victim@example.com", "csrf_token": token}
        reply = await stolen.post("/account/suppressions/", add)
        self.assertEqual(reply.status, 403)
        self.assertIn("Your session has ended", reply.text)
        self.assertEqual(await self.f.suppressions("mox"), [])
        self.assertEqual((await second.get("/account/suppressions/")).status, 200)
        add["csrf_token"] = await self.token(second, "/account/suppressions/")
        self.assertEqual((await second.post("/account/suppressions/", add)).status, 303)
        self.assertEqual(await self.f.suppressions("mox"), ["victim@example.com"])

    async def test_logout_holds_in_every_process(self) -> None:
        """A second web interface on the same store and key file (an HTTP worker) refuses
        a session the first one logged out, and the other way round."""
        parts, _ = build_parts(self.f.config, reactor, store=self.f.parts.store)
        parts.webui.sessions.clock = self.f.clock
        self.assertIsNot(parts.webui, self.f.ui)
        worker = SimpleNamespace(parts=parts)
        # Logged in here, logged out in the worker.
        b = self.f.browser()
        await b.login_account()
        in_worker = self.copy(b, worker)
        token = await self.token(in_worker, "/account/suppressions/")
        self.assertEqual((await in_worker.post("/account/logout", {"csrf_token": token})).status, 303)
        self.assertEqual((await b.get("/account/suppressions/")).status, 303)
        self.assertEqual((await self.copy(b, worker).get("/account/suppressions/")).status, 303)
        # Logged in here, logged out here: the worker refuses the cookie.
        await b.login_admin()
        in_worker = self.copy(b, worker)
        self.assertEqual((await in_worker.get("/admin/queue/")).status, 200)
        token = await self.token(b, "/admin/queue/")
        self.assertEqual((await b.post("/admin/logout", {"csrf_token": token})).status, 303)
        reply = await in_worker.get("/admin/queue/")
        self.assertEqual((reply.status, reply.header("location")), (303, "/admin/login?next=/admin/queue/"))
        self.assertEqual((await in_worker.post("/admin/logout", {"csrf_token": token})).status, 403)

    async def test_expired_logouts_removed(self) -> None:
        b = self.f.browser()
        await b.login_admin()
        await b.post("/admin/logout", {"csrf_token": await self.token(b, "/admin/queue/")})
        self.f.clock.advance(6 * 3600)
        await b.login_account()
        await b.post("/account/logout", {"csrf_token": await self.token(b, "/account/messages/")})
        self.assertEqual([r[:2] for r in await self.logouts()], [("admin", ""), ("account", "mox")])
        # The admin session would have expired by now: its row goes with the next logout.
        self.f.clock.advance(6 * 3600)
        await b.login_account(OTHER)
        await b.post("/account/logout", {"csrf_token": await self.token(b, "/account/messages/")})
        self.assertEqual([r[:2] for r in await self.logouts()], [("account", "mox"), ("account", "other")])

    async def test_log_out_everywhere(self) -> None:
        """Ends every session of the login (any browser), not those of other logins; a
        new login works."""
        paths = {"admin": "/admin/queue/", "account": "/account/suppressions/"}

        async def log_in(b: Browser, login: tuple[str, str] | None) -> None:
            reply = await (b.login_admin() if login is None else b.login_account(login))
            self.assertEqual(reply.status, 303)

        # (area, its login, other logins that must stay logged in)
        for area, login, others in (("account", MOX, [None, OTHER]), ("admin", None, [MOX])):
            f = await WebUIFixture(self).start()
            first, second = f.browser(), f.browser()
            for b in (first, second):
                await log_in(b, login)
            unaffected = []
            for other in others:
                unaffected.append((f.browser(), paths["admin" if other is None else "account"]))
                await log_in(unaffected[-1][0], other)
            path = paths[area]
            page = await first.get(path)
            self.assertIn('name="everywhere" value="1">Log out everywhere</button>', page.text)
            stolen = self.copy(first)
            f.clock.advance(1)
            reply = await first.post(f"/{area}/logout", {"csrf_token": page.csrf(), "everywhere": "1"})
            self.assertEqual((reply.status, reply.header("location")), (303, f"/{area}/login"), area)
            self.assertNotIn(f"moxtw_{area}_session", first.cookies)
            for b in (stolen, second):
                self.assertEqual((await b.get(path)).status, 303, area)
            for b, other_path in unaffected:
                self.assertEqual((await b.get(other_path)).status, 200, (area, other_path))
            # A login after it is a new session.
            f.clock.advance(1)
            await log_in(second, login)
            self.assertEqual((await second.get(path)).status, 200, area)
            self.assertEqual((await stolen.get(path)).status, 303, area)

    async def test_log_out_everywhere_covers_every_login_address(self) -> None:
        """An account's sessions end whatever address they logged in with."""

        def second_address(text: str) -> str:
            return text.replace('addresses = ["other@example.org"]', 'addresses = ["other@example.org", "o2@example.org"]')

        f = await WebUIFixture(self, edit=second_address).start()
        first, second = f.browser(), f.browser()
        await first.login_account(OTHER)
        self.assertEqual((await second.login_account(("o2@example.org", OTHER[1]))).status, 303)
        self.assertEqual((await second.get("/account/suppressions/")).status, 200)
        token = await self.token(first, "/account/suppressions/")
        f.clock.advance(1)
        await first.post("/account/logout", {"csrf_token": token, "everywhere": "1"})
        self.assertEqual((await second.get("/account/suppressions/")).status, 303)
