"""Start-up mistakes an operator makes get one clear line and a non-zero exit."""

from __future__ import annotations

import socket
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.helpers import Daemon, localserve_config


class ListenErrorTests(TestCase):
    async def test_port_in_use(self) -> None:
        directory = str(Path(self.mktemp()).absolute())
        ports = localserve_config(Path(directory))
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(taken.close)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", ports["submission"]))
        taken.listen(1)
        daemon = Daemon(self, "localserve", "--dir", directory).start()
        await daemon.wait_for_output("cannot listen", timeout=60)
        code = await daemon.proto.ended
        self.assertNotEqual(code, 0, daemon.output)
        self.assertIn(f"moxtw: cannot listen on 127.0.0.1:{ports['submission']}: ", daemon.output)
        self.assertIn("Address already in use", daemon.output)
        self.assertNotIn("Traceback", daemon.output)
