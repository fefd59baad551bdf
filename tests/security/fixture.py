"""Two accounts, alice and bob, on one daemon: the real webapi, admin API, SMTP listeners,
incoming delivery and webhook sender over one SQLite store, all on loopback, with a real
HTTP webhook receiver.

alice owns ``alice@localhost`` (FromID login ``alice+fromid@localhost``); bob owns
``bob@localhost`` and every address at ``bob.test`` (catch-all; FromID login
``bob+fromid@bob.test``).  Each account's outgoing and incoming webhooks go to its own
paths on the receiver.  Clients can bind any 127.0.0.0/8 source address, so the per-IP
failed-login limiter can be exercised from several "hosts".
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Callable
from typing import Any

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.threadpool import ThreadPool
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.server import Site

from moxtw.inbound import Inbound
from moxtw.passwords import hash_password
from moxtw.smtp import build_smtp_factories
from moxtw.submit import Submitter
from moxtw.webhooks import build_webhooks
from tests.admin.fixture import AdminFixture
from tests.webapi.fixture import Reply
from tests.webhooks.harness import Received, Receiver

ALICE_PASSWORD = "alice-secret-1"
BOB_PASSWORD = "bob-secret-2"
ALICE = ("alice@localhost", ALICE_PASSWORD)
BOB = ("bob@localhost", BOB_PASSWORD)
ALICE_FROMID = ("alice+fromid@localhost", ALICE_PASSWORD)
BOB_FROMID = ("bob+fromid@bob.test", BOB_PASSWORD)


@functools.cache
def _hashes() -> tuple[str, str]:
    return hash_password(ALICE_PASSWORD), hash_password(BOB_PASSWORD)


def two_accounts(hook_base: str) -> Callable[[str], str]:
    """An edit of the localserve configuration: account mox replaced by alice and bob,
    domain bob.test added, localserve off (unknown recipients are refused)."""
    alice_hash, bob_hash = _hashes()

    def edit(text: str) -> str:
        text = text.split("[accounts.mox]", 1)[0]
        text = text.replace("localserve = true", "localserve = false")
        return text + f"""
[domains."bob.test"]
catchall_separators = ["+"]

[accounts.alice]
domain = "localhost"
addresses = ["alice@localhost"]
password_hash = "{alice_hash}"
fromid_login_addresses = ["alice+fromid@localhost"]
keep_retired_messages = "72h"
keep_retired_webhooks = "72h"
[accounts.alice.outgoing_webhook]
url = "{hook_base}/alice/out"
authorization = "Bearer alice-out"
[accounts.alice.incoming_webhook]
url = "{hook_base}/alice/in"
authorization = "Bearer alice-in"

[accounts.bob]
domain = "bob.test"
addresses = ["bob@localhost", "@bob.test"]
password_hash = "{bob_hash}"
fromid_login_addresses = ["bob+fromid@bob.test"]
keep_retired_messages = "72h"
keep_retired_webhooks = "72h"
[accounts.bob.outgoing_webhook]
url = "{hook_base}/bob/out"
authorization = "Bearer bob-out"
[accounts.bob.incoming_webhook]
url = "{hook_base}/bob/in"
authorization = "Bearer bob-in"
"""

    return edit


def client_from(testcase: Any, source_ip: str) -> HTTPClient:
    """A treq client whose connections come from ``source_ip`` (a 127.0.0.0/8 address)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.cachedConnectionTimeout = 0.5
    testcase.addCleanup(pool.closeCachedConnections)
    return HTTPClient(Agent(reactor, pool=pool, bindAddress=(source_ip, 0)))


class SMTPClient(LineOnlyReceiver):
    """A line-level SMTP client over a real connection: send a command, await its reply."""

    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self._partial: list[bytes] = []
        self._waiting: list[defer.Deferred[None]] = []
        self.lost = False

    def lineReceived(self, line: bytes) -> None:
        self._partial.append(line)
        if line[3:4] != b"-":
            self.replies.append(b"\n".join(self._partial))
            self._partial = []
            self._wake()

    def connectionLost(self, reason: Any = None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    async def reply(self, timeout: float = 30.0) -> bytes:
        """The next reply ("" once the connection is gone)."""
        while not self.replies:
            if self.lost:
                return b""
            d: defer.Deferred[None] = defer.Deferred()
            self._waiting.append(d)
            d.addTimeout(timeout, reactor)
            await d
        return self.replies.pop(0)

    async def command(self, *lines: str | bytes) -> bytes:
        """Send ``lines`` (as one write) and return the reply to the last one."""
        data = [line.encode() if isinstance(line, str) else line for line in lines]
        self.transport.write(b"".join(d + b"\r\n" for d in data))
        reply = b""
        for _ in data:
            reply = await self.reply()
        return reply

    async def data(self, message: bytes, *, stuff: bool = True) -> bytes:
        """DATA with ``message`` (dot-stuffed here, lines starting after CRLF only: bare
        CR and LF are sent as they are); the final reply."""
        reply = await self.command("DATA")
        if not reply.startswith(b"354"):
            return reply
        body = re.sub(rb"(^|\r\n)\.", rb"\1..", message) if stuff else message
        if not body.endswith(b"\r\n"):
            body += b"\r\n"
        self.transport.write(body + b".\r\n")
        return await self.reply()

    def close(self) -> None:
        if not self.lost:
            self.transport.loseConnection()


def code(reply: bytes) -> int:
    return int(reply[:3]) if reply[:3].isdigit() else 0


class TwoAccounts(AdminFixture):
    """See the module docstring; :meth:`start` before use."""

    def __init__(self, testcase: Any) -> None:
        self.receiver = Receiver()
        self.hook_port = reactor.listenTCP(0, Site(self.receiver), interface="127.0.0.1")
        testcase.addCleanup(self.hook_port.stopListening)
        self.hook_base = f"http://127.0.0.1:{self.hook_port.getHost().port}"
        super().__init__(testcase, edit=two_accounts(self.hook_base))

    async def start(self) -> TwoAccounts:
        await super().start()
        parts = self.parts
        (self.webhooks,) = build_webhooks(self.config, parts.store, reactor)
        self.webhooks.startService()
        self.testcase.addCleanup(self.webhooks.stopService)
        parts.admin.ops.on_changed = self._changed
        pool = ThreadPool(minthreads=0, maxthreads=2, name="security-inbound")
        pool.start()
        self.testcase.addCleanup(pool.stop)
        self.inbound = Inbound(self.config, parts.store, reactor, pool)
        self.inbound.on_event = self.webhooks.kick
        self.smtp_factories = build_smtp_factories(
            self.config, parts.accounts, parts.store, parts.verifier, reactor, self.inbound,
            auth_limiter=parts.webapi.auth_limiter, plaintext_auth=True, bad_auth_delay=0.0,
            submitter=Submitter(self.config, parts.store),
        )  # fmt: skip
        self.smtp_port = self.listen(self.smtp_factories.smtp)
        self.submission_port = self.listen(self.smtp_factories.submission)
        return self

    def _changed(self) -> None:
        self.changed.append(None)
        self.webhooks.kick()

    def listen(self, factory: Any) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.testcase.addCleanup(port.stopListening)
        return int(port.getHost().port)

    # --- webapi ----------------------------------------------------------------------

    async def call_from(self, client: HTTPClient, method: str, request: Any, auth: Any) -> Reply:
        response = await client.post(self.base + f"v0/{method}", data={"request": json.dumps(request)}, auth=auth)
        return Reply(response.code, response.headers, await response.content())

    async def admin_from(self, client: HTTPClient, method: str, params: list[Any], auth: Any) -> Reply:
        response = await client.post(
            self.admin_base + method,
            data=json.dumps({"params": params}).encode(),
            headers={"content-type": "application/json"},
            auth=auth,
        )
        return Reply(response.code, response.headers, await response.content())

    async def ok(self, method: str, request: Any, auth: Any) -> Any:
        reply = await self.call(method, request, auth=auth)
        assert reply.status == 200, (method, reply.status, reply.body)
        return reply.json if method not in ("MessageRawGet", "MessagePartGet") else reply.body

    async def send_as(self, auth: Any, *recipients: str, **fields: Any) -> dict[str, Any]:
        request = {"To": [{"Address": r} for r in recipients], "Subject": "isolation", "Text": "hi", **fields}
        result: dict[str, Any] = await self.ok("Send", request, auth)
        return result

    # --- SMTP ------------------------------------------------------------------------

    async def smtp(self, port: int, source_ip: str = "127.0.0.1") -> SMTPClient:
        """A connected client (greeting read) from ``source_ip``."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, bindAddress=(source_ip, 0))
        client = await connectProtocol(endpoint, SMTPClient())
        self.testcase.addCleanup(client.close)
        greeting = await client.reply()
        assert greeting.startswith(b"220"), greeting
        return client

    async def deliver(self, mail_from: str, rcpt: str, message: bytes, *, stuff: bool = True) -> bytes:
        """Incoming SMTP (port 25 role): the reply to DATA, or the first refusal."""
        c = await self.smtp(self.smtp_port)
        for line in ("EHLO remote.test", f"MAIL FROM:<{mail_from}>", f"RCPT TO:<{rcpt}>"):
            reply = await c.command(line)
            if not reply.startswith(b"250"):
                c.close()
                return reply
        reply = await c.data(message, stuff=stuff)
        await c.command("QUIT")
        return reply

    async def submit(self, login: tuple[str, str], mail_from: str, rcpt: str, message: bytes, *,
                     stuff: bool = True) -> bytes:
        """SMTP submission with AUTH PLAIN: the reply to DATA, or the first refusal."""
        c = await self.smtp(self.submission_port)
        for line in ("EHLO client.test", auth_plain(*login), f"MAIL FROM:<{mail_from}>", f"RCPT TO:<{rcpt}>"):
            reply = await c.command(line)
            if code(reply) not in (250, 235):
                c.close()
                return reply
        reply = await c.data(message, stuff=stuff)
        await c.command("QUIT")
        return reply

    # --- store snapshots ---------------------------------------------------------------

    async def snapshot(self, account: str) -> dict[str, list[tuple[Any, ...]]]:
        """Every stored row of ``account``: each table with an account column, plus the
        attempts of its queued/retired messages and of its webhooks."""

        def read(cursor: Any) -> dict[str, list[tuple[Any, ...]]]:
            cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            tables = [r[0] for r in cursor.fetchall()]
            out: dict[str, list[tuple[Any, ...]]] = {}
            for table in tables:
                cursor.execute(f"PRAGMA table_info({table})")
                columns = [r[1] for r in cursor.fetchall()]
                if "account" in columns:
                    cursor.execute(f"SELECT * FROM {table} WHERE account = ? ORDER BY rowid", (account,))
                    out[table] = [tuple(r) for r in cursor.fetchall()]
            cursor.execute(
                "SELECT * FROM queue_attempt WHERE msg_id IN (SELECT id FROM queue_msg WHERE account = ?"
                " UNION SELECT id FROM queue_retired WHERE account = ?) ORDER BY id",
                (account, account),
            )
            out["queue_attempt"] = [tuple(r) for r in cursor.fetchall()]
            cursor.execute(
                "SELECT * FROM hook_attempt WHERE hook_id IN (SELECT id FROM event WHERE account = ?"
                " UNION SELECT id FROM hook_retired WHERE account = ?) ORDER BY id",
                (account, account),
            )
            out["hook_attempt"] = [tuple(r) for r in cursor.fetchall()]
            return out

        result: dict[str, list[tuple[Any, ...]]] = await self.parts.store.db.run("snapshot", read)
        return result

    async def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        def read(cursor: Any) -> list[dict[str, Any]]:
            cursor.execute(sql, args)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]

        result: list[dict[str, Any]] = await self.parts.store.db.run("rows", read)
        return result

    async def max_message_id(self) -> int:
        (row,) = await self.rows("SELECT coalesce(max(id), 0) AS n FROM message")
        return int(row["n"])

    # --- webhooks ----------------------------------------------------------------------

    def hooks(self, path: str) -> list[Received]:
        return [r for r in self.receiver.requests if r.path == path]

    async def hooks_settled(self) -> None:
        """Wait until no webhook is queued or in flight (kicks the sender meanwhile)."""
        for _ in range(2000):
            self.webhooks.kick()
            await self.webhooks.settle()
            pending = await self.rows("SELECT id FROM event")
            if not pending and not self.receiver.held:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"webhooks not delivered: {await self.rows('SELECT * FROM event')}")

    async def hooks_waiting(self) -> None:
        """Wait until every queued webhook was attempted once and waits for its retry
        (the receiver answering errors)."""
        for _ in range(2000):
            self.webhooks.kick()
            await self.webhooks.settle()
            busy = await self.rows("SELECT id FROM event WHERE admitted = 0 OR lease_token IS NOT NULL")
            if not busy:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"webhooks not attempted: {await self.rows('SELECT * FROM event')}")

    def refuse_hooks(self, status: int = 503) -> None:
        """The receiver answers every webhook with ``status`` from now on."""
        host = f"127.0.0.1:{self.hook_port.getHost().port}"
        self.receiver.answers[host] = lambda r: status


def auth_plain(username: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{username}\0{password}".encode()).decode()
