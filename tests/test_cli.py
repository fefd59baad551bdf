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

from moxtw import cli
from moxtw.cli import set_toml_key
from moxtw.config import load_config
from moxtw.localserve import ensure_config
from moxtw.passwords import verify_password
from tests.admin.fixture import AdminFixture
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
