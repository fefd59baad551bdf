"""Every ``moxtw`` command, run as a subprocess (the installed console script) the way an
operator runs it; the commands that talk to a daemon run against a real localserve
daemon, with a real webhook receiver and a real DNS server on loopback.

:data:`COVERED` lists the commands this module runs; a test compares it with the
commands the parser has, so a new command without a test here fails the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from moxtw.cli import parser
from moxtw.config import load_config
from moxtw.passwords import verify_password
from tests.delivery.peers import DNSServer
from tests.helpers import ROOT, Daemon, free_port, http_client, localserve_config

MOXTW = str(Path(sys.executable).parent / "moxtw")

COVERED = {
    "setpassword", "checkconfig", "checkstore",
    "queue list", "queue size", "queue hold", "queue release", "queue fail", "queue drop",
    "queue reschedule", "queue requiretls",
    "holdrules list", "holdrules add", "holdrules remove",
    "retired list",
    "dkim generate", "quickstart", "dnscheck", "dnsbl check",
    "hooks secret", "hooks test", "hooks list", "hooks size", "hooks retired", "hooks reschedule", "hooks cancel",
    "account show", "account set", "account unset", "reload",
}  # fmt: skip


def commands(p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[str]:
    out: list[str] = []
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += commands(sub, (*prefix, name)) or [" ".join((*prefix, name))]
    return out


class CoverageTests(SynchronousTestCase):
    def test_every_command_is_run_here(self) -> None:
        self.assertEqual(set(commands(parser())), COVERED)


class Receiver(resource.Resource):
    """Webhooks: answers 500 (so they stay queued for the hooks commands), except the
    sample of ``moxtw hooks test`` (webhook ID 0), answered 200."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def render_POST(self, request: server.Request) -> bytes:
        hook_id = (request.getHeader("X-Mox-Webhook-ID") or "").strip()
        self.ids.append(hook_id)
        request.setResponseCode(200 if hook_id == "0" else 500)
        return b"noted"


class CommandTests(TestCase):
    timeout = 300

    async def moxtw(self, *args: str, stdin: bytes = b"", admin: bool = True) -> tuple[int, str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MOXTW_ADMIN_PASSWORD": "moxadmin",
               "MOXTW_ADMIN_URL": f"http://127.0.0.1:{self.ports['http']}/admin/api/"}  # fmt: skip
        if not admin:
            env.pop("MOXTW_ADMIN_URL")
        done = await deferToThread(
            subprocess.run, [MOXTW, *args], input=stdin, capture_output=True, env=env, cwd=str(ROOT), timeout=120
        )
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    async def ok(self, *args: str, **kwargs: Any) -> str:
        code, out, err = await self.moxtw(*args, **kwargs)
        self.assertEqual(code, 0, f"moxtw {' '.join(args)}: {out}{err}")
        return out

    async def send(self, to: str, release: str = "") -> int:
        request: dict[str, Any] = {"To": [{"Address": to}], "Subject": "cli", "Text": "hello"}
        if release:
            request["FutureRelease"] = release
        response = await self.http.post(
            f"http://127.0.0.1:{self.ports['http']}/webapi/v0/Send",
            data={"request": json.dumps(request)}, auth=("mox@localhost", "moxmoxmox"),
        )  # fmt: skip
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)
        return int(body["Submissions"][0]["QueueMsgID"])

    async def start(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.ports = localserve_config(self.directory)
        self.config = self.directory / "moxtw.toml"
        self.receiver = Receiver()
        site = server.Site(self.receiver)
        site.noisy = False
        hook_port = free_port()
        listening = reactor.listenTCP(hook_port, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        with self.config.open("a") as f:
            f.write(f'\n[accounts.mox.outgoing_webhook]\nurl = "http://127.0.0.1:{hook_port}/hooks"\n')
        self.daemon = Daemon(self, "localserve", "--dir", str(self.directory)).start()
        await self.daemon.wait_for_port(self.ports["http"])
        await self.daemon.wait_for_port(self.ports["smtp"])
        self.http = http_client(self)

    async def test_offline_commands(self) -> None:
        await self.start()
        # checkconfig and checkstore on the running daemon's files.
        self.assertIn(": ok (", await self.ok("checkconfig", str(self.config), admin=False))
        out = await self.ok("checkstore", str(self.config), admin=False)
        self.assertEqual(out.splitlines()[-1], "ok")
        # setpassword on a copy (the running daemon reads its file at start).
        copy = self.directory / "copy.toml"
        copy.write_text(self.config.read_text())
        await self.ok("setpassword", "mox", "--config", str(copy), stdin=b"a-new-password-1\n", admin=False)
        self.assertTrue(verify_password("a-new-password-1", load_config(copy).accounts["mox"].password_hash))
        # dkim generate: a key file and its DNS record.
        keys = self.directory / "dkim"
        out = await self.ok("dkim", "generate", "example.org", "2026a", "--dir", str(keys), admin=False)
        self.assertTrue((keys / "example.org-2026a.pem").is_file())
        self.assertIn("2026a._domainkey.example.org", out)
        self.assertIn("v=DKIM1", out)
        # hooks secret.
        out = await self.ok("hooks", "secret", "mox", admin=False)
        self.assertTrue(out.strip().splitlines()[-1].lstrip().startswith("whsec_") or "whsec_" in out, out)
        # quickstart, whose configuration checkconfig accepts.
        target = self.directory / "qs"
        out = await self.ok("quickstart", "app@example.org", "--dir", str(target), admin=False)
        self.assertIn("_domainkey.example.org", out)
        self.assertIn(": ok (", await self.ok("checkconfig", str(target / "moxtw.toml"), admin=False))
        # dnscheck against a DNS server without the records: what is missing is listed.
        dns = DNSServer(self)
        dns.zone.a("mail.example.org", "127.0.0.1")
        code, out, err = await self.moxtw("dnscheck", "example.org", "--nameserver", f"127.0.0.1:{dns.port}",
                                          admin=False)  # fmt: skip
        self.assertEqual(code, 1, out + err)
        self.assertIn("MISSING", out)
        self.assertIn("MX", out)

    async def test_queue_holdrules_retired_dnsbl(self) -> None:
        await self.start()
        release = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
        first = await self.send("a1@localhost", release=release)
        second = await self.send("b1@localhost", release=release)
        listed = json.loads(await self.ok("queue", "list", "--json"))
        self.assertEqual(sorted(m["ID"] for m in listed), [first, second])
        self.assertIn("2", await self.ok("queue", "size"))
        await self.ok("queue", "hold", "--id", str(first))
        held = json.loads(await self.ok("queue", "list", "--held", "--json"))
        self.assertEqual([m["ID"] for m in held], [first])
        await self.ok("queue", "release", "--id", str(first))
        self.assertEqual(json.loads(await self.ok("queue", "list", "--held", "--json")), [])
        await self.ok("queue", "requiretls", "yes", "--id", str(first))
        (m,) = json.loads(await self.ok("queue", "list", "--id", str(first), "--json"))
        self.assertIs(m["RequireTLS"], True)
        await self.ok("queue", "reschedule", "120", "--id", str(second))
        # Hold rules: one that holds new messages to c1@localhost.
        await self.ok("holdrules", "add", "--recipient-domain", "localhost", "--account", "mox")
        rules = json.loads(await self.ok("holdrules", "list", "--json"))
        self.assertEqual(len(rules), 1)
        third = await self.send("c1@localhost")
        (m,) = json.loads(await self.ok("queue", "list", "--id", str(third), "--json"))
        self.assertIs(m["Hold"], True)
        await self.ok("holdrules", "remove", str(rules[0]["ID"]))
        self.assertEqual(json.loads(await self.ok("holdrules", "list", "--json")), [])
        # fail and drop need a filter; the failed and dropped messages are retired.
        code, out, err = await self.moxtw("queue", "drop")
        self.assertNotEqual(code, 0)
        await self.ok("queue", "fail", "--id", str(first))
        await self.ok("queue", "drop", "--id", str(second), "--id", str(third))
        self.assertIn("0", await self.ok("queue", "size"))
        retired = json.loads(await self.ok("retired", "list", "--json"))
        self.assertEqual(sorted(r["ID"] for r in retired), [first, second, third])
        # dnsbl check: localserve monitors nothing, which the command says.
        out = await self.ok("dnsbl", "check")
        self.assertIn("monitor", out.lower())

    async def test_account_commands(self) -> None:
        # Settings edited in the file and applied by the running daemon (moxtw.settings).
        await self.start()
        out = await self.ok("account", "show", "mox", "--config", str(self.config), admin=False)
        self.assertIn("max_outgoing_messages_per_day = 1000", out)
        out = await self.ok("account", "set", "mox", "max_outgoing_messages_per_day=1", "--config", str(self.config))
        self.assertIn("daemon reloaded: applied: accounts.mox.max_outgoing_messages_per_day", out)
        await self.send("e1@localhost")
        response = await self.http.post(
            f"http://127.0.0.1:{self.ports['http']}/webapi/v0/Send",
            data={"request": json.dumps({"To": [{"Address": "e2@localhost"}], "Text": "x"})},
            auth=("mox@localhost", "moxmoxmox"),
        )
        self.assertEqual(json.loads(await response.content())["Code"], "messageLimitReached")
        out = await self.ok("account", "unset", "mox", "max_outgoing_messages_per_day", "--config", str(self.config))
        self.assertIn("daemon reloaded: applied: accounts.mox.max_outgoing_messages_per_day", out)
        await self.send("e3@localhost")
        self.assertEqual((await self.ok("reload", "--config", str(self.config))).strip(), "daemon reloaded: no changes")

    async def test_hooks_commands(self) -> None:
        await self.start()
        await self.ok("hooks", "test", "mox", "--config", str(self.config), admin=False)
        self.assertEqual(self.receiver.ids[:1], ["0"])
        await self.send("d1@localhost")  # delivered: a webhook the receiver refuses (500)
        for _ in range(300):
            hooks = json.loads(await self.ok("hooks", "list", "--json"))
            if hooks and hooks[0]["Attempts"] >= 1:
                break
            await deferLater(reactor, 0.1, lambda: None)
        (hook,) = hooks
        self.assertIn("1", await self.ok("hooks", "size"))
        await self.ok("hooks", "reschedule", "60", "--id", str(hook["ID"]))
        await self.ok("hooks", "cancel", "--id", str(hook["ID"]))
        self.assertEqual(json.loads(await self.ok("hooks", "list", "--json")), [])
        retired = json.loads(await self.ok("hooks", "retired", "--json"))
        self.assertEqual([r["ID"] for r in retired], [hook["ID"]])
