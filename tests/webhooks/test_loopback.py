"""The real treq client against a real twisted.web receiver on 127.0.0.1: several
requests in flight to one URL, over kept-alive connections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from moxtw.store import outbox, sqlite_store
from moxtw.store import webhooks as sw
from moxtw.webhooks import build_webhooks

from .harness import make_config, webhook

reactor: Any = _reactor


class Barrier(Resource):
    """Holds requests until ``width`` are open at once, then answers them all: the
    sender must keep ``width`` requests in flight to get anywhere."""

    isLeaf = True

    def __init__(self, width: int, total: int) -> None:
        super().__init__()
        self.width = width
        self.total = total
        self.open: list[Request] = []
        self.bodies: list[dict[str, Any]] = []
        self.max_open = 0
        self.peers: set[tuple[str, int]] = set()
        self.done: defer.Deferred[None] = defer.Deferred()

    def render_POST(self, request: Request) -> int:
        assert request.content is not None
        self.bodies.append(json.loads(request.content.read()))
        peer: Any = request.getClientAddress()
        self.peers.add((peer.host, peer.port))
        self.open.append(request)
        self.max_open = max(self.max_open, len(self.open))
        if len(self.open) == self.width:
            answering, self.open = self.open, []
            for r in answering:
                r.setResponseCode(200)
                r.write(b"ok")
                r.finish()
            if len(self.bodies) == self.total:
                self.done.callback(None)
        return NOT_DONE_YET


class LoopbackTests(TestCase):
    async def test_max_in_flight_over_keep_alive(self) -> None:
        width, total = 4, 12
        barrier = Barrier(width, total)
        site = Site(barrier)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        url = f"http://127.0.0.1:{port.getHost().port}/hook"

        directory = Path(self.mktemp()).absolute()
        config = make_config(directory, a={"outgoing_webhook": webhook(url, max_in_flight=width)})
        store = sqlite_store(directory, reactor)
        store.open()
        self.addCleanup(store.close)
        for i in range(total):
            await store.db.run("event", outbox.insert_event, account="a", kind="delivered", queue_msg_id=i + 1,
                               created=reactor.seconds(), extra="{}")  # fmt: skip
        (svc,) = build_webhooks(config, store, reactor)
        svc.startService()
        self.addCleanup(svc.stopService)
        await barrier.done
        while await store.db.run("size", sw.hook_queue_size):
            await deferLater(reactor, 0.01, lambda: None)

        self.assertEqual(sorted(b["QueueMsgID"] for b in barrier.bodies), list(range(1, total + 1)))
        self.assertEqual(barrier.max_open, width)
        # Kept alive: the 12 requests came over the 4 connections the first round opened.
        self.assertEqual(len(barrier.peers), width)
        retired = await store.db.run("retired", sw.list_retired_hooks)
        self.assertEqual(len(retired), total)
        self.assertTrue(all(r.success for r in retired))
