"""A webapi on a real loopback listener over a real SQLite store, and a client for it."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.task import Clock

from moxtw.app import Parts, build_parts
from moxtw.config import Config, load_config
from moxtw.localserve import ensure_config
from moxtw.ratelimit import failed_auth_limiter
from tests.helpers import http_client

LOGIN = ("mox@localhost", "moxmoxmox")


@attrs.define
class Reply:
    status: int
    headers: Any
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class WebAPIFixture:
    """Builds the real components from a localserve config in a temp dir and listens."""

    def __init__(self, testcase: Any, edit: Any = None) -> None:
        self.testcase = testcase
        directory = Path(testcase.mktemp()).absolute()
        path, _ = ensure_config(directory)
        if edit is not None:
            path.write_text(edit(path.read_text()))
        self.config: Config = load_config(path)
        self.clock = Clock()

    async def start(self) -> WebAPIFixture:
        parts, services = build_parts(self.config, reactor)
        self.parts: Parts = parts
        for svc in services:
            svc.startService()
            self.testcase.addCleanup(svc.stopService)
        # Failed-login accounting and the bad-login delay run on a test clock.
        parts.webapi.auth_limiter = failed_auth_limiter(self.clock)
        parts.webapi.bad_auth_delay = 0.0
        port = reactor.listenTCP(0, parts.site, interface="127.0.0.1")
        self.testcase.addCleanup(port.stopListening)
        self.base = f"http://127.0.0.1:{port.getHost().port}{self.config.webapi.path}"
        self.http = http_client(self.testcase)
        return self

    async def post(self, path: str, *, data: Any = None, files: Any = None, auth: Any = LOGIN, headers: Any = None) -> Reply:
        kwargs: dict[str, Any] = {"headers": headers or {}}
        if auth is not None:
            kwargs["auth"] = auth
        if files is not None:
            kwargs["files"] = files
        if data is not None:
            kwargs["data"] = data
        response = await self.http.post(self.base + path, **kwargs)
        body = await response.content()
        return Reply(response.code, response.headers, body)

    async def get(self, path: str) -> Reply:
        response = await self.http.get(self.base + path)
        return Reply(response.code, response.headers, await response.content())

    async def call(self, method: str, request: Any, *, auth: Any = LOGIN) -> Reply:
        text = request if isinstance(request, str) else json.dumps(request)
        return await self.post(f"v0/{method}", data={"request": text}, auth=auth)

    async def queue_rows(self) -> list[dict[str, Any]]:
        def read(cursor: Any) -> list[dict[str, Any]]:
            cursor.execute("SELECT * FROM queue_msg ORDER BY id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return await self.parts.store.db.run("rows", read)

    async def raw(self, row: dict[str, Any]) -> bytes:
        """A queued message as it is delivered: its prefix, then the message file."""
        data = await self.parts.store.blobs.get(row["blob"])
        return bytes(row["prefix"]) + data

    async def message(self, row: dict[str, Any]) -> email.message.EmailMessage:
        data = await self.parts.store.blobs.get(row["blob"])
        msg = email.message_from_bytes(row["prefix"] + data, policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
