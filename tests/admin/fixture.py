"""The daemon's HTTP site (webapi and admin API) on a loopback port, from a localserve config."""

from __future__ import annotations

import json
import time
from typing import Any

from twisted.internet import reactor

from moxtw.localserve import ADMIN_PASSWORD
from moxtw.store import outbox
from moxtw.store import webhooks as sw
from moxtw.webhooks.payloads import outgoing_payload
from moxtw.webhooks.service import WebhookService
from tests.webapi.fixture import Reply, WebAPIFixture
from tests.webhooks.harness import Client, Receiver

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


# --- webhooks -----------------------------------------------------------------------------

#: The outgoing and incoming webhook URLs of account mox in :class:`HookFixture` (StubTreq).
OUT_URL = "http://hooks.example/outgoing"
IN_URL = "http://hooks.example/incoming"


def with_webhooks(text: str) -> str:
    """A localserve configuration with webhooks for account mox."""
    return text + (
        f'\n[accounts.mox.outgoing_webhook]\nurl = "{OUT_URL}"\nauthorization = "Bearer s3cret"\n'
        f'\n[accounts.mox.incoming_webhook]\nurl = "{IN_URL}"\n'
    )


class HookFixture(AdminFixture):
    """The admin API with account mox's webhooks configured, and the daemon's webhook
    service over StubTreq (``receiver`` answers), not started: :meth:`admit` and
    :meth:`deliver` run its steps when a test asks."""

    def __init__(self, testcase: Any) -> None:
        super().__init__(testcase, edit=with_webhooks)

    async def start(self) -> HookFixture:
        await super().start()
        self.receiver = Receiver()
        self.client = Client(self.receiver)
        self.webhooks = WebhookService(
            store=self.parts.store, config=self.config, client=self.client, clock=reactor, jitter=lambda: 0.0
        )
        self.webhook_ids = iter(range(1, 1_000_000))
        return self

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await self.parts.store.db.run("test", fn, *args, **kwargs)

    async def admit(self) -> None:
        """Turn new events into queued webhooks (as the service's pass does), no requests."""
        await self.parts.store.db.run_batched(
            "admit", sw.admit_events, time.time(), outgoing=self.webhooks.outgoing_config,
            compose=outgoing_payload, keep=self.webhooks.keep_period,
            new_webhook_id=lambda: f"msg_test{next(self.webhook_ids)}",
        )  # fmt: skip

    async def deliver(self) -> None:
        """One pass of the webhook service: admit, send what is due, record the answers."""
        await self.webhooks.run_once()
        self.client.flush()
        await self.webhooks.settle()

    async def event(self, kind: str, queue_msg_id: int, **kwargs: Any) -> int:
        """An outgoing event of account mox, as the queue writes it."""
        kwargs.setdefault("created", time.time())
        kwargs.setdefault("message_id", f"<m{queue_msg_id}@localhost>")
        kwargs.setdefault("subject", "hook test")
        kwargs.setdefault("extra", "{}")
        event_id: int = await self.parts.store.db.run_batched(
            "event", outbox.insert_event, account="mox", kind=kind, queue_msg_id=queue_msg_id, **kwargs
        )
        return event_id

    async def incoming(self) -> int:
        """A queued incoming-message webhook, as SMTP delivery writes it."""
        hook_id: int = await self.parts.store.db.run_batched(
            "incoming", sw.insert_incoming, account="mox", url=IN_URL, authorization="",
            payload='{"Subject":"hi there"}', webhook_id="msg_in", created=time.time(),
            message_id="<in@example.org>", subject="hi there",
        )  # fmt: skip
        return hook_id

    async def queue_hooks(self) -> tuple[int, int, int]:
        """Three queued webhooks, not attempted: event ``canceled`` for two messages
        dropped by the admin (a, then b), then an incoming one; their IDs."""
        a, b = await self.send("a@localhost", "b@localhost", Extra={"order": "42"})
        assert await self.admin("QueueDrop", ids_filter(a, b)) == 2
        assert self.changed == [None]  # the drop kicked the webhook sender
        self.changed.clear()
        await self.admit()
        hooks = {h["QueueMsgID"]: h["ID"] for h in await self.admin("HookList", {}, {})}
        return hooks[a], hooks[b], await self.incoming()
