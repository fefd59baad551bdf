"""Real SMTP clients against moxtw's submission listeners (localserve).

A real ``twistd -n moxtw localserve`` process (listeners on free loopback ports, an
outgoing webhook to a twisted.web receiver in the test) takes mail from:

* ``swaks`` over STARTTLS on the submission port with AUTH PLAIN, and over implicit TLS
  on the submissions port with AUTH LOGIN, verifying localserve's self-signed
  certificate (``--tls-verify --tls-ca-path``; without that trust root TLS fails), each
  message with an ``X-Mox-Extra-Order: 42`` header: both are queued, delivered by
  localserve to its own Inbox, and reported to the webhook with ``Extra``
  ``{"Order": "42"}`` (mox canonicalises the header name the way Go's ``textproto``
  does, spec §8: ``X-Mox-Extra-Order`` gives key ``Order``);
* ``swaks`` with a wrong password: ``535 5.7.8``, swaks fails, nothing is queued;
* Python's ``smtplib`` with ``ssl.create_default_context(cafile=<localserve's
  certificate>)``: STARTTLS to ``localhost`` with full certificate and host name
  verification (and the same without the certificate as trust root fails verification).

Skipped when swaks is not installed.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import secrets
import shutil
import smtplib
import sqlite3
import ssl
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import server

from tests.helpers import Daemon, localserve_config
from tests.integration.test_localserve_delivery import Receiver

reactor: Any = _reactor

USER, PASSWORD = "mox@localhost", "moxmoxmox"
#: Generous: a deadline for a slow, shared machine, not a timing assertion.
DEADLINE = 60.0


class _Program(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred[int] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        self.ended.callback(value.exitCode if value.exitCode is not None else -(value.signal or 0))


async def run_program(testcase: TestCase, argv: list[str], timeout: float = DEADLINE) -> tuple[int, str]:
    """Run ``argv`` to its end; (exit status, stdout+stderr).  A program still running
    after ``timeout`` (or at the end of the test) is killed by its PID."""
    proto = _Program()
    process = reactor.spawnProcess(proto, argv[0], argv, env={"PATH": "/usr/bin:/bin"})

    async def kill() -> None:
        if not proto.ended.called:
            process.signalProcess("KILL")
            await proto.ended

    testcase.addCleanup(kill)
    deadline = time.monotonic() + timeout
    while not proto.ended.called and time.monotonic() < deadline:
        await deferLater(reactor, 0.05, lambda: None)
    if not proto.ended.called:
        await kill()
        testcase.fail(f"{argv[0]} still running after {timeout}s:\n{proto.output.decode('utf-8', 'replace')}")
    return await proto.ended, proto.output.decode("utf-8", "replace")


class SwaksTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.swaks = shutil.which("swaks")
        if self.swaks is None:
            raise SkipTest("swaks is not installed (Debian: apt-get install swaks)")
        self.directory = Path(self.mktemp()).absolute()
        self.ports = localserve_config(self.directory)
        self.cert = self.directory / "tls" / "localhost.crt"
        self.assertTrue(self.cert.is_file())
        self.db = self.directory / "data" / "moxtw.sqlite3"
        self.receiver = Receiver()
        site = server.Site(self.receiver)
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        self.hook_url = f"http://127.0.0.1:{listening.getHost().port}/hooks"

    async def start(self) -> Daemon:
        daemon = Daemon(
            self, "localserve", "--dir", str(self.directory), "--outgoing-webhook", self.hook_url, "--retry-scale", "60"
        ).start()
        for name in ("submission", "submissions", "smtp", "http"):
            await daemon.wait_for_port(self.ports[name])
        return daemon

    async def stop(self, daemon: Daemon) -> None:
        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)

    def swaks_argv(self, *args: str) -> list[str]:
        assert self.swaks is not None
        return [self.swaks, "--server", "127.0.0.1", "--from", USER, "--timeout", "30", *args]

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return [tuple(r) for r in db.execute(sql, args).fetchall()]
        finally:
            db.close()

    def hooks_for(self, subject: str) -> list[dict[str, Any]]:
        return [body for _, body in self.receiver.requests if body["Subject"] == subject]

    async def wait_delivered(self, subjects: list[str], daemon: Daemon) -> dict[str, dict[str, Any]]:
        """The ``delivered`` webhook of each subject, waiting for them until DEADLINE."""
        deadline = time.monotonic() + DEADLINE
        while True:
            found = {s: [b for b in self.hooks_for(s) if b["Event"] == "delivered"] for s in subjects}
            if all(found.values()):
                return {s: hooks[0] for s, hooks in found.items()}
            if time.monotonic() > deadline or daemon.proto.ended.called:
                self.fail(f"no delivered webhook for {[s for s in subjects if not found[s]]}: "
                          f"{self.receiver.requests}\n{daemon.output}")
            await deferLater(reactor, 0.05, lambda: None)

    def inbox_message(self, subject: str) -> email.message.EmailMessage:
        """The delivered copy in account mox's Inbox (localserve delivers to itself)."""
        rows = self.query(
            "SELECT m.blob FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
            " WHERE b.account = 'mox' AND b.name = 'Inbox' AND m.subject = ?",
            subject,
        )
        self.assertEqual(len(rows), 1, rows)
        blob = rows[0][0]
        msg = email.message_from_bytes((self.directory / "data" / "msgs" / blob[:2] / blob).read_bytes(), policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        return msg

    async def test_swaks_starttls_and_implicit_tls(self) -> None:
        started = time.monotonic()
        daemon = await self.start()
        run = secrets.token_hex(4)
        cases = {
            # subject: (port, TLS option, AUTH mechanism)
            f"swaks starttls {run}": (self.ports["submission"], "--tls", "PLAIN"),
            f"swaks implicit tls {run}": (self.ports["submissions"], "--tls-on-connect", "LOGIN"),
        }
        queue_ids: dict[str, int] = {}
        for subject, (port, tls, mech) in cases.items():
            code, out = await run_program(self, self.swaks_argv(
                "--port", str(port), tls, "--tls-verify", "--tls-ca-path", str(self.cert),
                "--auth", mech, "--auth-user", USER, "--auth-password", PASSWORD,
                "--to", "you@localhost", "--header", f"Subject: {subject}", "--header", "X-Mox-Extra-Order: 42",
            ))
            self.assertEqual(code, 0, out)
            if tls == "--tls":
                self.assertIn("-> STARTTLS", out)
                self.assertIn("<-  220 2.0.0 ok", out)
            self.assertIn("=== TLS started with cipher", out)
            self.assertIn(f"~> AUTH {mech}", out)
            self.assertIn("<~  235 2.7.0 nice", out)
            self.assertIn("<~  250 2.2.0 it is done", out)
            (queue_id,) = self.query("SELECT id FROM queue_retired WHERE subject = ? UNION SELECT id FROM queue_msg WHERE subject = ?", subject, subject)
            queue_ids[subject] = queue_id[0]

        # --tls-verify does check: without localserve's certificate as trust root, no TLS.
        code, out = await run_program(self, self.swaks_argv(
            "--port", str(self.ports["submissions"]), "--tls-on-connect", "--tls-verify", "--to", "you@localhost",
        ))
        self.assertNotEqual(code, 0, out)
        self.assertIn("certificate verify failed", out)

        hooks = await self.wait_delivered(list(cases), daemon)
        for subject, hook in hooks.items():
            self.assertEqual(
                (hook["QueueMsgID"], hook["DSN"], hook["Extra"], hook["FromID"]),
                (queue_ids[subject], False, {"Order": "42"}, ""),
                hook,
            )
            self.assertEqual(len(self.hooks_for(subject)), 1, self.hooks_for(subject))
            ((event, success, extra),) = self.query(
                "SELECT event, success, extra FROM queue_retired WHERE id = ?", queue_ids[subject]
            )
            self.assertEqual((event, success, json.loads(extra)), ("delivered", 1, {"Order": "42"}))
            msg = self.inbox_message(subject)
            self.assertEqual(msg["X-Mox-Extra-Order"], "42")  # the header stays (spec §8)
            received = [" ".join(str(r).split()) for r in msg.get_all("Received", [])]
            self.assertTrue(any("with ESMTPSA" in r for r in received), received)  # submitted over TLS
        await self.stop(daemon)
        print(f"swaks starttls + implicit tls: {time.monotonic() - started:.1f}s")

    async def test_swaks_wrong_password(self) -> None:
        daemon = await self.start()
        for port, tls in ((self.ports["submission"], "--tls"), (self.ports["submissions"], "--tls-on-connect")):
            code, out = await run_program(self, self.swaks_argv(
                "--port", str(port), tls, "--auth", "PLAIN", "--auth-user", USER, "--auth-password", "not-the-password",
                "--to", "you@localhost", "--header", "X-Mox-Extra-Order: 42",
            ))
            self.assertNotEqual(code, 0, out)
            self.assertIn("<~* 535 5.7.8 bad user/pass", out)
            self.assertNotIn("~> MAIL FROM", out)
        self.assertEqual(self.query("SELECT count(*) FROM queue_msg"), [(0,)])
        self.assertEqual(self.query("SELECT count(*) FROM queue_retired"), [(0,)])
        self.assertEqual(self.receiver.requests, [])
        await self.stop(daemon)

    async def test_smtplib_verified_starttls(self) -> None:
        daemon = await self.start()
        port = self.ports["submission"]
        subject = f"smtplib verified starttls {secrets.token_hex(4)}"

        def submit() -> dict[str, Any]:
            context = ssl.create_default_context(cafile=str(self.cert))
            with smtplib.SMTP("localhost", port, timeout=30) as smtp:
                smtp.ehlo("client.localhost")
                self.assertTrue(smtp.has_extn("starttls"))
                smtp.starttls(context=context)
                sock: Any = smtp.sock
                peer = sock.getpeercert()
                smtp.ehlo("client.localhost")
                smtp.login(USER, PASSWORD)
                message = (
                    f"From: {USER}\r\nTo: you@localhost\r\nSubject: {subject}\r\n"
                    "X-Mox-Extra-Order: 42\r\n\r\nverified over STARTTLS\r\n"
                )
                refused = smtp.sendmail(USER, ["you@localhost"], message)
            return {"peer": peer, "refused": refused}

        def unverified() -> str:
            """The same STARTTLS with the system's trust roots only: must fail."""
            with smtplib.SMTP("localhost", port, timeout=30) as smtp:
                smtp.ehlo("client.localhost")
                try:
                    smtp.starttls(context=ssl.create_default_context())
                except ssl.SSLCertVerificationError as e:
                    return str(e)
            return "verified"

        result = await deferToThread(submit)
        self.assertEqual(result["refused"], {})
        self.assertIn((("commonName", "localhost"),), result["peer"]["subject"])
        self.assertIn(("DNS", "localhost"), result["peer"]["subjectAltName"])
        hook = (await self.wait_delivered([subject], daemon))[subject]
        self.assertEqual((hook["Extra"], hook["DSN"]), ({"Order": "42"}, False))
        self.assertIn("certificate verify failed", await deferToThread(unverified))
        await self.stop(daemon)
