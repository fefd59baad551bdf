"""A daemon killed while deliveries are in flight loses nothing when it restarts.

A real ``twistd -n moxtw`` process delivers through MX lookup (a ``twisted.names`` server
on loopback) to a real SMTP server on loopback that takes the message data but never
answers the final dot, so every delivery hangs after its body was sent.  With deliveries
in flight and more messages waiting their turn, the daemon gets SIGKILL.  The SMTP server
then starts answering, the daemon restarts on the same data directory, and every message
answered 200 must end up delivered: the interrupted attempts stay in the history as
interrupted, the messages whose body had reached the server are delivered at most once
more (the one duplicate a crash after DATA may cause), the others exactly once.
"""

from __future__ import annotations

import collections
import email
import email.policy
import json
import signal
import sqlite3
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from moxtw.passwords import hash_password
from moxtw.store.recovery import INTERRUPTED
from tests.delivery.peers import DNSServer, SMTPServer
from tests.helpers import Daemon, free_port, http_client

PASSWORD = "test-password-1"
MESSAGES = 16
PER_DOMAIN = 4


def write_config(directory: Path, *, dns_port: int, mx_port: int, http_port: int) -> Path:
    """A production-style (not localserve) config: MX delivery, resolver on loopback."""
    data_dir = directory / "data"
    path = directory / "moxtw.toml"
    path.write_text(
        f"""
hostname = "mail.example.org"
data_dir = "{data_dir}"
admin_password_hash = ""

[listeners]
http = ["tcp:{http_port}:interface=127.0.0.1"]

[queue]
port = {mx_port}
max_per_domain = {PER_DOMAIN}

[dns]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = "2s"

[domains."example.org"]
catchall_separators = ["+"]

[accounts.app]
domain = "example.org"
addresses = ["app@example.org"]
password_hash = "{hash_password(PASSWORD)}"
keep_retired_messages = "72h"
"""
    )
    return path


class QueueRestartTests(TestCase):
    timeout = 120

    async def wait(self, condition: object, what: str, daemon: Daemon, seconds: float = 30.0) -> None:
        for _ in range(int(seconds / 0.05)):
            if condition():  # type: ignore[operator]
                return
            await deferLater(reactor, 0.05, lambda: None)
        self.fail(f"timed out waiting for {what}\n{daemon.output}")

    async def test_kill_during_deliveries_then_restart(self) -> None:
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        dns = DNSServer(self)
        dns.zone.mx("remote.test", (10, "mx.remote.test"))
        dns.zone.a("mx.remote.test", "127.0.0.1")
        mx = SMTPServer(self, replies={"END": None})  # takes the body, never answers it
        http_port = free_port()
        config = write_config(directory, dns_port=dns.port, mx_port=mx.port, http_port=http_port)
        db_path = directory / "data" / "moxtw.sqlite3"

        daemon = Daemon(self, "--config", str(config)).start()
        await daemon.wait_for_port(http_port)
        client = http_client(self)
        url = f"http://127.0.0.1:{http_port}/webapi/v0/Send"
        sent: dict[int, str] = {}  # QueueMsgID → Message-ID
        for i in range(MESSAGES):
            request = {"To": [{"Address": f"rcpt{i}@remote.test"}], "Subject": f"restart {i}", "Text": f"message {i}"}
            response = await client.post(url, data={"request": json.dumps(request)}, auth=("app@example.org", PASSWORD))
            body = json.loads(await response.content())
            self.assertEqual(response.code, 200, body)
            sent[body["Submissions"][0]["QueueMsgID"]] = body["MessageID"]

        # Deliveries in flight: as many as the per-domain limit allows, each hanging
        # after its body reached the server; the rest wait in the queue.
        await self.wait(lambda: len(mx.messages) >= PER_DOMAIN, f"{PER_DOMAIN} bodies at the MX", daemon)
        daemon.process.signalProcess("KILL")
        self.assertEqual(await daemon.proto.ended, -signal.SIGKILL)
        in_flight = {message_id(data) for _, _, data in mx.messages}
        self.assertEqual(len(in_flight), PER_DOMAIN)

        # The MX answers from now on; the daemon restarts on the same data directory.
        mx.replies["END"] = "250 2.0.0 queued"
        for p in list(mx.protocols):
            p.transport.abortConnection()
        again = Daemon(self, "--config", str(config)).start()
        await again.wait_for_port(http_port)

        def retired() -> int:
            with sqlite3.connect(db_path) as db:
                return int(db.execute("SELECT count(*) FROM queue_retired").fetchone()[0])

        await self.wait(lambda: retired() == MESSAGES, "every message delivered after the restart", again)

        with sqlite3.connect(db_path) as db:
            outcomes = dict(db.execute("SELECT id, event FROM queue_retired").fetchall())
            interrupted = {
                msg_id
                for (msg_id,) in db.execute("SELECT DISTINCT msg_id FROM queue_attempt WHERE error = ?", (INTERRUPTED,))
            }
            left = db.execute("SELECT count(*) FROM queue_msg").fetchone()[0]
        self.assertEqual(outcomes, {msg_id: "delivered" for msg_id in sent})
        self.assertEqual(left, 0)
        # Exactly the attempts the kill cut short are marked as interrupted.
        self.assertEqual({sent[i] for i in interrupted}, in_flight)

        received = collections.Counter(message_id(data) for _, _, data in mx.messages)
        self.assertEqual(set(received), set(sent.values()))
        duplicates = {m for m, n in received.items() if n > 1}
        self.assertLessEqual(duplicates, in_flight, "only a body sent before the kill may arrive twice")
        self.assertEqual(max(received.values()), 2 if duplicates else 1)
        self.assertIn(await again.stop(signal.SIGTERM), (0, -signal.SIGTERM), again.output)
        self.assertNotIn("Traceback", again.output)


def message_id(data: bytes) -> str:
    return str(email.message_from_bytes(data, policy=email.policy.default)["Message-Id"])
