"""``etc/moxtw.service``: ``systemd-analyze verify`` accepts it, and its ExecStart line, run
as is (paths moved to this venv and a quickstart configuration on free loopback ports),
starts the daemon, which logs JSON lines on stdout, serves the webapi, reloads its TLS
certificate on the unit's ExecReload and stops on SIGTERM."""

from __future__ import annotations

import configparser
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from moxtw.cli import set_toml_key
from tests.helpers import ROOT, http_client, port_open
from tests.test_quickstart import credentials, local_config, quickstart

UNIT = ROOT / "etc" / "moxtw.service"
VENV_BIN = str(Path(sys.executable).parent)


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def substitute(text: str, config: Path | None = None) -> str:
    """Unit paths moved to this machine: the venv's bin directory, the test's config."""
    text = text.replace("/opt/moxtw/.venv/bin/", VENV_BIN + "/")
    if config is not None:
        text = text.replace("/etc/moxtw/moxtw.toml", str(config))
    return text


class UnitFileTests(SynchronousTestCase):
    def test_systemd_analyze_verify(self) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not installed on this machine")
        directory = Path(self.mktemp())
        directory.mkdir()
        # The same unit with ExecStart pointing at this venv (verify checks that it exists).
        copy = directory / "moxtw.service"
        copy.write_text(substitute(UNIT.read_text()))
        result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True,
                                timeout=60)
        self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    def test_service_settings(self) -> None:
        service = unit()["Service"]
        self.assertEqual((service["User"], service["Group"]), ("moxtw", "moxtw"))
        self.assertEqual(service["AmbientCapabilities"], "CAP_NET_BIND_SERVICE")
        self.assertEqual(service["ProtectSystem"], "strict")
        self.assertIn("/var/lib/moxtw", service["ReadWritePaths"].split())
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
        argv = shlex.split(service["ExecStart"])
        self.assertEqual(argv[argv.index("--config") + 1], "/etc/moxtw/moxtw.toml")
        self.assertIn("--logger=moxtw.log.json_observer", argv)


class _Output(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.out = bytearray()
        self.err = bytearray()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)

    def events(self) -> list[dict[str, Any]]:
        """Every complete stdout line as JSON (fails the test on a line that is not)."""
        text = self.out.decode("utf-8")
        return [json.loads(line) for line in text.split("\n")[:-1]]


class ExecStartTests(TestCase):
    timeout = 120

    async def wait(self, proto: _Output, what: str, condition: Any) -> None:
        for _ in range(600):
            if condition():
                return
            if proto.ended.called:
                break
            await deferLater(reactor, 0.05, lambda: None)
        raise AssertionError(f"{what}:\nstdout: {proto.out.decode()}\nstderr: {proto.err.decode()}")

    def start(self, config: Path, cwd: Path, prefix: tuple[str, ...] = ()) -> tuple[_Output, Any]:
        """Spawn the unit's ExecStart (after ``prefix``) with its Environment; killed at cleanup."""
        service = unit()["Service"]
        argv = shlex.split(substitute(service["ExecStart"], config))
        self.assertEqual(argv[0], f"{VENV_BIN}/twistd")
        env = dict(os.environ)
        for assignment in shlex.split(service.get("Environment", "")):
            key, _, value = assignment.partition("=")
            env[key] = value
        # The venv's moxtw is an editable install, which twistd's plugin lookup does not
        # see without the source on the path (a normal `pip install` needs nothing).
        env["PYTHONPATH"] = str(ROOT)
        argv = [*prefix, *argv]
        proto = _Output()
        process = reactor.spawnProcess(proto, argv[0], argv, env=env, path=str(cwd))

        def kill() -> Any:
            if not proto.ended.called:
                process.signalProcess("KILL")
                return proto.ended
            return None

        self.addCleanup(kill)
        return proto, process

    async def test_exec_start_runs_the_daemon(self) -> None:
        directory, out = await deferToThread(quickstart, self, "--ip", "127.0.0.1")
        login, password, _ = credentials(out)
        config = directory / "moxtw.toml"
        ports = local_config(self, config)

        service = unit()["Service"]
        proto, process = self.start(config, directory)
        await self.wait(proto, "webapi not listening", lambda: port_open(ports["http"]))

        client = http_client(self)
        request = {"To": [{"Address": "someone@example.net"}], "Text": "hello"}
        response = await client.post(f"http://127.0.0.1:{ports['http']}/webapi/v0/Send",
                                     data={"request": json.dumps(request)}, auth=(login, password))
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)

        # ExecReload, with $MAINPID: the certificate is reloaded, the daemon keeps running.
        reload_argv = shlex.split(service["ExecReload"].replace("$MAINPID", str(process.pid)))
        result = await deferToThread(subprocess.run, reload_argv, capture_output=True, timeout=30)
        self.assertEqual(result.returncode, 0, result.stderr)
        await self.wait(proto, "no TLS reload logged",
                        lambda: any(e.get("how") == "reloaded" for e in proto.events()))
        self.assertTrue(port_open(ports["http"]))

        process.signalProcess("TERM")
        ended = await proto.ended
        # twistd re-raises the signal after a clean shutdown: systemd counts SIGTERM as success.
        self.assertIn(ended.signal or ended.exitCode, (signal.SIGTERM, 0), proto.err.decode())
        events = proto.events()
        self.assertGreater(len(events), 5)
        for event in events:
            self.assertIn("log_time", event)
            self.assertIn("log_namespace", event)
        self.assertTrue(proto.out.decode().endswith("\n"))
        self.assertNotIn("\x1e", proto.out.decode())
        self.assertIn("Main loop terminated.", [e.get("log_format") for e in events])
        self.assertNotIn("Traceback", proto.out.decode() + proto.err.decode())
        self.assertEqual(proto.err.decode(), "")

    async def test_unprivileged_user_with_the_capability(self) -> None:
        """As the unit runs it: an unprivileged user (nobody, for moxtw) with only the
        ambient CAP_NET_BIND_SERVICE and no-new-privileges binds a port below 1024; the
        data directory is locked, so a second daemon on it is refused."""
        setpriv = shutil.which("setpriv")
        if os.geteuid() != 0 or setpriv is None:
            raise SkipTest("needs root and setpriv to switch to an unprivileged user")
        if Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text().strip() != "1024":
            raise SkipTest("ports below 1024 are not privileged on this machine")
        port = next((p for p in range(600, 1000) if not port_open(p) and _bindable(p)), None)
        if port is None:
            raise SkipTest("no free port below 1024")
        service = unit()["Service"]
        self.assertEqual(service["AmbientCapabilities"], "CAP_NET_BIND_SERVICE")
        self.assertEqual(service["NoNewPrivileges"], "yes")

        directory, _ = await deferToThread(quickstart, self)
        config = directory / "moxtw.toml"
        ports = local_config(self, config)
        text = set_toml_key(config.read_text(), "listeners", "smtp", f'["tcp:{port}:interface=127.0.0.1"]', raw=True)
        # No webapi worker processes: a development venv's interpreter may live where the
        # unprivileged user cannot execute it (e.g. pyenv under /root).
        text = set_toml_key(text, "webapi", "workers", "0", raw=True)
        config.write_text(text)
        # As docs/systemd.md says: the configuration readable by the service's group, the
        # data directory owned by its user.
        nobody = pwd.getpwnam("nobody")
        for path in [directory, *directory.rglob("*")]:
            os.chown(path, 0, nobody.pw_gid)
            os.chmod(path, path.stat().st_mode | (0o050 if path.is_dir() else 0o040))
        data_dir = Path(tomllib.loads(text)["data_dir"])
        data_dir.mkdir(parents=True)
        os.chown(data_dir, nobody.pw_uid, nobody.pw_gid)
        # The test's temporary directories (mode 0700) must let it pass.
        for path in {*directory.parents, *data_dir.parents}:
            if path.is_relative_to(Path.cwd()):
                os.chmod(path, path.stat().st_mode | 0o001)

        prefix = (setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups",
                  "--inh-caps=-all,+net_bind_service", "--ambient-caps=-all,+net_bind_service",
                  "--bounding-set=-all,+net_bind_service", "--no-new-privs")
        proto, process = self.start(config, data_dir, prefix)
        await self.wait(proto, f"smtp not listening on privileged port {port}", lambda: port_open(port))
        await self.wait(proto, "webapi not listening", lambda: port_open(ports["http"]))

        second, _ = self.start(config, data_dir, prefix)
        ended = await second.ended
        self.assertEqual(ended.exitCode, 1, second.out.decode())
        self.assertIn("is in use by another moxtw process", (second.out + second.err).decode())

        process.signalProcess("TERM")
        ended = await proto.ended
        self.assertIn(ended.signal or ended.exitCode, (signal.SIGTERM, 0), proto.err.decode())
        self.assertNotIn("Traceback", proto.out.decode() + proto.err.decode())


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
