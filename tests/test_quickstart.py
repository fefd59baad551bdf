"""``moxtw quickstart``: run as a user runs it (a subprocess), its configuration checked by
``moxtw checkconfig`` and run by a real daemon, with the printed credentials."""

from __future__ import annotations

import grp
import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from moxtw.cli import set_toml_key
from moxtw.dkim import load_private_key
from moxtw.dnscheck import dkim_record
from moxtw.passwords import verify_password
from moxtw.quickstart import default_hostname
from tests.delivery.peers import DNSServer
from tests.helpers import ROOT, Daemon, free_port, http_client

MOXTW = [sys.executable, "-m", "moxtw.cli"]

#: A printed DNS record line: NAME. IN TYPE DATA.
RECORD_RE = re.compile(r"^(\S+\.)\s+IN\s+([A-Z]+)\s+(.+)$")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([*MOXTW, *args], capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))


def records(output: str) -> list[tuple[str, str, str]]:
    """Every DNS record line quickstart printed: (name, type, data)."""
    return [m.groups() for line in output.splitlines() if (m := RECORD_RE.match(line.strip()))]  # type: ignore[misc]


def credentials(output: str) -> tuple[str, str, str]:
    """(login, password, admin password) from quickstart's output."""
    login = re.search(r"login (\S+)  password (\S+)", output)
    admin = re.search(r"admin password: (\S+)", output)
    assert login is not None and admin is not None, output
    return login.group(1), login.group(2), admin.group(1)


def txt_value(data: str) -> str:
    """The TXT record's strings, joined."""
    return "".join(re.findall(r'"((?:[^"\\]|\\.)*)"', data))


def quickstart(testcase: Any, *args: str) -> tuple[Path, str]:
    directory = Path(testcase.mktemp()).absolute() / "conf"
    result = run("quickstart", "app@example.org", "--dir", str(directory), *args)
    testcase.assertEqual(result.returncode, 0, result.stderr)
    return directory, result.stdout


def local_config(testcase: Any, path: Path) -> dict[str, int]:
    """Make a quickstart configuration runnable in a test: listeners on free loopback
    ports (returned by name), data in a temporary directory, DNS from a loopback server
    that knows no names (so deliveries fail at once and never ask public DNS)."""
    text = path.read_text()
    ports = {n: free_port() for n in ("smtp", "submission", "submissions", "http", "metrics")}
    for name, port in ports.items():
        text = set_toml_key(text, "listeners", name, f'["tcp:{port}:interface=127.0.0.1"]', raw=True)
    text = set_toml_key(text, None, "data_dir", str(Path(testcase.mktemp()).absolute()))
    dns_server = DNSServer(testcase)
    text = set_toml_key(text, "dns", "nameservers", f'["127.0.0.1:{dns_server.port}"]', raw=True)
    path.write_text(text)
    return ports


class QuickstartTests(SynchronousTestCase):
    def test_config_keys_and_records(self) -> None:
        directory, out = quickstart(self, "--ip", "192.0.2.10", "--ip", "2001:db8::10")
        path = directory / "moxtw.toml"
        check = run("checkconfig", str(path))
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn("ok (1 domain(s), 1 account(s))", check.stdout)

        doc = tomllib.loads(path.read_text())
        login, password, admin_password = credentials(out)
        self.assertEqual(login, "app@example.org")
        account = doc["accounts"]["app"]
        self.assertEqual(account["addresses"][0], "app@example.org")
        self.assertIn("postmaster@example.org", account["addresses"])
        self.assertEqual(account["fromid_login_addresses"], ["app+fromid@example.org"])
        self.assertGreaterEqual(len(password), 20)
        # Only hashes are stored.
        self.assertNotIn(password, path.read_text())
        self.assertNotIn(admin_password, path.read_text())
        self.assertTrue(verify_password(password, account["password_hash"]))
        self.assertTrue(verify_password(admin_password, doc["admin_password_hash"]))
        self.assertEqual(doc["hostname"], "mail.example.org")
        self.assertEqual(doc["listeners"]["smtp"], ["tcp:25", "tcp6:25:interface=2001\\:db8\\:\\:10"])
        self.assertEqual(doc["listeners"]["http"], ["tcp:1080:interface=127.0.0.1"])

        # Two selectors, both signing, keys mode 0600, printed records match the keys.
        dkim = doc["domains"]["example.org"]["dkim"]
        self.assertEqual(len(dkim["sign"]), 2)
        printed = {(n, t): d for n, t, d in records(out)}
        kinds = set()
        for selector in dkim["sign"]:
            key_path = directory / dkim["selectors"][selector]["key_file"]
            self.assertEqual(stat.S_IMODE(key_path.stat().st_mode), 0o600)
            key = load_private_key(key_path)
            kinds.add(key.key_type)
            expected = dkim_record("example.org", selector, key)
            data = printed[(f"{selector}._domainkey.example.org.", "TXT")]
            self.assertEqual(data, expected.data)
            self.assertEqual(txt_value(data), f"v=DKIM1; k={key.key_type}; p={key.public_key}")
        self.assertEqual(kinds, {"rsa", "ed25519"})

        self.assertEqual(printed[("example.org.", "MX")], "10 mail.example.org.")
        self.assertEqual(printed[("mail.example.org.", "A")], "192.0.2.10")
        self.assertEqual(printed[("mail.example.org.", "AAAA")], "2001:db8::10")
        self.assertEqual(txt_value(printed[("example.org.", "TXT")]), "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all")
        self.assertEqual(txt_value(printed[("_dmarc.example.org.", "TXT")]),
                         "v=DMARC1; p=none; rua=mailto:dmarc-reports@example.org")
        self.assertEqual(txt_value(printed[("_smtp._tls.example.org.", "TXT")]),
                         "v=TLSRPTv1; rua=mailto:tls-reports@example.org")
        self.assertRegex(txt_value(printed[("_mta-sts.example.org.", "TXT")]), r"^v=STSv1; id=[0-9T]{15}$")
        self.assertEqual(printed[("10.2.0.192.in-addr.arpa.", "PTR")], "mail.example.org.")
        self.assertIn("mode: testing", out)
        self.assertIn("mx: mail.example.org", out)
        self.assertIn("moxtw does not serve it", out)

    def test_without_ips(self) -> None:
        directory, out = quickstart(self, "--hostname", "MX1.Example.org")
        printed = {(n, t): d for n, t, d in records(out)}
        self.assertEqual(printed[("example.org.", "MX")], "10 mx1.example.org.")
        self.assertEqual(txt_value(printed[("example.org.", "TXT")]), "v=spf1 mx -all")
        self.assertNotIn("A", {t for _, t in printed})
        self.assertNotIn("PTR", {t for _, t in printed})
        self.assertIn("set the PTR record of this server's IPs to mx1.example.org", out)
        doc = tomllib.loads((directory / "moxtw.toml").read_text())
        self.assertEqual(doc["listeners"]["smtp"], ["tcp:25"])
        self.assertEqual(doc["dnsbl"]["ips"], [])

    def test_never_overwrites(self) -> None:
        directory, _ = quickstart(self)
        before = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        result = run("quickstart", "other@example.org", "--dir", str(directory))
        self.assertEqual(result.returncode, 1)
        self.assertIn("not overwriting existing files", result.stderr)
        self.assertIn(str(directory / "moxtw.toml"), result.stderr)
        self.assertEqual({p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}, before)

    def test_bad_arguments(self) -> None:
        directory = Path(self.mktemp()).absolute()
        for args, message in (
            (["not-an-address"], "invalid email address"),
            (["app+x@example.org"], "'+' separates FromIDs"),
            (["app@localhost"], "expected a registered domain"),
            (["app@example.org", "--ip", "300.1.2.3"], "--ip '300.1.2.3': not an IP address"),
            (["app@example.org", "--hostname", "bad_host..x"], "--hostname"),
        ):
            result = run("quickstart", *args, "--dir", str(directory))
            self.assertEqual(result.returncode, 2, (args, result.stderr))
            self.assertIn(message, result.stderr)
            self.assertNotIn("Traceback", result.stderr)
        self.assertFalse(directory.exists())

    def test_setpassword_keeps_owner_group_and_mode(self) -> None:
        """docs/systemd.md: the file is root:moxtw 0640; changing a password as root must
        leave it readable by the service."""
        if os.geteuid() != 0:
            raise SkipTest("needs root to give the file another group")
        directory, _ = quickstart(self)
        path = directory / "moxtw.toml"
        group = grp.getgrnam("nogroup").gr_gid
        os.chown(path, 0, group)
        result = subprocess.run([*MOXTW, "setpassword", "app", "--config", str(path)], input="another-secret\n",
                                capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.assertEqual(result.returncode, 0, result.stderr)
        st = path.stat()
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (0, group, 0o640))
        doc = tomllib.loads(path.read_text())
        self.assertTrue(verify_password("another-secret", doc["accounts"]["app"]["password_hash"]))


class DefaultHostnameTests(SynchronousTestCase):
    def test_fqdn_in_domain(self) -> None:
        self.assertEqual(default_hostname("example.org", "MX1.example.org."), "mx1.example.org")
        self.assertEqual(default_hostname("example.org", "a.b.example.org"), "a.b.example.org")

    def test_fqdn_elsewhere(self) -> None:
        for fqdn in ("vm", "localhost", "example.org", "host.notexample.org", "example.org.evil.test"):
            self.assertEqual(default_hostname("example.org", fqdn), "mail.example.org", fqdn)


class DaemonTests(TestCase):
    """The written configuration runs: a real daemon (ports moved to free loopback ports,
    data in a temporary directory, DNS on a loopback server) accepts the printed
    credentials on the webapi, the FromID login and the admin API."""

    timeout = 120

    async def test_printed_credentials_work(self) -> None:
        directory, out = await deferToThread(quickstart, self, "--ip", "127.0.0.1")
        login, password, admin_password = credentials(out)
        path = directory / "moxtw.toml"
        ports = local_config(self, path)
        check = await deferToThread(run, "checkconfig", str(path))
        self.assertEqual(check.returncode, 0, check.stderr)

        daemon = Daemon(self, "--config", str(path)).start()
        await daemon.wait_for_port(ports["http"])
        await daemon.wait_for_port(ports["submissions"])
        client = http_client(self)
        base = f"http://127.0.0.1:{ports['http']}"
        request = {"To": [{"Address": "someone@example.net"}], "Subject": "hi", "Text": "hello"}

        async def send(user: str, secret: str) -> tuple[int, Any]:
            response = await client.post(f"{base}/webapi/v0/Send", data={"request": json.dumps(request)},
                                         auth=(user, secret))
            body = await response.content()
            return response.code, (json.loads(body) if response.code != 401 else body)

        code, body = await send(login, password)
        self.assertEqual(code, 200, body)
        self.assertEqual(body["Submissions"][0]["Address"], "someone@example.net")
        self.assertEqual(body["Submissions"][0]["FromID"], "")
        self.assertTrue(body["MessageID"].endswith("@mail.example.org>"), body)
        code, body = await send("app+fromid@example.org", password)
        self.assertEqual(code, 200, body)
        self.assertNotEqual(body["Submissions"][0]["FromID"], "")
        code, _ = await send(login, admin_password)
        self.assertEqual(code, 401)

        response = await client.post(f"{base}/admin/api/QueueSize", data=b'{"params": []}',
                                     headers={"Content-Type": ["application/json"]}, auth=("admin", admin_password))
        answer = json.loads(await response.content())
        # The number of queued messages: 0, 1 or 2, depending on how far delivery got.
        self.assertEqual((response.code, list(answer)), (200, ["result"]), answer)
        self.assertIn(answer["result"], (0, 1, 2))
        response = await client.post(f"{base}/admin/api/QueueSize", data=b'{"params": []}',
                                     headers={"Content-Type": ["application/json"]}, auth=("admin", password))
        self.assertEqual(response.code, 401, await response.content())

        self.assertEqual(await daemon.stop(), -15, daemon.output)
        self.assertNotIn("Traceback", daemon.output)


