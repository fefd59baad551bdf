"""Extra reactor processes serving the webapi on the daemon's own HTTP sockets.

One Python reactor thread tops out at roughly 600 webapi calls a second.  With
``[webapi] workers = N`` the daemon starts N worker processes that listen on the same
HTTP addresses with ``SO_REUSEPORT`` and serve the same webapi over the same store, so
the kernel spreads connections over N + 1 reactors.  SQLite serialises their commits (WAL,
one writer at a time); a shared PostgreSQL store will do the same for several machines.

Workers only serve HTTP.  The queue, webhooks and SMTP stay in the main process, which a
worker tells about newly queued messages by writing ``q`` on its standard output.  After
each configuration reload the main process writes the configuration text it applied to
every worker's standard input (:mod:`moxtw.settings`).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.application.service import Service
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import metrics

#: Seconds to wait before restarting a worker that exited unexpectedly.
RESTART_DELAY = 1.0
#: Seconds a worker gets to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0


class _WorkerProtocol(protocol.ProcessProtocol):
    log = Logger()

    def __init__(self, owner: HTTPWorkers, number: int) -> None:
        self.owner = owner
        self.number = number
        self.ended: Deferred[None] = Deferred()
        self._err = b""

    def outReceived(self, data: bytes) -> None:
        if b"q" in data:
            self.owner.on_queued()
        # "c": the worker changed the configuration file and waits for a reload
        # (moxtw.settings), one answer per request.
        for _ in range(data.count(b"c")):
            self.owner.on_reload_request(self.number)
        # "d": an admin asked for a DNSBL check now (the web page's "Check now").
        if b"d" in data:
            self.owner.on_dnsbl_check()

    def errReceived(self, data: bytes) -> None:
        self._err += data
        *lines, self._err = self._err.split(b"\n")
        for line in lines:
            if line.strip():
                self.log.info("worker {number}: {line}", number=self.number, line=line.decode("utf-8", "replace"))

    def processEnded(self, reason: Failure) -> None:
        self.ended.callback(None)
        self.owner._ended(self, reason)


def reuseport_socket(host: str, port: int, family: int, backlog: int = 50) -> socket.socket:
    """A listening, non-blocking TCP socket with ``SO_REUSEPORT``.

    Several processes that each bind such a socket to the same address share the port,
    and the kernel balances new connections between them.
    """
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class ReusePortListener(Service):
    """Listens on a ``tcp:``/``tcp6:`` endpoint string with ``SO_REUSEPORT``.

    Used for the HTTP listeners when worker processes share them.  Like
    ``strports.service``, a port that cannot be bound stops startup.
    """

    log = Logger()

    def __init__(self, description: str, factory: Any, reactor: Any) -> None:
        from twisted.internet.endpoints import _parseServer

        if not description.startswith(("tcp:", "tcp6:")):
            raise ValueError(f"workers need tcp: or tcp6: HTTP listeners, not {description!r}")
        _, args, kw = _parseServer(description, None)
        port = args[0]
        self.family = socket.AF_INET6 if description.startswith("tcp6:") else socket.AF_INET
        self.host = kw.get("interface") or ("::" if self.family == socket.AF_INET6 else "0.0.0.0")
        self.port = int(port)
        self.backlog = int(kw.get("backlog", 50))
        self.factory = factory
        self.reactor = reactor
        self.listening: Any = None

    def privilegedStartService(self) -> None:
        # SO_REUSEPORT would let us share a port with another daemon that is still (or
        # already) running; binding once without it first makes a busy port an error.
        probe = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            if self.family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.host, self.port))
            self.port = probe.getsockname()[1]
        except OSError as e:
            raise CannotListenError(self.host, self.port, e) from None
        finally:
            probe.close()
        sock = reuseport_socket(self.host, self.port, self.family, self.backlog)
        try:
            self.listening = self.reactor.adoptStreamPort(sock.fileno(), self.family, self.factory)
        finally:
            sock.close()
        self.port = self.listening.getHost().port
        Service.privilegedStartService(self)

    def startService(self) -> None:
        if self.listening is None:
            self.privilegedStartService()
        Service.startService(self)

    def stopService(self) -> Deferred[None] | None:
        Service.stopService(self)
        if self.listening is not None:
            listening, self.listening = self.listening, None
            result: Deferred[None] | None = listening.stopListening()
            return result
        return None

    @property
    def address(self) -> str:
        return f"{self.host}|{self.port}|{'6' if self.family == socket.AF_INET6 else '4'}"


class HTTPWorkers(Service):
    """Starts ``count`` worker processes that listen on the same HTTP addresses.

    ``listeners`` are the main process's :class:`ReusePortListener` services; they must
    be listening before this service starts (it is added after them).
    """

    log = Logger()
    name = "webapi-workers"

    def __init__(self, config_path: str, listeners: list[ReusePortListener], count: int, reactor: Any) -> None:
        self.config_path = config_path
        self.listeners = listeners
        self.count = count
        self.reactor = reactor
        self.workers: dict[int, _WorkerProtocol] = {}
        self.processes: dict[int, Any] = {}
        self.on_queued: Any = lambda: None
        #: Called with a worker's number when it asks for a configuration reload.
        self.on_reload_request: Any = lambda number: None
        #: Called when a worker asks for a DNSBL check now (moxtw.dnsbl).
        self.on_dnsbl_check: Any = lambda: None
        #: Where workers keep their metrics for the main process's /metrics (see
        #: :mod:`moxtw.metrics`); None: not collected.
        self.metrics_dir: str | None = None

    def startService(self) -> None:
        Service.startService(self)
        if self.metrics_dir is not None:
            metrics.prepare_worker_dir(self.metrics_dir)
        for number in range(self.count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        args = [sys.executable, "-m", "moxtw.worker", "--config", self.config_path, "--number", str(number)]
        for listener in self.listeners:
            args += ["--listen", listener.address]
        proto = _WorkerProtocol(self, number)
        self.workers[number] = proto
        env = dict(os.environ)
        if self.metrics_dir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self.processes[number] = self.reactor.spawnProcess(proto, sys.executable, args, env=env)
        self.log.info("started HTTP worker {number}", number=number)

    def send(self, number: int, data: bytes) -> None:
        """Write ``data`` to worker ``number``'s standard input (dropped if it is gone)."""
        process = self.processes.get(number)
        if process is not None:
            try:
                process.write(data)
            except Exception:  # exited meanwhile; a restarted worker reads the file
                pass

    def broadcast(self, data: bytes) -> None:
        for number in list(self.processes):
            self.send(number, data)

    def _ended(self, proto: _WorkerProtocol, reason: Failure) -> None:
        if self.workers.get(proto.number) is not proto:
            return
        del self.workers[proto.number]
        self.processes.pop(proto.number, None)
        if self.running:
            self.log.warn(
                "HTTP worker {number} exited ({reason}); restarting", number=proto.number, reason=reason.value
            )
            self.reactor.callLater(RESTART_DELAY, self._restart, proto.number)

    def _restart(self, number: int) -> None:
        if self.running and number not in self.workers:
            self._spawn(number)

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        waiting = []
        for number, proto in list(self.workers.items()):
            process = self.processes.get(number)
            if process is None:
                continue
            try:
                process.signalProcess("TERM")
            except Exception:  # already gone
                continue
            timer = self.reactor.callLater(STOP_TIMEOUT, self._kill, process)
            waiting.append((proto.ended, timer))
        for ended, timer in waiting:
            await ended
            if timer.active():
                timer.cancel()

    def _kill(self, process: Any) -> None:
        try:
            process.signalProcess("KILL")
        except Exception:
            pass
