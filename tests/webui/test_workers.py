"""Sessions across processes: a real localserve daemon with an HTTP worker sharing the
port, so the page requests of one browser land in both processes."""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from moxtw.localserve import ADMIN_PASSWORD
from tests.helpers import Daemon, localserve_config


class CrossProcessSessionTests(TestCase):
    timeout = 120

    async def test_session_valid_in_main_process_and_worker(self) -> None:
        directory = Path(self.mktemp()).absolute()
        ports = localserve_config(directory)
        daemon = Daemon(self, "--config", str(directory / "moxtw.toml")).start()
        await daemon.wait_for_port(ports["http"])
        await daemon.wait_for_output("worker 0: ")
        base = f"http://127.0.0.1:{ports['http']}"
        # A new connection per request: the kernel spreads them over both processes.
        client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
        cookies: dict[str, str] = {}

        async def request(method: str, path: str, fields: dict[str, str] | None = None) -> tuple[int, Any, str]:
            headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
            kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
            if fields is not None:
                headers["Content-Type"] = "application/x-www-form-urlencoded"
                headers["Origin"] = base
                kwargs["data"] = urlencode(fields).encode()
            response = await client.request(method, base + path, **kwargs)
            text = (await response.content()).decode()
            for raw in response.headers.getRawHeaders("set-cookie") or []:
                name, _, rest = raw.partition("=")
                cookies[name] = rest.split(";", 1)[0]
            return response.code, response.headers, text

        # Several logins at once right after the start: both processes create or read
        # the key file, and must end up with the same key.
        _, _, form = await request("GET", "/admin/login")
        token = re.findall(r'name="csrf_token" value="([^"]*)"', form)[0]
        status, headers, _ = await request("POST", "/admin/login", {"csrf_token": token, "password": ADMIN_PASSWORD})
        self.assertEqual(status, 303)
        self.assertIn("moxtw_admin_session", cookies)
        for _ in range(30):
            status, _, page = await request("GET", "/admin/queue/")
            self.assertEqual(status, 200, "a process did not accept the session")
        csrf = re.findall(r'name="csrf_token" value="([^"]*)"', page)[0]
        for _ in range(10):
            status, headers, _ = await request("POST", "/admin/queue/", {"csrf_token": csrf, "action": "hold",
                                                                         "scope": "all", "ids": "999999"})  # fmt: skip
            self.assertEqual(status, 303, "a process did not accept the CSRF token")
            self.assertIn("count=0", headers.getRawHeaders("location")[0])
        key = directory / "data" / "webui-session.key"
        self.assertEqual(oct(key.stat().st_mode & 0o777), "0o600")
        self.assertIn(await daemon.stop(), (0, -signal.SIGTERM), daemon.output)
