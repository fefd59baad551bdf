"""Delivery to a real Postfix as the remote MX.

Everything is a real process or server on loopback: a private Postfix instance
(:class:`tests.postfix.PostfixMX`: own configuration, queue and data directories under the
test's temp dir, ``postfix start-fg`` on 127.0.0.2 at a free port) delivering
``example.test`` into Maildirs, refusing ``tempfail@example.test`` with 450 and
``permfail@example.test`` with 550 at RCPT TO; a ``twisted.names`` DNS server with
``example.test MX 10 mx.example.test`` and ``mx.example.test A 127.0.0.2``; and a
production-style (not localserve) ``twistd -n moxtw --config FILE`` whose resolver is that
DNS server and whose ``[queue] port`` is Postfix's.

One webapi Send to the three addresses (one SMTP transaction) must end with: the message
in Postfix's Maildir with its Subject, text, Message-ID and Received chain; the 550
recipient retired as failed with the 550 in its attempt history, a ``failed`` event, a
suppression entry and a failure DSN in the sender's Inbox; the 450 recipient still queued
for a later attempt, its 450 recorded.  The daemon's database is read directly (read-only)
while it runs.  Skipped when Postfix is not installed (or this is not root, which
Postfix's master needs).
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from moxtw.passwords import hash_password
from tests import postfix
from tests.delivery.peers import DNSServer
from tests.helpers import Daemon, free_port, http_client

PASSWORD = "test-password-1"
LOGIN = ("app@example.org", PASSWORD)
DOMAIN = "example.test"
GOOD = f"someone@{DOMAIN}"
TEMPFAIL = f"tempfail@{DOMAIN}"
PERMFAIL = f"permfail@{DOMAIN}"
TEMP_REPLY = "450 4.2.0 mailbox temporarily unavailable"
PERM_REPLY = "550 5.1.1 mailbox does not exist"
#: Generous: this is a deadline for a slow, shared machine, not a timing assertion.
DEADLINE = 90.0


def write_config(directory: Path, *, dns_port: int, mx_port: int, http_port: int) -> Path:
    """A production-style config: account app@example.org, MX delivery on ``mx_port``
    through the resolver on 127.0.0.1:``dns_port``, real retry intervals (so the 450
    recipient stays queued for 7.5 minutes after its first attempt)."""
    path = directory / "moxtw.toml"
    path.write_text(
        f"""
hostname = "mail.example.org"
data_dir = "{directory / "data"}"
admin_password_hash = ""

[listeners]
http = ["tcp:{http_port}:interface=127.0.0.1"]

[queue]
port = {mx_port}
retry_scale = 1

[dns]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = "2s"

[domains."example.org"]
catchall_separators = ["+"]

[accounts.app]
domain = "example.org"
addresses = ["app@example.org"]
password_hash = "{hash_password(PASSWORD)}"
keep_retired_messages = "72h"
"""
    )
    return path


def read_db(path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` from the running daemon's database, opened read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in db.execute(query, args).fetchall()]
    finally:
        db.close()


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


class PostfixDeliveryTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        why = postfix.missing()
        if why is not None:
            raise SkipTest(why)

    async def wait(self, checks: dict[str, Callable[[], bool]], daemon: Daemon, mx: postfix.PostfixMX) -> None:
        """Poll ``checks`` until all hold, or fail after DEADLINE naming those that do not."""
        deadline = time.monotonic() + DEADLINE
        while True:
            pending = [name for name, check in checks.items() if not check()]
            if not pending:
                return
            if time.monotonic() > deadline or daemon.proto.ended.called:
                self.fail(
                    f"still waiting for: {', '.join(pending)}\n--- moxtw:\n{daemon.output}\n--- postfix:\n{mx.output}"
                )
            await deferLater(reactor, 0.1, lambda: None)

    async def test_send_to_postfix(self) -> None:
        started = time.monotonic()
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)

        mx = postfix.PostfixMX(
            self,
            directory / "postfix",
            domain=DOMAIN,
            host="127.0.0.2",
            mailboxes=("someone",),
            access={TEMPFAIL: TEMP_REPLY, PERMFAIL: PERM_REPLY},
        )
        await mx.start()

        dns = DNSServer(self)
        dns.zone.mx(DOMAIN, (10, f"mx.{DOMAIN}"))
        dns.zone.a(f"mx.{DOMAIN}", mx.host)

        http_port = free_port()
        config = write_config(directory, dns_port=dns.port, mx_port=mx.port, http_port=http_port)
        db_path = directory / "data" / "moxtw.sqlite3"
        daemon = Daemon(self, "--config", str(config)).start()
        await daemon.wait_for_port(http_port)

        run = secrets.token_hex(4)
        subject = f"postfix delivery {run}"
        text = f"Hello from moxtw, run {run}.\nSecond line."
        request = {
            "To": [{"Address": GOOD}, {"Address": TEMPFAIL}, {"Address": PERMFAIL}],
            "Subject": subject,
            "Text": text,
        }
        client = http_client(self)
        response = await client.post(
            f"http://127.0.0.1:{http_port}/webapi/v0/Send", data={"request": json.dumps(request)}, auth=LOGIN
        )
        body = json.loads(await response.content())
        self.assertEqual(response.code, 200, body)
        message_id = body["MessageID"]
        ids = {s["Address"]: s["QueueMsgID"] for s in body["Submissions"]}
        self.assertEqual(set(ids), {GOOD, TEMPFAIL, PERMFAIL})

        def retired(address: str) -> list[tuple[Any, ...]]:
            return read_db(db_path, "SELECT success, event, attempts FROM queue_retired WHERE id = ?", ids[address])

        def temp_attempted() -> bool:
            rows = read_db(
                db_path,
                "SELECT a.code FROM queue_attempt a JOIN queue_msg m ON m.id = a.msg_id"
                " WHERE m.id = ? AND a.duration IS NOT NULL",
                ids[TEMPFAIL],
            )
            return bool(rows)

        def dsns() -> list[tuple[Any, ...]]:
            return read_db(
                db_path,
                "SELECT m.id, m.blob, m.subject, m.rcpt_to FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
                " WHERE b.account = 'app' AND b.name = 'Inbox' AND m.dsn = 1",
            )

        await self.wait(
            {
                f"a message in the Maildir of {GOOD}": lambda: bool(mx.messages("someone")),
                f"{GOOD} retired": lambda: bool(retired(GOOD)),
                f"{PERMFAIL} retired": lambda: bool(retired(PERMFAIL)),
                f"a finished attempt for {TEMPFAIL}": temp_attempted,
                "a DSN in the sender's Inbox": lambda: bool(dsns()),
            },
            daemon,
            mx,
        )

        # --- Postfix's Maildir: one copy, as sent, with the Received chain.
        delivered = mx.messages("someone")
        self.assertEqual(len(delivered), 1, mx.output)
        msg = parse(delivered[0])
        self.assertEqual(msg["Subject"], subject)
        self.assertEqual(msg["Message-Id"], message_id)
        self.assertEqual(msg["Return-Path"], "<app@example.org>")
        self.assertEqual(msg["Delivered-To"], GOOD)
        self.assertEqual(msg["From"].addresses[0].addr_spec, "app@example.org")
        self.assertEqual({a.addr_spec for a in msg["To"].addresses}, {GOOD, TEMPFAIL, PERMFAIL})
        part = msg.get_body(("plain",))
        assert part is not None
        self.assertEqual(str(part.get_content()).replace("\r\n", "\n").rstrip("\n"), text)
        received = [" ".join(str(r).split()) for r in msg.get_all("Received", [])]
        self.assertGreaterEqual(len(received), 2, received)
        # Newest first: Postfix's, naming moxtw's EHLO and the loopback IP, then moxtw's own.
        self.assertIn(f"by mx.{DOMAIN} (Postfix) with ESMTP", received[0])
        self.assertIn("from mail.example.org", received[0])
        self.assertIn("[127.0.0.1]", received[0])
        self.assertIn(f"for <{GOOD}>", received[0])
        self.assertTrue(received[1].startswith("from mail.example.org by mail.example.org"), received)
        self.assertEqual(mx.messages("tempfail"), [])
        self.assertEqual(mx.messages("permfail"), [])

        # --- moxtw's records, read from its database while it runs.
        self.assertEqual(retired(GOOD), [(1, "delivered", 1)])
        self.assertEqual(retired(PERMFAIL), [(0, "failed", 1)])
        attempts = {
            address: read_db(
                db_path,
                "SELECT attempt, success, code, secode, error, remote_host, remote_ip FROM queue_attempt"
                " WHERE msg_id = ? ORDER BY id",
                ids[address],
            )
            for address in ids
        }
        (good,) = attempts[GOOD]
        self.assertEqual(good[:4], (1, 1, 250, "0.0"), good)
        self.assertEqual(good[5:], (f"mx.{DOMAIN}", mx.host))
        (perm,) = attempts[PERMFAIL]
        self.assertEqual(perm[:4], (1, 0, 550, "1.1"), perm)
        self.assertIn("mailbox does not exist", perm[4])
        self.assertEqual(perm[5:], (f"mx.{DOMAIN}", mx.host))
        self.assertGreaterEqual(len(attempts[TEMPFAIL]), 1)
        temp = attempts[TEMPFAIL][-1]
        self.assertEqual(temp[:4], (len(attempts[TEMPFAIL]), 0, 450, "2.0"), temp)
        self.assertIn("temporarily unavailable", temp[4])

        (queued,) = read_db(
            db_path, "SELECT attempts, next_attempt, lease_token, last_result FROM queue_msg WHERE id = ?", ids[TEMPFAIL]
        )
        self.assertGreaterEqual(queued[0], 1)
        self.assertGreater(queued[1], time.time() + 60, "the next attempt of the 450 recipient is minutes away")
        self.assertIsNone(queued[2], "no attempt in progress")
        self.assertIn("temporarily unavailable", queued[3])
        self.assertEqual(read_db(db_path, "SELECT count(*) FROM queue_msg"), [(1,)])

        # Each outcome with its codes in the attempt history (the events themselves go
        # to the webhook sender, which drops them: this account has no webhook URL).
        attempts = read_db(
            db_path, "SELECT msg_id, code, secode, success FROM queue_attempt WHERE duration IS NOT NULL ORDER BY id"
        )
        self.assertIn((ids[GOOD], 250, "0.0", 1), attempts)
        self.assertIn((ids[PERMFAIL], 550, "1.1", 0), attempts)
        self.assertIn((ids[TEMPFAIL], 450, "2.0", 0), attempts)
        self.assertEqual(retired(GOOD)[0][:2], (1, "delivered"))
        self.assertEqual(retired(PERMFAIL)[0][:2], (0, "failed"))
        self.assertEqual(
            read_db(db_path, "SELECT base_address FROM suppression WHERE account = 'app'"), [(PERMFAIL,)]
        )

        # --- The failure DSN for the 550 recipient, in the sender's Inbox (only that one:
        # a delayed DSN comes after the 5th attempt).
        (dsn,) = dsns()
        _, blob, dsn_subject, rcpt_to = dsn
        self.assertEqual(rcpt_to, "app@example.org")
        report = parse((directory / "data" / "msgs" / blob[:2] / blob).read_bytes())
        self.assertEqual(report["Subject"], dsn_subject)
        self.assertEqual(report.get_content_type(), "multipart/report")
        self.assertEqual(report.get_param("report-type"), "delivery-status")
        raw = report.as_bytes().decode("utf-8", "replace")
        self.assertIn(f"Final-Recipient: rfc822; {PERMFAIL}", raw)
        self.assertIn("Action: failed", raw)
        self.assertIn("Status: 5.1.1", raw)
        self.assertIn("Diagnostic-Code: smtp; 550 5.1.1", raw)
        self.assertIn(f"Remote-MTA: dns; mx.{DOMAIN}", raw)
        self.assertIn(f"Message-Id: {message_id}", raw)  # the original headers, attached
        self.assertNotIn(f"Final-Recipient: rfc822; {TEMPFAIL}", raw)

        # --- Postfix saw the three RCPTs in one transaction and answered as configured.
        self.assertIn(f"reject: RCPT from unknown[127.0.0.1]: {TEMP_REPLY[:9]}", mx.output)
        self.assertIn(f"reject: RCPT from unknown[127.0.0.1]: {PERM_REPLY[:9]}", mx.output)
        self.assertIn("status=sent (delivered to maildir)", mx.output)

        self.assertIn(await daemon.stop(signal.SIGTERM), (0, -signal.SIGTERM), daemon.output)
        self.assertNotIn("Traceback", daemon.output)
        await mx.stop()
        self.assertTrue(mx.proto.ended.called)
        self.assertIsNone(mx.master_pid())
        print(f"postfix delivery test: {time.monotonic() - started:.1f}s")
