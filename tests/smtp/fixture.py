"""SMTP test fixture: real localserve config, real SQLite store, in-memory connections."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.protocols.basic import LineOnlyReceiver
from twisted.test import iosim

from moxtw.accounts import Accounts
from moxtw.config import Config, load_config
from moxtw.localserve import ensure_config
from moxtw.ratelimit import failed_auth_limiter
from moxtw.smtp import build_smtp_factories, tls_context_from_config
from moxtw.smtp.incoming import IncomingMessage
from moxtw.store import sqlite_store

PASSWORD = "moxmoxmox"


class FakeVerifier:
    """Checks passwords without scrypt (the real one is used in the integration tests)."""

    def __init__(self, password: str = PASSWORD) -> None:
        self.password = password

    async def verify(self, password: str, encoded: str) -> bool:
        return password == self.password


class FakeTLS:
    """Stands in for a pyOpenSSL context factory with iosim's pretend TLS."""

    def iosimVerify(self, other: object) -> bool:
        return True


def iosim_tls(config: Config) -> Any:
    """The real server context from the localserve certificate, usable with iosim's pretend
    TLS on STARTTLS (the implicit-TLS factory still gets a real context)."""
    options = tls_context_from_config(config)
    options.iosimVerify = lambda other: True  # type: ignore[union-attr]
    return options


class ReplyClient(LineOnlyReceiver):
    """A minimal SMTP client: sends raw lines, collects complete replies."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self._partial: list[bytes] = []
        self.lost = False

    def lineReceived(self, line: bytes) -> None:
        self._partial.append(line)
        if line == b"220 2.0.0 ok":  # our STARTTLS was accepted
            self.transport.startTLS(FakeTLS())
        if line[3:4] != b"-":
            self.replies.append(b"\n".join(self._partial))
            self._partial = []

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True


class SMTPFixture:
    def __init__(self, testcase: Any, edit: Any = None, **factory_kwargs: Any) -> None:
        self.testcase = testcase
        directory = Path(testcase.mktemp()).absolute()
        path, _ = ensure_config(directory)
        if edit is not None:
            path.write_text(edit(path.read_text()))
        self.config: Config = load_config(path)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = sqlite_store(self.config.data_dir, reactor)
        self.store.open()
        testcase.addCleanup(lambda: Deferred.fromCoroutine(self.store.close()))
        self.accounts = Accounts.from_config(self.config)
        self.delivered: list[IncomingMessage] = []
        self.deliver_error: Exception | None = None
        kwargs: dict[str, Any] = {"bad_auth_delay": 0.0, "command_timeout": 300.0, "tls_context_factory": iosim_tls(self.config)}
        kwargs.update(factory_kwargs)
        self.factories = build_smtp_factories(
            self.config,
            self.accounts,
            self.store,
            FakeVerifier(),  # type: ignore[arg-type]
            self.clock,
            self._deliver,
            auth_limiter=failed_auth_limiter(self.clock),
            **kwargs,
        )

    async def _deliver(self, message: IncomingMessage) -> None:
        if self.deliver_error is not None:
            raise self.deliver_error
        self.delivered.append(message)

    def connect(self, factory: Any, ip: str = "192.0.2.10") -> Connection:
        server = factory.buildProtocol(IPv4Address("TCP", ip, 4321))
        client = ReplyClient()
        server_addr = IPv4Address("TCP", "127.0.0.1", 25)
        client_addr = IPv4Address("TCP", ip, 4321)
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, isServer=True, hostAddress=server_addr, peerAddress=client_addr),
            client,
            iosim.FakeTransport(client, isServer=False, hostAddress=client_addr, peerAddress=server_addr),
            clock=self.clock,
        )
        conn = Connection(server, client, pump)
        self.testcase.addCleanup(conn.close)
        return conn

    async def queue_rows(self) -> list[dict[str, Any]]:
        def read(cursor: Any) -> list[dict[str, Any]]:
            cursor.execute("SELECT * FROM queue_msg ORDER BY id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return await self.store.db.run("rows", read)


class Connection:
    def __init__(self, server: Any, client: ReplyClient, pump: iosim.IOPump) -> None:
        self.server = server
        self.client = client
        self.pump = pump
        pump.flush()

    def send(self, *lines: str | bytes) -> None:
        for line in lines:
            self.client.sendLine(line.encode() if isinstance(line, str) else line)
        self.pump.flush()

    async def replies(self, n: int, timeout: float = 10.0) -> list[bytes]:
        """Wait (on the real reactor: the store commits in threads) for n more replies."""
        waited = 0.0
        while len(self.client.replies) < n:
            if waited > timeout:
                raise AssertionError(f"waiting for {n} replies, have {self.client.replies!r}")
            await deferLater(reactor, 0.005, lambda: None)
            waited += 0.005
            self.pump.flush()
        return self.client.replies[:n]

    async def command(self, *lines: str | bytes) -> bytes:
        """Send lines, return the last reply they caused."""
        have = len(self.client.replies)
        self.send(*lines)
        got = await self.replies(have + len(lines))
        return got[-1]

    def close(self) -> None:
        if not self.client.lost:
            self.client.transport.loseConnection()
            self.pump.flush()
