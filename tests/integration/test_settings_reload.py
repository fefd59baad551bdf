"""Account settings changed while a real daemon runs (localserve, one HTTP worker): through
the admin API, the ``moxtw account`` commands and SIGHUP after a hand edit, applied in the
main process and in the worker without a restart."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from treq.client import HTTPClient
from twisted.internet import reactor, utils
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from moxtw.webhooks.signing import sign
from tests.helpers import ROOT, Daemon, free_port, localserve_config, port_open

SECRET = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
LOGIN = ("mox@localhost", "moxmoxmox")
ADMIN = ("admin", "moxadmin")


class Receiver(Resource):
    """A webhook receiver on loopback: records each POST."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[dict[str, str], bytes]] = []

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        headers = {k.decode().lower(): v[0].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((headers, request.content.read()))
        return b"ok"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        await deferLater(reactor, 0.05, lambda: None)
        waited += 0.05


class Env:
    def __init__(self, testcase: TestCase, daemon: Daemon, path: Path, ports: dict[str, int]) -> None:
        self.testcase = testcase
        self.daemon = daemon
        self.path = path
        self.ports = ports
        self.base = f"http://127.0.0.1:{ports['http']}"
        pool = HTTPConnectionPool(reactor, persistent=False)  # a new connection per request
        self.http = HTTPClient(Agent(reactor, pool=pool))

    async def admin(self, method: str, *params: Any) -> Any:
        response = await self.http.post(
            f"{self.base}/admin/api/{method}",
            data=json.dumps({"params": list(params)}).encode(),
            headers={"content-type": "application/json"},
            auth=ADMIN,
        )
        body = json.loads(await response.content())
        self.testcase.assertEqual(response.code, 200, body)
        self.testcase.assertNotIn("error", body)
        return body["result"]

    async def send(self, to: str, login: tuple[str, str] = LOGIN) -> tuple[int, Any]:
        request = {"To": [{"Address": to}], "Subject": "settings", "Text": "hi"}
        response = await self.http.post(
            f"{self.base}/webapi/v0/Send", data={"request": json.dumps(request)}, auth=login
        )
        return response.code, json.loads(await response.content())

    async def served(self) -> dict[str, float]:
        """Webapi calls served so far, by process (main, worker0)."""
        response = await self.http.get(f"http://127.0.0.1:{self.ports['metrics']}/metrics")
        text = (await response.content()).decode()
        found = re.findall(r'^moxtw_webapi_process_requests_total\{process="(\w+)"\} (\S+)$', text, re.M)
        return {name: float(value) for name, value in found}

    async def in_every_process(self, call: Callable[[], Any], check: Callable[[Any], None]) -> int:
        """Repeat ``call`` (each on a new connection, which the kernel hands to the main
        process or the worker) until both processes have served one; ``check`` each
        result.  Returns the number of calls."""
        before = await self.served()
        for n in range(1, 200):
            check(await call())
            now = await self.served()
            if all(now.get(p, 0.0) > before.get(p, 0.0) for p in ("main", "worker0")):
                return n
        raise AssertionError(f"the calls did not reach both processes: {before} -> {now}")

    async def moxtw(self, *args: str) -> tuple[int, str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("MOXTW_ADMIN_URL", None)
        env["MOXTW_ADMIN_PASSWORD"] = ADMIN[1]
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, ["-m", "moxtw.cli", *args], env=env, path=str(ROOT)
        )
        return code, out.decode(), err.decode()


class SettingsReloadTests(TestCase):
    timeout = 180

    async def start(self) -> Env:
        directory = Path(self.mktemp()).absolute()
        ports = localserve_config(directory)
        path = directory / "moxtw.toml"
        self.assertIn("\nworkers = 1 ", path.read_text())  # localserve runs one HTTP worker
        daemon = Daemon(self, "localserve", "--dir", str(directory)).start()
        await daemon.wait_for_port(ports["http"])
        await daemon.wait_for_output("serving the webapi")
        self.addCleanup(daemon.stop)
        return Env(self, daemon, path, ports)

    def receiver(self) -> tuple[Receiver, str]:
        receiver = Receiver()
        port = reactor.listenTCP(0, Site(receiver), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return receiver, f"http://127.0.0.1:{port.getHost().port}/hooks"

    async def test_admin_api_webhook_keep_period_and_limit(self) -> None:
        env = await self.start()
        first, first_url = self.receiver()
        second, second_url = self.receiver()

        saved = await env.admin("AccountSettingsSave", "mox", {"outgoing_webhook": {"url": first_url, "events": ["delivered"]}}, "")
        self.assertEqual(saved["reload"], {"applied": ["accounts.mox.outgoing_webhook"], "needs_restart": []})
        code, body = await env.send("one@localhost")
        self.assertEqual(code, 200, body)
        id1 = body["Submissions"][0]["QueueMsgID"]
        await wait_for(lambda: any(e["QueueMsgID"] == id1 for e in first.events()), "the first webhook")
        self.assertEqual(first.events()[0]["Event"], "delivered")
        self.assertEqual(len(await env.admin("RetiredList", {"IDs": [id1]}, {})), 1)  # kept 72h

        # New URL and a signing secret; retired messages no longer kept.
        got = await env.admin("AccountSettingsGet", "mox")
        saved = await env.admin(
            "AccountSettingsSave",
            "mox",
            {"outgoing_webhook": {"url": second_url, "signing_secret": SECRET}, "keep_retired_messages": "0"},
            got["version"],
        )
        self.assertEqual(
            saved["reload"]["applied"],
            ["accounts.mox.keep_retired_messages", "accounts.mox.outgoing_webhook.url",
             "accounts.mox.outgoing_webhook.signing_secret"],
        )  # fmt: skip
        self.assertNotIn(SECRET, json.dumps(saved))
        code, body = await env.send("two@localhost")
        self.assertEqual(code, 200, body)
        id2 = body["Submissions"][0]["QueueMsgID"]
        await wait_for(lambda: any(e["QueueMsgID"] == id2 for e in second.events()), "the webhook at the new URL")
        self.assertEqual([e["QueueMsgID"] for e in first.events()], [id1])
        headers, raw = next((h, b) for h, b in second.requests if json.loads(b)["QueueMsgID"] == id2)
        self.assertEqual(
            headers["webhook-signature"], sign(SECRET, headers["webhook-id"], int(headers["webhook-timestamp"]), raw)
        )
        self.assertEqual(await env.admin("RetiredList", {"IDs": [id2]}, {}), [])  # not kept

        # Two sent today: a limit of 2 refuses the next Send, in both processes.
        saved = await env.admin("AccountSettingsSave", "mox", {"max_outgoing_messages_per_day": 2}, "")
        self.assertEqual(saved["reload"]["applied"], ["accounts.mox.max_outgoing_messages_per_day"])

        def refused(result: tuple[int, Any]) -> None:
            self.assertEqual((result[0], result[1].get("Code")), (400, "messageLimitReached"), result)

        await env.in_every_process(lambda: env.send("three@localhost"), refused)
        self.assertIn("configuration reloaded from", env.daemon.output)
        self.assertIn("worker 0: ", env.daemon.output)
        self.assertRegex(env.daemon.output, r"worker 0: .*configuration reloaded: applied accounts\.mox\.max_outgoing")

    async def test_cli_adds_fromid_login(self) -> None:
        env = await self.start()
        login = ("mox+app@localhost", "moxmoxmox")
        code, body = await env.send("a@localhost", login)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["Submissions"][0]["FromID"], "")  # not yet a FromID login

        code, out, err = await env.moxtw(
            "account", "set", "mox", "-c", str(env.path),
            "fromid_login_addresses=mox+fromid@localhost, mox+app@localhost",
        )  # fmt: skip
        self.assertEqual(code, 0, err)
        self.assertIn("changed fromid_login_addresses", out)
        self.assertIn("daemon reloaded: applied: accounts.mox.fromid_login_addresses", out)

        def with_fromid(result: tuple[int, Any]) -> None:
            code, body = result
            self.assertEqual(code, 200, body)
            self.assertNotEqual(body["Submissions"][0]["FromID"], "")

        await env.in_every_process(lambda: env.send("b@localhost", login), with_fromid)

        code, out, err = await env.moxtw("account", "show", "mox", "-c", str(env.path))
        self.assertEqual(code, 0, err)
        self.assertIn("fromid_login_addresses = mox+fromid@localhost, mox+app@localhost", out)
        code, out, err = await env.moxtw("reload", "-c", str(env.path))
        self.assertEqual((code, out.strip()), (0, "daemon reloaded: no changes"), err)
        # A change that makes the file invalid is refused; nothing is written.
        before = env.path.read_bytes()
        code, out, err = await env.moxtw("account", "set", "mox", "-c", str(env.path), "outgoing_webhook.url=ftp://x")
        self.assertEqual(code, 1)
        self.assertIn("accounts.mox.outgoing_webhook.url: expected an http or https URL", err)
        self.assertEqual(env.path.read_bytes(), before)

    async def test_sighup_after_hand_edit(self) -> None:
        env = await self.start()
        code, body = await env.send("a@localhost")
        self.assertEqual(code, 200, body)
        new_metrics = free_port()
        text = env.path.read_text()
        text = text.replace("max_outgoing_messages_per_day = 1000", "max_outgoing_messages_per_day = 1")
        text = re.sub(r"^metrics = \[.*\]", f'metrics = ["tcp:{new_metrics}:interface=127.0.0.1"]', text, flags=re.M)
        env.path.write_text(text)
        env.daemon.process.signalProcess("HUP")
        await env.daemon.wait_for_output("changes that need a restart were not applied: listeners")
        self.assertIn("configuration reloaded from", env.daemon.output)
        self.assertIn("applied accounts.mox.max_outgoing_messages_per_day", env.daemon.output)
        self.assertIn("SIGHUP: reloading TLS certificate", env.daemon.output)  # one handler, both reloads

        def refused(result: tuple[int, Any]) -> None:
            self.assertEqual((result[0], result[1].get("Code")), (400, "messageLimitReached"), result)

        await env.in_every_process(lambda: env.send("b@localhost"), refused)
        # The listener change waits for a restart.
        self.assertTrue(port_open(env.ports["metrics"]))
        self.assertFalse(port_open(new_metrics))
        got = await env.admin("AccountSettingsGet", "mox")
        self.assertEqual(got["settings"]["max_outgoing_messages_per_day"], 1)

        # A broken file is logged and the running configuration stays.
        env.path.write_text(text.replace("max_outgoing_messages_per_day = 1", "max_outgoing_messages_per_day = -5"))
        env.daemon.process.signalProcess("HUP")
        await env.daemon.wait_for_output("configuration not reloaded, the running one stays")
        self.assertIn("accounts.mox.max_outgoing_messages_per_day: expected a positive integer", env.daemon.output)
        got = await env.admin("AccountSettingsGet", "mox")
        self.assertEqual(got["settings"]["max_outgoing_messages_per_day"], 1)
        code, body = await env.send("c@localhost")
        self.assertEqual((code, body.get("Code")), (400, "messageLimitReached"))
