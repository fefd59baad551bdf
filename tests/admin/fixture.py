"""The daemon's HTTP site (webapi and admin API) on a loopback port, from a localserve config."""

from __future__ import annotations

import json
from typing import Any

from moxtw.localserve import ADMIN_PASSWORD
from tests.webapi.fixture import Reply, WebAPIFixture

ADMIN = ("admin", ADMIN_PASSWORD)


class AdminFixture(WebAPIFixture):
    async def start(self) -> AdminFixture:
        await super().start()
        admin = self.parts.admin
        # One failed-login limiter for everything, on the test clock, without the delay.
        admin.auth_limiter = self.parts.webapi.auth_limiter
        admin.bad_auth_delay = 0.0
        self.changed: list[None] = []
        admin.ops.on_changed = lambda: self.changed.append(None)
        self.root = self.base.rsplit("/webapi/", 1)[0] + "/"
        self.admin_base = self.root + "admin/api/"
        return self

    async def admin_post(self, method: str, body: Any, *, auth: Any = ADMIN,
                         content_type: str = "application/json") -> Reply:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        kwargs: dict[str, Any] = {"headers": {"content-type": content_type}, "data": data}
        if auth is not None:
            kwargs["auth"] = auth
        response = await self.http.post(self.admin_base + method, **kwargs)
        return Reply(response.code, response.headers, await response.content())

    async def admin(self, method: str, *params: Any) -> Any:
        """Call a method that must succeed; its result."""
        reply = await self.admin_post(method, {"params": list(params)})
        assert reply.status == 200, (reply.status, reply.body)
        body = reply.json
        assert "error" not in body, body
        return body["result"]

    async def admin_error(self, method: str, *params: Any) -> dict[str, str]:
        """Call a method that must fail with status 200 (sherpa); its error object."""
        reply = await self.admin_post(method, {"params": list(params)})
        assert reply.status == 200, (reply.status, reply.body)
        error: dict[str, str] = reply.json["error"]
        return error

    async def send(self, *recipients: str, **fields: Any) -> list[int]:
        request = {"To": [{"Address": r} for r in recipients], "Subject": "admin test", "Text": "hi", **fields}
        reply = await self.call("Send", request)
        assert reply.status == 200, reply.body
        return [s["QueueMsgID"] for s in reply.json["Submissions"]]


def no_filter() -> dict[str, Any]:
    return {}


def ids_filter(*ids: int) -> dict[str, Any]:
    return {"IDs": list(ids)}
