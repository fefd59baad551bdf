"""A real SQLite store in a temp dir, a test clock for the queue, fake transports."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import defer, reactor
from twisted.internet.task import Clock

from moxtw.address import Address
from moxtw.config import AccountConfig, Config, HoldRule, Listeners, QueueConfig, TLSConfig
from moxtw.queue import Batch, QueueService, RecipientOutcome, Result
from moxtw.store import Store, outbox, sqlite_store
from moxtw.store.queue import NewMessage, insert_messages

T0 = 1_700_000_000.0
HOUR = 3600.0
MESSAGE = b"From: <mox@example.org>\r\nTo: <rcpt@remote.example>\r\nSubject: hello\r\nMessage-Id: <m1@example.org>\r\n\r\nbody\r\n"
PREFIX = b"Received: from test by mail.example.org; Tue, 14 Nov 2023 22:13:20 +0000\r\n"


def make_config(data_dir: Path, *, keep: float = 72 * HOUR, queue: QueueConfig | None = None,
                hold_rules: tuple[HoldRule, ...] = ()) -> Config:
    accounts = {
        name: AccountConfig(
            name=name,
            domain="example.org",
            addresses=(f"{name}@example.org",),
            password_hash="",
            keep_retired_messages=keep,
        )
        for name in ("mox", "other")
    }
    return Config(
        hostname="mail.example.org",
        data_dir=data_dir,
        listeners=Listeners(),
        tls=TLSConfig(),
        admin_password_hash="",
        domains={},
        accounts=accounts,
        hold_rules=hold_rules,
        queue=queue or QueueConfig(),
    )


def outcome(msg_id: int, result: Result = Result.DELIVERED, code: int = 250, enhanced: str = "2.0.0",
            error: str = "") -> RecipientOutcome:
    return RecipientOutcome(
        msg_id, result, code=code, enhanced_code=enhanced, error=error,
        remote_host="mx.remote.example", remote_ip="192.0.2.25", tls=True,
    )


@attrs.define
class FakeTransport:
    """Answers every message with ``answer(msg)``; records batches.  With ``hold``, each
    call waits for the test to fire its Deferred (``pending``)."""

    answer: Any = None
    hold: bool = False
    batches: list[Batch] = attrs.Factory(list)
    pending: list[tuple[Batch, defer.Deferred[Sequence[RecipientOutcome]]]] = attrs.Factory(list)

    def __call__(self, batch: Batch) -> defer.Deferred[Sequence[RecipientOutcome]]:
        self.batches.append(batch)
        if self.hold:
            d: defer.Deferred[Sequence[RecipientOutcome]] = defer.Deferred()
            self.pending.append((batch, d))
            return d
        answer = self.answer or (lambda m: outcome(m.id))
        return defer.succeed([answer(m) for m in batch.messages])

    def release(self, index: int = 0, answer: Any = None) -> None:
        batch, d = self.pending.pop(index)
        answer = answer or self.answer or (lambda m: outcome(m.id))
        d.callback([answer(m) for m in batch.messages])


def temporary(m: Any) -> RecipientOutcome:
    return outcome(m.id, Result.TEMPORARY, 451, "4.3.0",
                   "remote smtp server sent unexpected response status code: got 451, expected 2xx, transient: 451 4.3.0 try later")


class Harness:
    def __init__(self, testcase: Any, directory: Path | None = None, **config: Any) -> None:
        self.tc = testcase
        self.directory = directory or Path(testcase.mktemp()).absolute()
        self.config = make_config(self.directory, **config)
        self.clock = Clock()
        self.clock.advance(T0)
        self.store: Store | None = None

    def open(self, *, shared: bool = False) -> Store:
        """Open the store; ``shared`` makes it behave as a database several daemons use
        (no start-up recovery of interrupted attempts: leases must run out)."""
        store = sqlite_store(self.directory, reactor)
        if shared:
            store.db.engine.shared = True  # type: ignore[misc]
        store.open()
        self.store = store
        self.tc.addCleanup(self.close)
        return store

    async def close(self) -> None:
        if self.store is not None:
            store, self.store = self.store, None
            await store.close()

    def service(self, transport: Any, *, start: bool = True, **kwargs: Any) -> QueueService:
        assert self.store is not None
        kwargs.setdefault("jitter", lambda: 0.0)
        svc = QueueService(store=self.store, config=self.config, transport=transport, clock=self.clock, **kwargs)
        if start:
            svc.startService()
            self.tc.addCleanup(lambda: svc.stopService() if svc.running else None)
        return svc

    async def queue(self, *recipients: str, account: str = "mox", sender: str = "mox@example.org",
                    next_attempt: float | None = None, data: bytes = MESSAGE) -> list[int]:
        assert self.store is not None
        slp, sdom = sender.rsplit("@", 1)
        messages = []
        for r in recipients or ("rcpt@remote.example",):
            lp, dom = r.rsplit("@", 1)
            messages.append(NewMessage(
                account=account, sender_localpart=slp, sender_domain=sdom, recipient_localpart=lp,
                recipient_domain=dom, recipient_address=r, prefix=PREFIX, size=len(PREFIX) + len(data),
                message_id="<m1@example.org>", subject="hello", extra={"order": "42"},
            ))
        now = self.clock.seconds()
        ids: list[int] = await self.store.run_with_blob(
            "queue", data, insert_messages, messages, now=now,
            next_attempt=now if next_attempt is None else next_attempt,
            hold_rules=self.config.hold_rules,
        )
        return ids

    async def run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.store is not None
        return await self.store.db.run("test", fn, *args, **kwargs)

    async def events(self) -> list[outbox.EventRow]:
        return await self.run(outbox.list_events)  # type: ignore[no-any-return]

    async def history(self, msg_id: int) -> list[outbox.AttemptRow]:
        return await self.run(outbox.attempt_history, msg_id)  # type: ignore[no-any-return]

    async def queued(self, msg_id: int) -> outbox.QueueRow | None:
        return await self.run(outbox.get_queued, msg_id)  # type: ignore[no-any-return]

    async def retired(self, msg_id: int) -> outbox.RetiredRow | None:
        return await self.run(outbox.get_retired, msg_id)  # type: ignore[no-any-return]

    async def inbox(self, account: str = "mox") -> list[email.message.EmailMessage]:
        """The messages in the account's Inbox, parsed by the stdlib."""
        assert self.store is not None

        def read(cursor: Any) -> list[str]:
            cursor.execute(
                "SELECT m.blob FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
                " WHERE m.account = ? AND b.name = 'Inbox' ORDER BY m.id", (account,))
            return [r[0] for r in cursor.fetchall()]

        out = []
        for key in await self.run(read):
            data = await self.store.blobs.get(key)
            out.append(email.message_from_bytes(data, policy=email.policy.default))
        return out

    async def suppressed(self, account: str, base: str) -> bool:
        from moxtw.store.suppressions import suppression_present
        return await self.run(suppression_present, account, base)  # type: ignore[no-any-return]


def address(text: str) -> Address:
    lp, dom = text.rsplit("@", 1)
    return Address(lp, dom)
