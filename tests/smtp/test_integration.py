"""smtplib over real loopback sockets: STARTTLS and implicit TLS, compared with webapi Send."""

from __future__ import annotations

import json
import smtplib
import ssl
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from moxtw.accounts import Accounts
from moxtw.config import load_config
from moxtw.localserve import ensure_config
from moxtw.passwords import PasswordVerifier
from moxtw.smtp import build_smtp_factories
from moxtw.store import sqlite_store
from moxtw.webapi import types as t
from moxtw.webapi.methods import Methods

MESSAGE = (
    b"From: mox+fromid@localhost\r\n"
    b"To: you@example.org\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Message-ID: <int-1@localhost>\r\n"
    b"X-Mox-Extra-Campaign: spring\r\n"
    b"\r\n"
    b"hello\r\n"
)

# Columns that must be the same for the same message submitted either way.
SAME = ("account", "sender_domain", "recipient_localpart", "recipient_domain", "recipient_address",
        "has_8bit", "smtputf8", "require_tls", "future_release_request", "hold")


class SMTPLibTests(TestCase):
    async def setUp(self) -> None:
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        self.config = load_config(path)
        self.cafile = str(self.config.tls.cert_file)
        self.store = sqlite_store(self.config.data_dir, reactor)
        self.store.open()
        self.addCleanup(lambda: Deferred.fromCoroutine(self.store.close()))
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-crypto")
        pool.start()
        self.addCleanup(pool.stop)
        self.accounts = Accounts.from_config(self.config)
        verifier = PasswordVerifier(pool, reactor)

        async def deliver(message: Any) -> None:
            pass

        factories = build_smtp_factories(
            self.config, self.accounts, self.store, verifier, reactor, deliver,
            plaintext_auth=False, bad_auth_delay=0.0,
        )
        self.ports: dict[str, int] = {}
        for name in ("submission", "submissions"):
            port = reactor.listenTCP(0, getattr(factories, name), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.ports[name] = port.getHost().port
        self.factories = factories
        self.methods = Methods(config=self.config, accounts=self.accounts, store=self.store, clock=reactor)

    async def rows(self) -> list[dict[str, Any]]:
        def read(cursor: Any) -> list[dict[str, Any]]:
            cursor.execute("SELECT * FROM queue_msg ORDER BY id")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return await self.store.db.run("rows", read)

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.cafile)

    def _send_starttls(self) -> Any:
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], local_hostname="client.example", timeout=10) as s:
            s.ehlo()
            self.assertFalse(s.has_extn("auth"))
            s.starttls(context=self.context())
            s.ehlo()
            self.assertEqual(s.esmtp_features["auth"].strip(), "PLAIN LOGIN")
            s.login("mox+fromid@localhost", "moxmoxmox")
            return s.sendmail("mox+fromid@localhost", ["you@example.org"], MESSAGE)

    def _send_implicit(self, login: str) -> Any:
        ctx = self.context()
        with smtplib.SMTP_SSL("localhost", self.ports["submissions"], local_hostname="client.example", context=ctx, timeout=10) as s:
            s.login(login, "moxmoxmox")
            self.assertIn("requiretls", s.esmtp_features)
            return s.sendmail("mox@localhost", ["you@example.org"], MESSAGE.replace(b"mox+fromid@", b"mox@"))

    async def webapi_send(self, login: str) -> None:
        result = await self.methods.Send(
            self.accounts.login(login),
            t.SendRequest(
                To=[t.NameAddress(Address="you@example.org")],
                Subject="café",
                Text="hello",
                Extra={"Campaign": "spring"},
            ),
        )
        self.assertEqual(len(result.Submissions), 1)

    async def test_starttls_fromid_matches_webapi(self) -> None:
        refused = await deferToThread(self._send_starttls)
        self.assertEqual(refused, {})
        await self.webapi_send("mox+fromid@localhost")
        smtp_row, web_row = await self.rows()
        self.assertEqual(set(smtp_row), set(web_row))
        for column in SAME:
            self.assertEqual(smtp_row[column], web_row[column], column)
        for row in (smtp_row, web_row):
            self.assertEqual(len(row["from_id"]), 22)
            self.assertEqual(row["sender_localpart"], "mox+" + row["from_id"])
            self.assertEqual(row["subject"], "café")
            self.assertEqual(json.loads(row["extra"]), {"Campaign": "spring"})
            self.assertTrue(row["message_id"].startswith("<") and row["message_id"].endswith(">"))
        self.assertEqual(smtp_row["message_id"], "<int-1@localhost>")
        self.assertIn(b"for <you@example.org>", smtp_row["prefix"])
        self.assertIn(b"with ESMTPSA", smtp_row["prefix"])

    async def test_implicit_tls(self) -> None:
        refused = await deferToThread(self._send_implicit, "mox@localhost")
        self.assertEqual(refused, {})
        await self.webapi_send("mox@localhost")
        smtp_row, web_row = await self.rows()
        for column in (*SAME, "sender_localpart", "from_id"):
            self.assertEqual(smtp_row[column], web_row[column], column)
        self.assertEqual(smtp_row["from_id"], "")

    async def test_bad_password(self) -> None:
        def attempt() -> None:
            with smtplib.SMTP_SSL("localhost", self.ports["submissions"], context=self.context(), timeout=10) as s:
                s.login("mox@localhost", "wrong")

        with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
            await deferToThread(attempt)
        self.assertEqual(e.exception.smtp_code, 535)
        self.assertEqual(e.exception.smtp_error, b"5.7.8 bad user/pass")
