"""The ``moxtw`` command: configuration tools run as a subprocess like a user runs them, and
the queue admin commands against a real admin API (and a real daemon)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import resource, server

from moxtw import cli
from moxtw.cli import set_toml_key
from moxtw.config import load_config
from moxtw.localserve import ensure_config
from moxtw.passwords import verify_password
from tests.admin.fixture import AdminFixture, HookFixture
from tests.helpers import ROOT, Daemon, free_port, http_client

MOXTW = [sys.executable, "-m", "moxtw.cli"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOXTW, *args], input=stdin, capture_output=True, text=True, timeout=60)


class CheckConfigTests(SynchronousTestCase):
    def test_good(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        result = run("checkconfig", str(path))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ok (1 domain(s), 1 account(s))", result.stdout)

    def test_bad(self) -> None:
        path = Path(self.mktemp())
        path.write_text('hostname = "x"\ndata_dir = "d"\n[queue]\nmax_concurrent = 0\ncolour = 1\n')
        result = run("checkconfig", str(path))
        self.assertEqual(result.returncode, 1)
        self.assertIn("queue.max_concurrent: expected a positive integer, got 0", result.stderr)
        self.assertIn("queue.colour: unknown key", result.stderr)


class SetPasswordTests(SynchronousTestCase):
    def test_account_password(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        before = path.read_text()
        result = run("setpassword", "mox", "--config", str(path), stdin="new-secret-1\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        config = load_config(path)
        self.assertTrue(verify_password("new-secret-1", config.accounts["mox"].password_hash))
        self.assertFalse(verify_password("moxmoxmox", config.accounts["mox"].password_hash))
        # Comments and the admin password are untouched.
        after = path.read_text()
        self.assertIn("# Password for all login addresses of this account", after)
        self.assertEqual(len(before.splitlines()), len(after.splitlines()))
        self.assertTrue(verify_password("moxadmin", config.admin_password_hash))

    def test_admin_password(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        result = run("setpassword", "--admin", "--config", str(path), stdin="admin-secret\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(verify_password("admin-secret", load_config(path).admin_password_hash))

    def test_unknown_account_and_short_password(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        result = run("setpassword", "nobody", "--config", str(path), stdin="long-enough\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no account 'nobody'", result.stderr)
        result = run("setpassword", "mox", "--config", str(path), stdin="short\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("too short", result.stderr)


class SetTomlKeyTests(SynchronousTestCase):
    def test_replace_and_insert(self) -> None:
        text = '# top\nhostname = "h"\n\n[accounts.a]\n# pw\npassword_hash = "old"\n\n[accounts.b]\ndomain = "x"\n'
        self.assertIn('[accounts.a]\n# pw\npassword_hash = "new"\n', set_toml_key(text, "accounts.a", "password_hash", "new"))
        self.assertIn('[accounts.b]\npassword_hash = "new"\ndomain = "x"\n', set_toml_key(text, "accounts.b", "password_hash", "new"))
        self.assertTrue(set_toml_key(text, None, "admin_password_hash", "z").startswith('# top\nhostname = "h"\n\nadmin_password_hash = "z"\n[accounts.a]'))
        self.assertIn('\n[accounts.c]\npassword_hash = "q\\"x"\n', set_toml_key(text, "accounts.c", "password_hash", 'q"x'))


# --- queue administration over the admin API -------------------------------------------------



def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:  # argparse usage errors
            code = int(e.code or 0)
    return code, out.getvalue(), err.getvalue()


class AdminCommandTests(TestCase):
    """The admin commands (run in a thread: they block) against a real admin API."""

    async def setUp(self) -> None:
        self.f = await AdminFixture(self).start()
        self.url = self.f.admin_base

    async def moxtw(self, *args: str, password: str | None = "moxadmin") -> tuple[int, str, str]:
        argv = [*args, "--admin-url", self.url]
        if password is not None:
            argv += ["--admin-password", password]
        return await deferToThread(_run_cli, argv)

    async def ok(self, *args: str) -> str:
        code, out, err = await self.moxtw(*args)
        self.assertEqual(code, 0, err)
        return out

    async def queued(self) -> dict[int, dict[str, Any]]:
        return {m["ID"]: m for m in await self.f.admin("QueueList", {}, {})}

    async def test_list_size_json(self) -> None:
        self.assertEqual(await self.ok("queue", "list"), "no queued messages\n")
        a, b = await self.f.send("alice@localhost", "bob@localhost")
        self.assertEqual(await self.ok("queue", "size"), "2\n")
        lines = (await self.ok("queue", "list", "--asc")).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "QUEUED", "FROM", "TO", "ATTEMPTS", "NEXT", "ATTEMPT", "HOLD",
                                            "LAST", "RESULT"])
        self.assertEqual([line.split()[0] for line in lines[1:]], [str(a), str(b)])
        self.assertIn("mox@localhost", lines[1])
        self.assertIn("alice@localhost", lines[1])
        self.assertIn("(due)", lines[1])
        # Columns are aligned: every row's TO starts where the header's does.
        column = lines[0].index("TO")
        self.assertTrue(all(line[column:].startswith(("alice@", "bob@")) for line in lines[1:]))
        listed = json.loads(await self.ok("queue", "list", "--json", "--to", "bob"))
        self.assertEqual([m["ID"] for m in listed], [b])
        self.assertEqual(listed[0]["RecipientDomain"]["Domain"]["ASCII"], "localhost")
        out = await self.ok("queue", "list", "--id", f"{a},{b}", "--max", "1", "--sort", "queued")
        self.assertEqual(len(out.splitlines()), 2)

    async def test_hold_release_reschedule_requiretls(self) -> None:
        a, b = await self.f.send("alice@localhost", "bob@localhost")
        self.assertEqual(await self.ok("queue", "hold", "--to", "alice@"), "1 message(s) held\n")
        out = await self.ok("queue", "list", "--held")
        self.assertEqual([line.split()[0] for line in out.splitlines()[1:]], [str(a)])
        self.assertIn("held", out)
        self.assertEqual(await self.ok("queue", "release", "--id", str(a)), "1 message(s) released\n")
        self.assertFalse((await self.queued())[a]["Hold"])
        self.assertEqual(len(self.f.changed), 1)

        before = datetime.fromisoformat((await self.queued())[b]["NextAttempt"].replace("Z", "+00:00"))
        self.assertEqual(await self.ok("queue", "reschedule", "--id", str(b), "--add", "90"),
                         "1 message(s) rescheduled\n")
        after = datetime.fromisoformat((await self.queued())[b]["NextAttempt"].replace("Z", "+00:00"))
        self.assertEqual(after - before, timedelta(minutes=90))
        out = await self.ok("queue", "list", "--next-attempt", ">1h")
        self.assertEqual([line.split()[0] for line in out.splitlines()[1:]], [str(b)])
        self.assertEqual(await self.ok("queue", "reschedule", "--id", str(b), "0"), "1 message(s) rescheduled\n")
        self.assertEqual(await self.ok("queue", "list", "--next-attempt", ">1h"), "no queued messages\n")

        self.assertEqual(await self.ok("queue", "requiretls", "--id", str(a), "yes"), "1 message(s) updated\n")
        self.assertEqual(await self.ok("queue", "requiretls", "--id", str(b), "no"), "1 message(s) updated\n")
        q = await self.queued()
        self.assertEqual((q[a]["RequireTLS"], q[b]["RequireTLS"]), (True, False))
        await self.ok("queue", "requiretls", "default")
        q = await self.queued()
        self.assertEqual((q[a]["RequireTLS"], q[b]["RequireTLS"]), (None, None))

    async def test_fail_and_drop_need_a_filter_or_all(self) -> None:
        a, b, c = await self.f.send("a@localhost", "b@localhost", "c@localhost")
        for verb in ("fail", "drop"):
            code, out, err = await self.moxtw("queue", verb)
            self.assertEqual(code, 2)
            self.assertIn(f"would {verb} every queued message", err)
            self.assertIn("--all", err)
            code, _, err = await self.moxtw("queue", verb, "--all", "--id", str(a))
            self.assertEqual(code, 2)
            self.assertIn("cannot be combined", err)
            # --max alone selects nothing.
            code, _, _ = await self.moxtw("queue", verb, "--max", "1")
            self.assertEqual(code, 2)
        self.assertEqual(sorted(await self.queued()), [a, b, c])
        self.assertEqual(await self.ok("queue", "fail", "--id", str(a)), "1 message(s) marked as failed\n")
        self.assertEqual(await self.ok("queue", "drop", "--all"), "2 message(s) dropped\n")
        self.assertEqual(await self.queued(), {})
        out = await self.ok("retired", "list", "--asc")
        rows = [line.split() for line in out.splitlines()[1:]]
        self.assertEqual([r[0] for r in rows], [str(a), str(b), str(c)])
        self.assertIn("not delivered", out)
        self.assertIn("delivery canceled by admin", out)
        retired = json.loads(await self.ok("retired", "list", "--json", "--not-delivered", "--to", "a@"))
        self.assertEqual([r["ID"] for r in retired], [a])
        self.assertEqual(await self.ok("retired", "list", "--delivered"), "no retired messages\n")

    async def test_holdrules(self) -> None:
        (a,) = await self.f.send("a@localhost")
        self.assertEqual(await self.ok("holdrules", "list"), "no hold rules\n")
        out = await self.ok("holdrules", "add", "--recipient-domain", "LocalHost")
        m = re.fullmatch(r"hold rule (\d+) added \(account \*, sender domain \*, recipient domain localhost\); .*\n", out)
        assert m is not None, out
        rule_id = m.group(1)
        self.assertTrue((await self.queued())[a]["Hold"])
        lines = (await self.ok("holdrules", "list")).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "ACCOUNT", "SENDER", "DOMAIN", "RECIPIENT", "DOMAIN"])
        self.assertEqual(lines[1].split(), [rule_id, "*", "*", "localhost"])
        rules = json.loads(await self.ok("holdrules", "list", "--json"))
        self.assertEqual([r["ID"] for r in rules], [int(rule_id)])
        out = await self.ok("holdrules", "remove", rule_id)
        self.assertIn(f"hold rule {rule_id} removed; messages it held stay held", out)
        self.assertTrue((await self.queued())[a]["Hold"])
        code, _, err = await self.moxtw("holdrules", "remove", rule_id)
        self.assertEqual((code, err), (1, f"moxtw: no hold rule with ID {rule_id}\n"))
        code, _, err = await self.moxtw("holdrules", "add", "--sender-domain", "not a domain")
        self.assertEqual(code, 1)
        self.assertIn("parsing sender domain 'not a domain'", err)

    async def test_errors(self) -> None:
        code, out, err = await self.moxtw("queue", "list", password="wrong-password")
        self.assertEqual((code, out), (1, ""))
        self.assertIn("admin authentication failed", err)
        self.assertIn("--admin-password or $MOXTW_ADMIN_PASSWORD", err)
        code, _, err = await self.moxtw("queue", "list", "--submitted", "yesterday")
        self.assertEqual(code, 1)
        self.assertIn("Submitted filter 'yesterday' must start with < or >", err)
        code, _, err = await self.moxtw("queue", "list", "--id", "x")
        self.assertEqual(code, 2)
        self.assertIn("expected message IDs", err)
        url, self.url = self.url, f"http://127.0.0.1:{free_port()}/admin/api/"
        code, _, err = await self.moxtw("queue", "size")
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the moxtw admin API at http://127.0.0.1:", err)
        self.assertIn("is moxtw running?", err)
        self.url = url.replace("/admin/api/", "/elsewhere/")
        code, _, err = await self.moxtw("queue", "size")
        self.assertEqual(code, 1)
        self.assertIn("HTTP 404", err)

    async def test_password_from_environment(self) -> None:
        self.addCleanup(os.environ.pop, "MOXTW_ADMIN_PASSWORD", None)
        os.environ["MOXTW_ADMIN_PASSWORD"] = "wrong-password"
        code, _, err = await self.moxtw("queue", "size", password=None)
        self.assertEqual(code, 1)
        self.assertIn("authentication failed", err)
        os.environ["MOXTW_ADMIN_PASSWORD"] = "moxadmin"
        self.assertEqual(await self.moxtw("queue", "size", password=None), (0, "0\n", ""))


class HookCommandTests(TestCase):
    """``moxtw hooks list|size|retired|reschedule|cancel`` against a real admin API with
    account mox's webhooks (sent by the daemon's webhook service to a StubTreq receiver)."""

    async def setUp(self) -> None:
        self.f = await HookFixture(self).start()
        self.url = self.f.admin_base

    moxtw = AdminCommandTests.moxtw
    ok = AdminCommandTests.ok

    @staticmethod
    def ids(out: str) -> list[str]:
        return [line.split()[0] for line in out.splitlines()[1:]]

    async def test_list_size_json(self) -> None:
        self.assertEqual(await self.ok("hooks", "list"), "no queued webhooks\n")
        self.assertEqual(await self.ok("hooks", "size"), "0\n")
        ha, hb, inc = await self.f.queue_hooks()
        self.assertEqual(await self.ok("hooks", "size"), "3\n")
        lines = (await self.ok("hooks", "list", "--asc")).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "SUBMITTED", "ACCOUNT", "EVENT", "MSG", "ATTEMPTS", "NEXT",
                                            "ATTEMPT", "LAST", "RESULT"])
        self.assertEqual(self.ids("\n".join(lines)), [str(ha), str(hb), str(inc)])
        ((hook,),) = [await self.f.admin("HookList", {"IDs": [ha]}, {})]
        a = lines[1].split()  # ID, date and time, ...
        self.assertEqual(a[3:7], ["mox", "canceled", str(hook["QueueMsgID"]), "0"])
        self.assertIn("(due)", lines[1])
        self.assertEqual(lines[3].split()[3:7], ["mox", "incoming", "-", "0"])
        # Columns are aligned.
        column = lines[0].index("EVENT")
        self.assertTrue(all(line[column:].startswith(("canceled", "incoming")) for line in lines[1:]))

        listed = json.loads(await self.ok("hooks", "list", "--json", "--event", "incoming"))
        self.assertEqual([h["ID"] for h in listed], [inc])
        self.assertEqual(listed[0]["IsIncoming"], True)
        out = await self.ok("hooks", "list", "--id", f"{ha},{inc}", "--max", "1", "--sort", "submitted")
        self.assertEqual(self.ids(out), [str(inc)])
        self.assertEqual(self.ids(await self.ok("hooks", "list", "--account", "mox", "--submitted", ">-1h",
                                                "--next-attempt", "<1m", "--id", str(hb))), [str(hb)])  # fmt: skip

        # After a refused attempt: the answer and the time of the next attempt.
        self.f.receiver.answers["hooks.example"] = lambda r: 500
        await self.f.deliver()
        line = (await self.ok("hooks", "list", "--id", str(ha))).splitlines()[1]
        self.assertEqual(line.split()[6], "1")
        self.assertIn('http status "500 Internal Server Error", expected 2xx', line)
        self.assertRegex(line, r"\(in (1m|\d+s)\)")

    async def test_reschedule_cancel_retired(self) -> None:
        ha, hb, inc = await self.f.queue_hooks()
        self.assertEqual(await self.ok("hooks", "reschedule", "--id", str(ha), "--add", "30"),
                         "1 webhook(s) rescheduled\n")  # fmt: skip
        self.assertEqual(len(self.f.changed), 1)
        self.assertEqual(self.ids(await self.ok("hooks", "list", "--next-attempt", ">20m")), [str(ha)])
        self.assertEqual(await self.ok("hooks", "reschedule", "--event", "incoming", "90", "--json"), "1\n")
        self.assertEqual(self.ids(await self.ok("hooks", "list", "--next-attempt", ">1h")), [str(inc)])
        self.assertEqual(await self.ok("hooks", "reschedule", "0", "--set"), "3 webhook(s) rescheduled\n")
        self.assertEqual(await self.ok("hooks", "list", "--next-attempt", ">1m"), "no queued webhooks\n")

        code, _, err = await self.moxtw("hooks", "cancel")
        self.assertEqual(code, 2)
        self.assertIn("hooks cancel without filter flags would cancel every queued webhook", err)
        self.assertIn("--all", err)
        code, _, err = await self.moxtw("hooks", "cancel", "--all", "--event", "canceled")
        self.assertEqual(code, 2)
        self.assertIn("--all cannot be combined with filter flags", err)
        code, _, _ = await self.moxtw("hooks", "cancel", "--max", "1")
        self.assertEqual(code, 2)
        self.assertEqual(await self.ok("hooks", "size"), "3\n")

        self.assertEqual(await self.ok("hooks", "cancel", "--event", "canceled"), "2 webhook(s) canceled\n")
        self.assertEqual(await self.ok("hooks", "cancel", "--id", str(ha)), "0 webhook(s) canceled\n")
        # The incoming webhook goes out (answered 200).
        await self.f.deliver()
        self.assertEqual(await self.ok("hooks", "size"), "0\n")
        lines = (await self.ok("hooks", "retired", "--asc", "--sort", "submitted")).splitlines()
        self.assertEqual(lines[0].split(), ["ID", "LAST", "ACTIVITY", "ACCOUNT", "EVENT", "MSG", "ATTEMPTS",
                                            "OUTCOME", "LAST", "RESULT"])
        self.assertEqual(self.ids("\n".join(lines)), [str(ha), str(hb), str(inc)])
        self.assertIn("canceled  ", lines[1])
        self.assertTrue(lines[1].endswith("canceled by admin"), lines[1])
        self.assertIn("delivered", lines[3])
        self.assertTrue(lines[3].endswith("HTTP 200 ok"), lines[3])
        retired = json.loads(await self.ok("hooks", "retired", "--json", "--event", "incoming"))
        self.assertEqual([(h["ID"], h["Success"]) for h in retired], [(inc, True)])
        self.assertEqual(self.ids(await self.ok("hooks", "retired", "--last-activity", ">-1h", "--max", "1")),
                         [str(inc)])  # fmt: skip
        self.assertEqual(await self.ok("hooks", "retired", "--last-activity", "<-1h"), "no retired webhooks\n")

    async def test_superseded_outcome(self) -> None:
        old = await self.f.event("delayed", 5)
        new = await self.f.event("failed", 5)
        await self.f.deliver()
        out = await self.ok("hooks", "retired", "--id", str(old))
        self.assertIn(f"superseded by {new}", out)
        self.f.receiver.answers["hooks.example"] = lambda r: 500
        await self.f.event("failed", 6)
        await self.f.deliver()
        await self.ok("hooks", "reschedule", "--event", "failed", "0")
        await self.f.deliver()
        self.assertEqual(await self.ok("hooks", "cancel", "--event", "failed"), "1 webhook(s) canceled\n")
        line = (await self.ok("hooks", "retired", "--event", "failed", "--max", "1")).splitlines()[1]
        self.assertEqual(line.split()[6:8], ["2", "canceled"])

    async def test_errors(self) -> None:
        code, _, err = await self.moxtw("hooks", "list", "--event", "sent")
        self.assertEqual(code, 2)
        self.assertIn("invalid choice: 'sent'", err)
        code, _, err = await self.moxtw("hooks", "retired", "--submitted", "yesterday")
        self.assertEqual(code, 1)
        self.assertIn("Submitted filter 'yesterday' must start with < or >", err)
        code, _, err = await self.moxtw("hooks", "list", password="wrong-password")
        self.assertEqual(code, 1)
        self.assertIn("admin authentication failed", err)
        code, _, err = await self.moxtw("hooks", "retired", "--next-attempt", "<now")
        self.assertEqual(code, 2)
        self.assertIn("unrecognized arguments: --next-attempt", err)


class HookReceiver(resource.Resource):
    """A webhook receiver on loopback: records the bodies, answers ``code``."""

    isLeaf = True

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code
        self.bodies: list[dict[str, Any]] = []

    def render_POST(self, request: server.Request) -> bytes:
        assert request.content is not None
        self.bodies.append(json.loads(request.content.read()))
        request.setResponseCode(self.code)
        return b"not now"


class ConsoleScriptTests(TestCase):
    """The installed ``moxtw`` command against a real daemon (localserve configuration,
    with a webapi worker process that serves part of the admin requests)."""

    timeout = 120

    async def moxtw(self, *args: str) -> tuple[int, str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MOXTW_ADMIN_PASSWORD": "moxadmin"}
        script = str(Path(sys.executable).parent / "moxtw")
        out, err, code = await getProcessOutputAndValue(
            script, [*args, "--admin-url", self.url], env=env, path=str(ROOT)
        )
        return code, out.decode(), err.decode()

    async def test_queue_commands_on_a_running_daemon(self) -> None:
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
        await daemon.wait_for_output("worker 0: ")
        self.url = f"http://127.0.0.1:{ports['http']}/admin/api/"

        # Three messages due in an hour.
        client = http_client(self)
        later = (datetime.now().astimezone() + timedelta(hours=1)).replace(microsecond=0).isoformat()
        request = {"To": [{"Address": f"r{i}@localhost"} for i in range(3)], "Text": "hi", "FutureRelease": later}
        response = await client.post(f"http://127.0.0.1:{ports['http']}/webapi/v0/Send",
                                      data={"request": json.dumps(request)}, auth=("mox@localhost", "moxmoxmox"))
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)
        ids = [s["QueueMsgID"] for s in body["Submissions"]]

        code, out, err = await self.moxtw("queue", "list", "--json")
        self.assertEqual(code, 0, err)
        self.assertEqual(sorted(m["ID"] for m in json.loads(out)), ids)
        code, out, err = await self.moxtw("queue", "drop")
        self.assertEqual(code, 2)
        self.assertIn("--all", err)

        # Rescheduled to now, one connection each (the worker or the main process may
        # serve it): the queue is kicked and delivers them at once, not in an hour.
        for msg_id in ids:
            code, out, err = await self.moxtw("queue", "reschedule", "0", "--id", str(msg_id))
            self.assertEqual((code, out), (0, "1 message(s) rescheduled\n"), err)
        for _ in range(400):
            code, out, err = await self.moxtw("retired", "list", "--json", "--delivered")
            self.assertEqual(code, 0, err)
            if len(json.loads(out)) == 3:
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(sorted(m["ID"] for m in json.loads(out)), ids, daemon.output)
        code, out, err = await self.moxtw("queue", "size")
        self.assertEqual((code, out), (0, "0\n"), err)

        env_url, self.url = self.url, self.url.replace(str(ports["http"]), str(free_port()))
        code, out, err = await self.moxtw("queue", "size")
        self.assertEqual(code, 1)
        self.assertIn("cannot reach the moxtw admin API", err)
        self.url = env_url
        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)

    async def test_hooks_commands_on_a_running_daemon(self) -> None:
        """A webhook the receiver refuses stays queued; ``moxtw hooks list`` shows it with
        its attempt; rescheduled to now it goes out at once (the admin API kicks the
        webhook sender) and is listed as retired."""
        receiver = HookReceiver(code=503)
        site = server.Site(receiver)
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        hook_url = f"http://127.0.0.1:{listening.getHost().port}/hooks"

        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        text = path.read_text()
        ports = {n: free_port() for n in ("smtp", "submission", "submissions", "http", "metrics")}
        for name, port in ports.items():
            text = re.sub(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        path.write_text(text)
        daemon = Daemon(self, "localserve", "--dir", str(directory), "--outgoing-webhook", hook_url).start()
        await daemon.wait_for_port(ports["http"])
        await daemon.wait_for_port(ports["smtp"])
        self.url = f"http://127.0.0.1:{ports['http']}/admin/api/"

        client = http_client(self)
        request = {"To": [{"Address": "hooked@localhost"}], "Text": "hi"}
        response = await client.post(f"http://127.0.0.1:{ports['http']}/webapi/v0/Send",
                                      data={"request": json.dumps(request)}, auth=("mox@localhost", "moxmoxmox"))
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)
        (msg_id,) = [s["QueueMsgID"] for s in body["Submissions"]]

        # Delivered; its webhook is refused and waits for its next attempt (in a minute).
        hooks: list[dict[str, Any]] = []
        for _ in range(400):
            code, out, err = await self.moxtw("hooks", "list", "--json")
            self.assertEqual(code, 0, err)
            hooks = json.loads(out)
            if hooks and hooks[0]["Results"] and hooks[0]["Results"][-1]["Code"]:
                break
            await deferLater(reactor, 0.05, lambda: None)
        (hook,) = hooks
        self.assertEqual((hook["QueueMsgID"], hook["OutgoingEvent"], hook["URL"], hook["Attempts"]),
                         (msg_id, "delivered", hook_url, 1), daemon.output)  # fmt: skip
        self.assertEqual(hook["Results"][0]["Response"], "not now")
        code, out, err = await self.moxtw("hooks", "list")
        self.assertEqual(code, 0, err)
        header, row = out.splitlines()
        self.assertTrue(header.startswith("ID "), out)
        self.assertEqual(row.split()[:1] + row.split()[3:7], [str(hook["ID"]), "mox", "delivered", str(msg_id), "1"])
        self.assertIn('http status "503 Service Unavailable", expected 2xx', row)
        code, out, err = await self.moxtw("hooks", "cancel")
        self.assertEqual(code, 2)

        receiver.code = 200
        code, out, err = await self.moxtw("hooks", "reschedule", "0", "--id", str(hook["ID"]))
        self.assertEqual((code, out), (0, "1 webhook(s) rescheduled\n"), err)
        for _ in range(400):
            code, out, err = await self.moxtw("hooks", "retired", "--json")
            self.assertEqual(code, 0, err)
            if json.loads(out):
                break
            await deferLater(reactor, 0.05, lambda: None)
        (retired,) = json.loads(out)
        self.assertEqual((retired["ID"], retired["Success"], retired["Attempts"]), (hook["ID"], True, 2), daemon.output)
        self.assertEqual([b["Event"] for b in receiver.bodies], ["delivered", "delivered"])
        code, out, err = await self.moxtw("hooks", "size")
        self.assertEqual((code, out), (0, "0\n"), err)
        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)
