"""Test helpers: a real moxtw daemon in a subprocess, free loopback ports, HTTP clients."""

from __future__ import annotations

import fcntl
import os
import random
import re
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.web.client import Agent, HTTPConnectionPool

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")


#: Ports handed out by free_port in any test process on this machine, with the time:
#: trial -j runs several processes, and a port one of them was given (and has not bound
#: yet) must not be given to another.
_PORT_REGISTRY = Path(tempfile.gettempdir()) / "moxtw-test-ports"
#: Below Linux's ephemeral range (32768-60999): the kernel never gives these to the
#: outgoing connections the tests make, which could take a port between free_port and
#: the daemon's bind.
_PORT_RANGE = (20000, 32000)
_PORT_HOLD = 300.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on, not handed out to another test process in the
    last 5 minutes, and outside the ephemeral range."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with open(_PORT_REGISTRY, "a+", encoding="ascii") as registry:
        fcntl.flock(registry, fcntl.LOCK_EX)
        registry.seek(0)
        now = time.time()
        recent: dict[int, float] = {}
        for line in registry.read().split("\n"):
            port, _, at = line.partition(" ")
            if port.isdigit() and at and now - float(at) < _PORT_HOLD:
                recent[int(port)] = float(at)
        for _ in range(500):
            port = random.randint(*_PORT_RANGE)
            if port in recent:
                continue
            with socket.socket(family, socket.SOCK_STREAM) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            recent[port] = now
            registry.seek(0)
            registry.truncate()
            registry.write("".join(f"{p} {t}\n" for p, t in recent.items()))
            return port
    raise RuntimeError("no free port found")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


LOCALSERVE_LISTENERS = ("smtp", "submission", "submissions", "http", "metrics")


def localserve_config(
    directory: Path, *, ports: Mapping[str, int] | None = None, unlimited: bool = False
) -> dict[str, int]:
    """localserve's generated configuration in ``directory`` with its listeners on
    127.0.0.1 at ``ports`` (by listener name; default: free ports) and (``unlimited``)
    daily sending limits raised out of the way; returns the ports by listener."""
    from moxtw.localserve import ensure_config

    path, _ = ensure_config(directory)
    text = path.read_text()
    ports = dict(ports) if ports is not None else {name: free_port() for name in LOCALSERVE_LISTENERS}
    for name, port in ports.items():
        text, n = re.subn(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        assert n == 1, f"listener {name} not in the localserve config"
    if unlimited:
        for key in ("max_outgoing_messages_per_day", "max_first_time_recipients_per_day"):
            text, n = re.subn(rf"^{key} = \d+", f"{key} = 100000000", text, flags=re.M)
            assert n == 1, f"{key} not in the localserve config"
    path.write_text(text)
    return ports


class _Collect(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        # twistd re-raises the signal that stopped it after a clean shutdown, so a clean
        # SIGTERM stop ends with -15 (the signal), not 0.
        value = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -(value.signal or 0))


class Daemon:
    """``twistd -n moxtw ARGS`` as a child process, with helpers to wait and stop."""

    def __init__(self, testcase: Any, *args: str) -> None:
        self.args = args
        self.testcase = testcase
        self.proto = _Collect()
        self.process: Any = None

    def start(self) -> Daemon:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        argv = [TWISTD, "-n", "--pidfile=", "moxtw", *self.args]
        self.process = reactor.spawnProcess(self.proto, TWISTD, argv, env=env, path=str(ROOT))
        self.testcase.addCleanup(self.kill)
        return self

    @property
    def output(self) -> str:
        return self.proto.output.decode("utf-8", "replace")

    async def wait_for_port(self, port: int, timeout: float = 20.0) -> None:
        waited = 0.0
        while not port_open(port):
            if self.proto.ended.called:
                raise AssertionError(f"daemon exited before listening on {port}:\n{self.output}")
            if waited > timeout:
                raise AssertionError(f"daemon not listening on {port} after {timeout}s:\n{self.output}")
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    async def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        waited = 0.0
        while text not in self.output:
            if waited > timeout or self.proto.ended.called:
                raise AssertionError(f"{text!r} not in output:\n{self.output}")
            await deferLater(reactor, 0.05, lambda: None)
            waited += 0.05

    async def stop(self, sig: int = signal.SIGTERM) -> int:
        if not self.proto.ended.called:
            self.process.signalProcess(sig)
        return await self.proto.ended

    def kill(self) -> defer.Deferred[Any] | None:
        if self.proto.ended.called:
            return None
        try:
            self.process.signalProcess("KILL")
        except Exception:
            return None
        return self.proto.ended


def http_client(testcase: Any) -> HTTPClient:
    """A treq client with its own pool, closed when the test ends."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.cachedConnectionTimeout = 0.5
    testcase.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool))


__all__ = ["Daemon", "free_port", "http_client", "port_open", "treq"]
