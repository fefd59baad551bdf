"""localserve end to end: a webapi Send is delivered by the queue to the daemon's own SMTP
listener, and the outcomes reach a real webhook receiver on loopback, also across a crash.
"""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from tests.helpers import Daemon, free_port, http_client, localserve_config

LOGIN = ("mox@localhost", "moxmoxmox")


class Receiver(resource.Resource):
    """Records every webhook; answers ``code`` (or refuses when not listening)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.code = 200

    def render_POST(self, request: server.Request) -> bytes:
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        assert request.content is not None
        self.requests.append((headers, json.loads(request.content.read())))
        request.setResponseCode(self.code)
        return b"ok"

    def by_message(self) -> dict[int, list[tuple[str, int, str]]]:
        out: dict[int, list[tuple[str, int, str]]] = {}
        for _, body in self.requests:
            out.setdefault(body["QueueMsgID"], []).append((body["Event"], body["SMTPCode"], body["SMTPEnhancedCode"]))
        return out


class LocalserveDeliveryTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.ports = localserve_config(self.directory)
        self.receiver = Receiver()
        self.hook_port = free_port()
        self.hook_url = f"http://127.0.0.1:{self.hook_port}/hooks"
        self.listening: Any = None

    def listen(self) -> None:
        site = server.Site(self.receiver)
        site.noisy = False
        self.listening = reactor.listenTCP(self.hook_port, site, interface="127.0.0.1")
        self.addCleanup(lambda: self.listening.stopListening() if self.listening else None)

    async def start(self) -> Daemon:
        daemon = Daemon(
            self, "localserve", "--dir", str(self.directory), "--outgoing-webhook", self.hook_url,
            "--webhook-authorization", "Bearer t0ken", "--retry-scale", "60",
        ).start()
        await daemon.wait_for_port(self.ports["http"])
        await daemon.wait_for_port(self.ports["smtp"])
        return daemon

    async def send(self, *addresses: str) -> list[int]:
        client = http_client(self)
        request = {"To": [{"Address": a} for a in addresses], "Subject": "e2e", "Text": "hi", "Extra": {"order": "7"}}
        response = await client.post(
            f"http://127.0.0.1:{self.ports['http']}/webapi/v0/Send", data={"request": json.dumps(request)}, auth=LOGIN
        )
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)
        return [s["QueueMsgID"] for s in body["Submissions"]]

    async def wait_for(self, condition: Any, what: str, daemon: Daemon) -> None:
        for _ in range(400):
            if condition():
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}; webhooks {self.receiver.requests}\n{daemon.output}")

    async def test_send_delivered_and_failed_webhooks(self) -> None:
        self.listen()
        daemon = await self.start()
        good, bad = await self.send("a@localhost", "xpermerror@localhost")
        await self.wait_for(lambda: len(self.receiver.requests) >= 2, "two webhooks", daemon)
        self.assertEqual(self.receiver.by_message(), {good: [("delivered", 250, "2.2.0")], bad: [("failed", 550, "5.0.0")]})
        headers, body = next(r for r in self.receiver.requests if r[1]["QueueMsgID"] == good)
        self.assertEqual(headers["authorization"], "Bearer t0ken")
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(headers["x-mox-webhook-attempt"], "1")
        self.assertEqual((body["Version"], body["DSN"], body["Subject"], body["Extra"]), (0, False, "e2e", {"order": "7"}))

        db = self.directory / "data" / "moxtw.sqlite3"
        with sqlite3.connect(db) as conn:
            queued = conn.execute("SELECT count(*) FROM queue_msg").fetchone()[0]
            inbox = conn.execute("SELECT count(*) FROM message").fetchone()[0]
        self.assertEqual(queued, 0)
        # The delivered message and the failure DSN for the other recipient.
        self.assertEqual(inbox, 2)
        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)

    async def test_pending_webhooks_survive_a_crash(self) -> None:
        """The receiver is down: webhooks wait; the daemon is killed; after a restart with
        the receiver up, every webhook arrives (with its original webhook ID)."""
        daemon = await self.start()
        good, bad = await self.send("b@localhost", "ypermerror@localhost")
        db = self.directory / "data" / "moxtw.sqlite3"

        def pending() -> int:
            with sqlite3.connect(db) as conn:
                return int(conn.execute("SELECT count(*) FROM event WHERE admitted = 1").fetchone()[0])

        await self.wait_for(lambda: pending() == 2, "two pending webhooks", daemon)
        with sqlite3.connect(db) as conn:
            ids = dict(conn.execute("SELECT queue_msg_id, id FROM event WHERE admitted = 1").fetchall())
        daemon.process.signalProcess("KILL")
        self.assertEqual(await daemon.proto.ended, -signal.SIGKILL)

        self.listen()
        again = await self.start()
        await self.wait_for(lambda: len(self.receiver.by_message()) == 2, "webhooks after the restart", again)
        self.assertEqual(self.receiver.by_message(), {good: [("delivered", 250, "2.2.0")], bad: [("failed", 550, "5.0.0")]})
        for headers, body in self.receiver.requests:
            self.assertEqual(headers["x-mox-webhook-id"], str(ids[body["QueueMsgID"]]))
            self.assertNotEqual(headers["x-mox-webhook-attempt"], "1")  # attempt 1 failed: refused
        await again.stop()
        self.assertNotIn("Traceback", again.output)
