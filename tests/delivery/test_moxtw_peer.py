"""Delivery to moxtw's own incoming SMTP server (a real ESMTP peer with STARTTLS and
REQUIRETLS) on loopback, through :func:`deliver_to` (localserve's path, no DNS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from moxtw.accounts import Accounts
from moxtw.config import load_config
from moxtw.delivery import deliver_to
from moxtw.localserve import ensure_config
from moxtw.ratelimit import failed_auth_limiter
from moxtw.smtp import build_smtp_factories, tls_context_from_config
from moxtw.smtp.incoming import IncomingMessage
from moxtw.store import sqlite_store
from tests.smtp.fixture import FakeVerifier

MESSAGE = b"From: a@sender.test\r\nTo: mox@localhost\r\nSubject: peer\r\n\r\nhello\r\n.dot\r\n"


class MoxtwPeerTests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        self.config = load_config(path)
        store = sqlite_store(self.config.data_dir, reactor)
        store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(store.close()))
        self.delivered: list[IncomingMessage] = []

        async def deliver(message: IncomingMessage) -> None:
            self.delivered.append(message)

        factories = build_smtp_factories(
            self.config,
            Accounts.from_config(self.config),
            store,
            FakeVerifier(),  # type: ignore[arg-type]
            reactor,
            deliver,
            tls_context_factory=tls_context_from_config(self.config),
            auth_limiter=failed_auth_limiter(reactor),
        )
        self.protocols: list[Any] = []
        build = factories.smtp.buildProtocol

        def track(addr: Any) -> Any:
            p = build(addr)
            self.protocols.append(p)
            return p

        factories.smtp.buildProtocol = track  # type: ignore[method-assign]
        port = reactor.listenTCP(0, factories.smtp, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        self.addCleanup(self.server_connections_closed)
        self.port = port.getHost().port  # type: ignore[attr-defined]
        assert self.config.tls.cert_file is not None
        cert = Certificate.loadPEM(self.config.tls.cert_file.read_bytes())
        self.trust_root = trustRootFromCertificates([cert])

    async def server_connections_closed(self) -> None:
        for _ in range(200):
            if all(p._gone for p in self.protocols):
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError("server connections still open")

    async def test_require_tls_to_moxtw(self) -> None:
        result = await deliver_to(
            reactor,
            "localhost",
            "127.0.0.1",
            self.port,
            mail_from="a@sender.test",
            recipients=["mox@localhost", "rcpttopermerror@localhost", "other@localhost"],
            data=MESSAGE,
            ehlo_hostname="localhost",
            require_tls=True,
            trust_root=self.trust_root,
        )
        self.assertTrue(result.tls)
        got = [(r.address, r.ok, r.permanent, r.code, r.enhanced) for r in result.recipients]
        self.assertEqual(got, [
            ("mox@localhost", True, False, 250, "2.2.0"),
            ("rcpttopermerror@localhost", False, True, 550, "5.0.0"),
            ("other@localhost", True, False, 250, "2.2.0"),
        ])
        self.assertEqual(len(self.delivered), 2)
        self.assertTrue(all(m.tls for m in self.delivered))
        self.assertTrue(self.delivered[0].data.endswith(MESSAGE))

    async def test_opportunistic_to_moxtw(self) -> None:
        result = await deliver_to(
            reactor, "localhost", "127.0.0.1", self.port,
            mail_from="", recipients=["mox@localhost"], data=MESSAGE, ehlo_hostname="localhost",
            smtputf8=True, has_8bit=True,
        )
        self.assertTrue(result.delivered, result)
        self.assertTrue(result.tls)
        self.assertEqual(self.delivered[0].mail_from, "")

    async def test_special_localpart_at_data(self) -> None:
        result = await deliver_to(
            reactor, "localhost", "127.0.0.1", self.port,
            mail_from="a@sender.test", recipients=["xtemperror@localhost"], data=MESSAGE,
            ehlo_hostname="localhost",
        )
        r = result.recipients[0]
        self.assertEqual((r.ok, r.permanent, r.code, r.enhanced), (False, False, 451, "4.0.0"))
        self.assertEqual(self.delivered, [])
