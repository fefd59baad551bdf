"""A real SQLite store, a test clock, StubTreq receivers and a webhook service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from moxtw.config import (
    AccountConfig,
    Config,
    Listeners,
    QueueConfig,
    TLSConfig,
    WebhookConfig,
    WebhooksConfig,
)
from moxtw.store import Store, outbox, sqlite_store
from moxtw.store import webhooks as sw
from moxtw.webhooks.service import WebhookService

T0 = 1_700_000_000.0
HOUR = 3600.0
#: The waits after attempts 1..11 with jitter 0 (mox §3.3).
WAITS = [60.0, 120.0, 240.0, 450.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 57600.0]

OUT_A = "http://a.example/hooks/outgoing"
IN_A = "http://a.example/hooks/incoming"
OUT_B = "http://b.example/hooks/outgoing"

#: Answer marker: keep the request open until the test answers it.
HOLD = -1


def webhook(url: str, **kwargs: Any) -> WebhookConfig:
    return WebhookConfig(url=url, **kwargs)


def make_config(
    data_dir: Path,
    *,
    keep: float = 72 * HOUR,
    retry_scale: float = 1.0,
    timeout: float = 60.0,
    a: dict[str, Any] | None = None,
    b: dict[str, Any] | None = None,
) -> Config:
    """Accounts ``a`` (outgoing and incoming webhooks) and ``b`` (outgoing webhook) and
    ``c`` (none); ``a``/``b`` override their AccountConfig fields."""
    accounts = {
        "a": AccountConfig(
            name="a", domain="example.org", addresses=("a@example.org",), password_hash="",
            keep_retired_webhooks=keep,
            outgoing_webhook=webhook(OUT_A, authorization="Bearer out-secret"),
            incoming_webhook=webhook(IN_A, authorization="Bearer in-secret"),
        ),
        "b": AccountConfig(
            name="b", domain="example.org", addresses=("b@example.org",), password_hash="",
            keep_retired_webhooks=keep, outgoing_webhook=webhook(OUT_B),
        ),
        "c": AccountConfig(name="c", domain="example.org", addresses=("c@example.org",), password_hash=""),
    }  # fmt: skip
    for name, changes in (("a", a), ("b", b)):
        if changes:
            accounts[name] = attrs.evolve(accounts[name], **changes)
    return Config(
        hostname="mail.example.org",
        data_dir=data_dir,
        listeners=Listeners(),
        tls=TLSConfig(),
        admin_password_hash="",
        domains={},
        accounts=accounts,
        queue=QueueConfig(retry_scale=retry_scale),
        webhooks=WebhooksConfig(timeout=timeout),
    )


@attrs.define
class Received:
    host: str
    path: str
    headers: dict[str, list[str]]
    body: bytes
    request: Request

    def header(self, name: str) -> str:
        (value,) = self.headers[name.lower()]
        return value

    def respond(self, code: int = 200, body: bytes = b"ok") -> None:
        self.request.setResponseCode(code)
        self.request.write(body)
        self.request.finish()


class Receiver(Resource):
    """Records every POST; ``answer(received)`` gives the status code (or :data:`HOLD`)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Received] = []
        self.held: list[Received] = []
        self.answers: dict[str, Callable[[Received], int]] = {}
        self.body = b"thanks"

    def by_host(self, host: str) -> list[Received]:
        return [r for r in self.requests if r.host == host]

    def render_POST(self, request: Request) -> bytes | int:
        headers = {
            k.decode().lower(): [v.decode() for v in vs] for k, vs in request.requestHeaders.getAllRawHeaders()
        }
        host = headers.get("host", [""])[0]
        assert request.content is not None
        received = Received(host, request.path.decode(), headers, request.content.read(), request)
        self.requests.append(received)
        code = self.answers.get(host, lambda r: 200)(received)
        if code == HOLD:
            self.held.append(received)
            return NOT_DONE_YET
        request.setResponseCode(code)
        return self.body


class Client:
    """StubTreq, plus hosts that refuse connections."""

    def __init__(self, receiver: Receiver) -> None:
        self.stub = StubTreq(receiver)
        self.refuse: set[str] = set()

    def post(self, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        if any(url.startswith(f"http://{h}/") for h in self.refuse):
            return defer.fail(ConnectionRefusedError("Connection refused"))
        d: defer.Deferred[Any] = self.stub.post(url, **kwargs)  # type: ignore[attr-defined]
        return d

    def flush(self) -> None:
        self.stub.flush()


class Harness:
    def __init__(self, testcase: Any, **config: Any) -> None:
        self.tc = testcase
        self.directory = Path(testcase.mktemp()).absolute()
        self.config = make_config(self.directory, **config)
        self.clock = Clock()
        self.clock.advance(T0)
        self.receiver = Receiver()
        self.client = Client(self.receiver)
        self.store: Store | None = None
        self.ids = iter(range(1, 1_000_000))

    def open(self) -> Store:
        store = sqlite_store(self.directory, reactor)
        store.open()
        self.store = store
        self.tc.addCleanup(self.close)
        return store

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()

    def service(self, *, start: bool = True, **kwargs: Any) -> WebhookService:
        assert self.store is not None
        kwargs.setdefault("jitter", lambda: 0.0)
        kwargs.setdefault("new_webhook_id", lambda: f"msg_test{next(self.ids)}")
        svc = WebhookService(store=self.store, config=self.config, client=self.client, clock=self.clock, **kwargs)
        if start:
            svc.startService()
            self.tc.addCleanup(self.stop, svc)
        return svc

    async def stop(self, svc: WebhookService) -> None:
        if not svc.running:
            return
        d = svc.stopService()
        for r in list(self.receiver.held):
            if not r.request.finished and not r.request._disconnected:
                r.respond(200)
        self.client.flush()
        self.clock.advance(svc.stop_grace)
        await d

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.store is not None
        return await self.store.db.run("test", fn, *args, **kwargs)

    async def event(self, kind: str = "delivered", account: str = "a", queue_msg_id: int = 1, **kwargs: Any) -> int:
        """Write an event as the queue does."""
        kwargs.setdefault("created", self.clock.seconds())
        kwargs.setdefault("message_id", "<m1@example.org>")
        kwargs.setdefault("subject", "hello")
        kwargs.setdefault("extra", '{"order": "42"}')
        event_id: int = await self.run(outbox.insert_event, account=account, kind=kind, queue_msg_id=queue_msg_id, **kwargs)
        return event_id

    async def hooks(self) -> list[sw.Hook]:
        return await self.run(sw.list_hooks, sw.HookFilter(), sw.HookSort(asc=True))  # type: ignore[no-any-return]

    async def hook(self, hook_id: int) -> sw.Hook | None:
        return await self.run(sw.get_hook, hook_id)  # type: ignore[no-any-return]

    async def retired(self, hook_id: int) -> sw.RetiredHook | None:
        return await self.run(sw.get_retired_hook, hook_id)  # type: ignore[no-any-return]

    async def events_left(self) -> int:
        def count(cursor: Any) -> int:
            cursor.execute("SELECT count(*) FROM event")
            return int(cursor.fetchone()[0])

        return await self.run(count)  # type: ignore[no-any-return]

    async def advance(self, svc: WebhookService, seconds: float) -> None:
        self.clock.advance(seconds)
        await svc.settle()

    async def answer_held(self, svc: WebhookService, code: int = 200, index: int = 0) -> Received:
        r = self.receiver.held.pop(index)
        r.respond(code)
        self.client.flush()
        await svc.settle()
        return r
