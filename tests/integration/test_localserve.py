"""A real ``twistd -n moxtw localserve`` process: listens, writes its config, restarts from it."""

from __future__ import annotations

import signal
import tomllib
from pathlib import Path

from twisted.trial.unittest import TestCase

from moxtw.localserve import PORTS
from tests.helpers import Daemon, free_port, http_client, port_open


class LocalserveProcessTests(TestCase):
    timeout = 120

    async def test_start_config_restart_sigterm(self) -> None:
        busy = [p for p in PORTS.values() if port_open(p)]
        if busy:
            self.skipTest(f"localserve's ports are in use here: {busy}")
        directory = Path(self.mktemp()).absolute()
        daemon = Daemon(self, "localserve", "--dir", str(directory)).start()
        for name in ("http", "metrics", "smtp", "submission", "submissions"):
            await daemon.wait_for_port(PORTS[name])

        client = http_client(self)
        response = await client.get(f"http://127.0.0.1:{PORTS['metrics']}/metrics")
        self.assertEqual(response.code, 200)
        await response.content()

        config_path = directory / "moxtw.toml"
        text = config_path.read_text()
        self.assertIn("# Password for all login addresses of this account", text)
        config = tomllib.loads(text)
        self.assertEqual(config["accounts"]["mox"]["addresses"], ["mox@localhost", "@localhost"])
        self.assertIn("mox@localhost / moxmoxmox", daemon.output)
        self.assertIn(await daemon.stop(), (0, -signal.SIGTERM), daemon.output)
        self.assertIn("Server Shut Down.", daemon.output)
        self.assertFalse(port_open(PORTS["http"]))
        self.assertNotIn("Traceback", daemon.output)

        # The second start reads the (edited) file instead of writing a new one.
        http, metrics = free_port(), free_port()
        edited = text
        for name, port in (("http", http), ("metrics", metrics)):
            edited = edited.replace(f"tcp:{PORTS[name]}:", f"tcp:{port}:").replace(f"tcp6:{PORTS[name]}:", f"tcp6:{port}:")
        config_path.write_text(edited)
        again = Daemon(self, "localserve", "--dir", str(directory)).start()
        await again.wait_for_port(http)
        await again.wait_for_port(metrics)
        self.assertNotIn("wrote new configuration", again.output)
        self.assertEqual(config_path.read_text(), edited)
        self.assertIn(await again.stop(), (0, -signal.SIGTERM), again.output)
        self.assertNotIn("Traceback", again.output)

    async def test_bad_config_exits_1(self) -> None:
        path = Path(self.mktemp()).absolute()
        path.write_text('hostname = "x"\ndata_dir = "d"\n[accounts.a]\nkeep_retired_messages = "soon"\n')
        daemon = Daemon(self, "--config", str(path)).start()
        code = await daemon.proto.ended
        self.assertEqual(code, 1)
        self.assertIn('accounts.a.keep_retired_messages: expected a duration such as "72h", got "soon"', daemon.output)
        self.assertIn("accounts.a.domain: missing required", daemon.output)

    async def test_busy_port_stops_startup(self) -> None:
        import socket

        directory = Path(self.mktemp()).absolute()
        from moxtw.localserve import ensure_config

        path, _ = ensure_config(directory)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            busy = s.getsockname()[1]
            text = path.read_text()
            text = "\n".join(
                line.split("=")[0] + f'= ["tcp:{busy}:interface=127.0.0.1"]' if line.startswith("http =") else
                (line.split("=")[0] + f'= ["tcp:{free_port()}:interface=127.0.0.1"]' if line.split(" ")[0] in ("smtp", "submission", "submissions", "metrics") else line)
                for line in text.splitlines()
            )
            path.write_text(text)
            daemon = Daemon(self, "--config", str(path)).start()
            code = await daemon.proto.ended
        self.assertNotEqual(code, 0)
        self.assertIn("Address already in use", daemon.output)
