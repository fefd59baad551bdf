"""The daemon's HTTP site (web interface, webapi, admin API) over StubTreq, with the real
store behind it, and a small browser that keeps cookies and reads forms."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.task import Clock, deferLater
from twisted.web.resource import Resource

from moxtw.app import Parts, build_parts
from moxtw.config import Config, load_config
from moxtw.localserve import ADMIN_PASSWORD, ensure_config
from moxtw.passwords import hash_password
from moxtw.ratelimit import failed_auth_limiter

MOX = ("mox@localhost", "moxmoxmox")
OTHER = ("other@example.org", "otherpassword")
OTHER_HASH = hash_password(OTHER[1])


def with_other_account(text: str) -> str:
    return text + (
        '\n[domains."example.org"]\n'
        '\n[accounts.other]\ndomain = "example.org"\naddresses = ["other@example.org"]\n'
        f'password_hash = "{OTHER_HASH}"\n'
    )


class FromAddress(Resource):
    """The site's root, as seen from another client address."""

    def __init__(self, inner: Resource, ip: str) -> None:
        super().__init__()
        self.inner = inner
        self.address = IPv6Address("TCP", ip, 40000) if ":" in ip else IPv4Address("TCP", ip, 40000)

    def getChildWithDefault(self, path: bytes, request: Any) -> Resource:
        request.client = self.address
        return self.inner.getChildWithDefault(path, request)

    def render(self, request: Any) -> Any:
        request.client = self.address
        return self.inner.render(request)


@attrs.define
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None

    def set_cookies(self) -> dict[str, dict[str, Any]]:
        """Set-Cookie headers by cookie name: value and attributes (lower-case names)."""
        out = {}
        for raw in self.headers.getRawHeaders("set-cookie") or []:
            name, _, rest = raw.partition("=")
            value, *attributes = [p.strip() for p in rest.split(";")]
            attrs_: dict[str, Any] = {"value": value}
            for a in attributes:
                k, _, v = a.partition("=")
                attrs_[k.lower()] = v if v else True
            out[name] = attrs_
        return out

    def csrf(self, index: int = 0) -> str:
        """The ``index``-th form's CSRF token on the page."""
        tokens = re.findall(r'name="csrf_token" value="([^"]*)"', self.text)
        return tokens[index]


class Browser:
    """Requests through StubTreq with explicit cookies (a fresh StubTreq each time, so
    only the cookies this browser holds are sent)."""

    def __init__(self, fixture: WebUIFixture, *, ip: str = "127.0.0.1", scheme: str = "http",
                 host: str = "localhost", origin: str | None = None) -> None:  # fmt: skip
        self.fixture = fixture
        self.ip = ip
        #: Where requests go (the URL's scheme decides whether the connection is TLS).
        self.base = f"{scheme}://{host}"
        #: The Origin header of POSTs (a browser's view of the site, e.g. behind a proxy).
        self.origin = origin or self.base
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, *, data: Any = None, headers: dict[str, str] | None = None,
                      origin: bool = True, auth: Any = None) -> Reply:  # fmt: skip
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if origin and method == "POST":
            hdrs.setdefault("Origin", self.origin)
        kwargs: dict[str, Any] = {"headers": hdrs, "allow_redirects": False}
        if data is not None:
            kwargs["data"] = data
        if auth is not None:
            kwargs["auth"] = auth
        stub = StubTreq(FromAddress(self.fixture.parts.site.resource, self.ip))
        response = await settle(stub, stub.request(method, self.base + path, **kwargs))
        body = await settle(stub, response.content())
        reply = Reply(response.code, response.headers, body)
        for name, c in reply.set_cookies().items():
            if c.get("max-age") == "0":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = c["value"]
        return reply

    async def get(self, path: str, **kwargs: Any) -> Reply:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, fields: Any, **kwargs: Any) -> Reply:
        data = urlencode(fields, doseq=True).encode() if not isinstance(fields, bytes) else fields
        headers = kwargs.pop("headers", {})
        headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        return await self.request("POST", path, data=data, headers=headers, **kwargs)

    async def login_admin(self, password: str = ADMIN_PASSWORD) -> Reply:
        form = await self.get("/admin/login")
        return await self.post("/admin/login", {"csrf_token": form.csrf(), "password": password})

    async def login_account(self, login: tuple[str, str] = MOX) -> Reply:
        form = await self.get("/account/login")
        return await self.post(
            "/account/login", {"csrf_token": form.csrf(), "address": login[0], "password": login[1]}
        )


async def settle(stub: StubTreq, d: Any) -> Any:
    """Wait for ``d``, pumping the in-memory connection while the (real) store works."""
    done: list[bool] = []

    def mark(result: Any) -> Any:
        done.append(True)
        return result

    d.addBoth(mark)
    while not done:
        stub.flush()
        if not done:
            await deferLater(reactor, 0.001, lambda: None)
    return await d


class WebUIFixture:
    """The real components from a localserve configuration (plus account ``other``) in
    a temp dir; failed logins and sessions on a test clock, without the 1 s delay."""

    def __init__(self, testcase: Any, *, localserve: bool = True, edit: Any = None) -> None:
        self.testcase = testcase
        directory = Path(testcase.mktemp()).absolute()
        path, _ = ensure_config(directory)
        text = with_other_account(path.read_text())
        if not localserve:
            text = text.replace("localserve = true", "localserve = false", 1)
        if edit is not None:
            text = edit(text)
        path.write_text(text)
        self.config: Config = load_config(path)
        self.clock = Clock()
        self.clock.advance(1_800_000_000)

    async def start(self) -> WebUIFixture:
        parts, services = build_parts(self.config, reactor)
        self.parts: Parts = parts
        for svc in services:
            svc.startService()
            self.testcase.addCleanup(svc.stopService)
        limiter = failed_auth_limiter(self.clock)
        parts.webapi.auth_limiter = parts.admin.auth_limiter = parts.webui.auth_limiter = limiter
        parts.webapi.bad_auth_delay = parts.admin.bad_auth_delay = parts.webui.bad_auth_delay = 0.0
        parts.webui.sessions.clock = self.clock
        self.ui = parts.webui
        return self

    def browser(self, **kwargs: Any) -> Browser:
        return Browser(self, **kwargs)

    async def send(self, *recipients: str, subject: str = "webui test", login: tuple[str, str] = MOX) -> list[int]:
        request = {"To": [{"Address": r} for r in recipients], "Subject": subject, "Text": "hi"}
        reply = await self.browser().post("/webapi/v0/Send", {"request": json.dumps(request)}, auth=login,
                                          origin=False)  # fmt: skip
        assert reply.status == 200, reply.body
        return [s["QueueMsgID"] for s in reply.json["Submissions"]]

    async def held(self) -> dict[int, bool]:
        """Queue message ID → hold flag."""

        def read(cursor: Any) -> dict[int, bool]:
            cursor.execute("SELECT id, hold FROM queue_msg ORDER BY id")
            return {int(r[0]): bool(r[1]) for r in cursor.fetchall()}

        result: dict[int, bool] = await self.parts.store.db.run("held", read)
        return result

    async def suppressions(self, account: str) -> list[str]:
        from moxtw.store.suppressions import list_suppressions

        rows = await self.parts.store.db.run("list", list_suppressions, account)
        return sorted(r.base_address for r in rows)

    async def attempt(self, msg_id: int, kind: str, **result: Any) -> None:
        """One delivery attempt of queued message ``msg_id`` (due now or not) with
        ``result`` (outbox.Finish's fields), through the queue's store functions: claim
        (the other messages excluded), then finish."""
        from moxtw.store import outbox

        now = time.time() + 1

        def run(cursor: Any) -> None:
            cursor.execute("UPDATE queue_msg SET next_attempt = ? WHERE id = ?", (now - 1, msg_id))
            cursor.execute("SELECT id FROM queue_msg WHERE id != ?", (msg_id,))
            others = [int(r[0]) for r in cursor.fetchall()]
            token = f"t{msg_id}-{now}"
            claimed = outbox.claim_due(cursor, now, slots=10, domain_slots=lambda d: 10, exclude=others,
                                       backoff=lambda n: 60.0, lease_minimum=60.0, new_token=lambda: token)  # fmt: skip
            assert [c.row.id for b in claimed.batches for c in b] == [msg_id], claimed
            finish = outbox.Finish(msg_id=msg_id, token=token, kind=kind, duration=1.5, now=now + 1.5,
                                   next_attempt=now + 600, keep=72 * 3600.0, **result)  # fmt: skip
            outbox.finish_attempt(cursor, None, finish)

        await self.parts.store.db.run("attempt", run)

    async def rows(self, table: str, columns: str) -> dict[int, tuple[Any, ...]]:
        """``columns`` of every row of ``table`` ("queue_msg" or "queue_retired") by ID."""

        def read(cursor: Any) -> dict[int, tuple[Any, ...]]:
            cursor.execute(f"SELECT id, {columns} FROM {table} ORDER BY id")
            return {int(r[0]): tuple(r[1:]) for r in cursor.fetchall()}

        result: dict[int, tuple[Any, ...]] = await self.parts.store.db.run("rows", read)
        return result


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
