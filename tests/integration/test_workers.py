"""Webapi worker processes: they share the HTTP port, are restarted, and stop with the daemon."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from moxtw.localserve import ensure_config
from tests.helpers import Daemon, free_port, port_open


def worker_pids(config: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"moxtw.worker --config {config}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


class WorkerTests(TestCase):
    timeout = 120

    def make_config(self) -> tuple[Path, int, int]:
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        http, metrics = free_port(), free_port()
        text = path.read_text()
        ports = {"smtp": free_port(), "submission": free_port(), "submissions": free_port(), "http": http, "metrics": metrics}
        for name, port in ports.items():
            text = re.sub(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        path.write_text(text)
        return path, http, metrics

    async def sends(self, port: int, n: int) -> None:
        # A new connection per request, so the kernel spreads them over both processes.
        pool = HTTPConnectionPool(reactor, persistent=False)
        client = HTTPClient(Agent(reactor, pool=pool))
        for i in range(n):
            response = await client.post(
                f"http://127.0.0.1:{port}/webapi/v0/Send",
                data={"request": json.dumps({"To": [{"Address": "a@localhost"}], "Text": str(i)})},
                auth=("mox@localhost", "moxmoxmox"),
            )
            body = await response.content()
            self.assertEqual(response.code, 200, body)

    async def main_process_sends(self, metrics: int) -> float:
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await HTTPClient(Agent(reactor, pool=pool)).get(f"http://127.0.0.1:{metrics}/metrics")
        text = (await response.content()).decode()
        # /metrics sums all processes' counters; this one is per process.
        m = re.search(r'^moxtw_webapi_process_requests_total\{process="main"\} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    async def wait_for(self, predicate, what: str, timeout: float = 20.0) -> None:
        waited = 0.0
        while not predicate():
            if waited > timeout:
                raise AssertionError(f"timed out waiting for {what}")
            await deferLater(reactor, 0.1, lambda: None)
            waited += 0.1

    async def test_workers(self) -> None:
        path, http, metrics = self.make_config()
        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(http)
        await daemon.wait_for_output("worker 0: ")
        await self.wait_for(lambda: len(worker_pids(path)) == 1, "one worker process")

        await self.sends(http, 40)
        served_by_main = await self.main_process_sends(metrics)
        self.assertLess(served_by_main, 40, "the worker served none of the requests")
        self.assertGreater(served_by_main, 0, "the main process served none of the requests")

        # A worker that dies is started again.
        (first,) = worker_pids(path)
        os.kill(first, signal.SIGKILL)
        await daemon.wait_for_output("restarting")
        await self.wait_for(lambda: worker_pids(path) not in ([], [first]), "a new worker")
        await self.sends(http, 10)

        code = await daemon.stop()
        self.assertIn(code, (0, -signal.SIGTERM), daemon.output)
        self.assertEqual(worker_pids(path), [])
        self.assertFalse(port_open(http))
        self.assertNotIn("Traceback", daemon.output)

    async def test_worker_exits_when_main_process_dies(self) -> None:
        path, http, _ = self.make_config()
        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(http)
        await self.wait_for(lambda: len(worker_pids(path)) == 1, "one worker process")
        await daemon.stop(signal.SIGKILL)
        await self.wait_for(lambda: worker_pids(path) == [], "the worker to exit after its parent died")
        self.assertFalse(port_open(http))

    async def test_worker_stops_cleanly_on_repeated_sigterm(self) -> None:
        """A worker gets SIGTERM from the main process and again from its death signal:
        the second one must not log a traceback (Twisted's handler calls reactor.stop()
        twice and reports ReactorNotRunning)."""
        path, http, _ = self.make_config()
        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(http)
        await daemon.wait_for_output("serving the webapi")  # its reactor runs
        await self.wait_for(lambda: len(worker_pids(path)) == 1, "one worker process")
        (first,) = worker_pids(path)
        for _ in range(3):
            os.kill(first, signal.SIGTERM)
        await daemon.wait_for_output("restarting")
        await self.wait_for(lambda: worker_pids(path) not in ([], [first]), "a new worker")
        code = await daemon.stop()
        self.assertIn(code, (0, -signal.SIGTERM), daemon.output)
        self.assertNotIn("ReactorNotRunning", daemon.output)
        self.assertNotIn("Traceback", daemon.output)
