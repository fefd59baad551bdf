"""localserve end to end: a webapi Send is delivered by the queue to the daemon's own SMTP."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from moxtw.localserve import ensure_config
from tests.helpers import Daemon, free_port, http_client


class LocalserveDeliveryTests(TestCase):
    timeout = 120

    async def test_send_delivered_and_failed(self) -> None:
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        text = path.read_text()
        ports = {n: free_port() for n in ("smtp", "submission", "submissions", "http", "metrics")}
        for name, port in ports.items():
            text = re.sub(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        path.write_text(text)
        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(ports["http"])
        await daemon.wait_for_port(ports["smtp"])

        client = http_client(self)
        request = {"To": [{"Address": "a@localhost"}, {"Address": "xpermerror@localhost"}], "Subject": "e2e", "Text": "hi"}
        response = await client.post(
            f"http://127.0.0.1:{ports['http']}/webapi/v0/Send",
            data={"request": json.dumps(request)},
            auth=("mox@localhost", "moxmoxmox"),
        )
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)
        good, bad = (s["QueueMsgID"] for s in body["Submissions"])

        db = directory / "data" / "moxtw.sqlite3"

        def events() -> dict[int, tuple[str, int, str]]:
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute("SELECT queue_msg_id, kind, smtp_code, smtp_enhanced_code FROM event").fetchall()
            finally:
                conn.close()
            return {r[0]: (r[1], r[2], r[3]) for r in rows}

        for _ in range(200):
            if len(events()) == 2:
                break
            await deferLater(reactor, 0.05, lambda: None)
        found = events()
        self.assertEqual(found.get(good), ("delivered", 250, "2.2.0"), daemon.output)
        self.assertEqual(found.get(bad), ("failed", 550, "5.0.0"), daemon.output)

        conn = sqlite3.connect(db)
        try:
            queued = conn.execute("SELECT count(*) FROM queue_msg").fetchone()[0]
            inbox = conn.execute("SELECT count(*) FROM message").fetchone()[0]
        finally:
            conn.close()
        self.assertEqual(queued, 0)
        # The delivered message and the failure DSN for the other recipient.
        self.assertEqual(inbox, 2)
        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)
