"""An SMTP submission answered 250 survives an immediate kill of the daemon.

A real ``twistd -n moxtw localserve`` process (free loopback ports, high daily limits)
takes SMTP submissions from 12 concurrent ``smtplib`` sessions (AUTH PLAIN on the
submission port; several messages per session), each message with its own Message-ID,
Subject and text.  The session thread that receives the 150th ``250`` reply to DATA, or
the first one after it while another session is past DATA (sending its body or waiting
for the reply to the final dot), sends SIGKILL to the daemon's whole process tree at
once, while the other sessions are in the middle of their transactions.  Then the SQLite database and the
message files are read directly: every message that was answered 250 (also those whose
answer arrived while the kill was under way) must be either still queued, with its queue
row (recipient, Message-ID, subject) and message file, or retired as delivered with its
copy in the Inbox (localserve delivers to itself while the submissions come in).
Finally the daemon restarts on the same data directory, takes a new submission, and
delivers every answered message into its Inbox.

Compare ``test_durability`` (the same property for webapi Sends).
"""

from __future__ import annotations

import email.policy
import os
import secrets
import signal
import smtplib
import sqlite3
import threading
import time
import tomllib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from tests.helpers import Daemon, port_open
from tests.integration.test_durability import (
    alive,
    check_message_file,
    descendants,
    inbox_files,
    write_config,
)

reactor: Any = _reactor

USER, PASSWORD = "mox@localhost", "moxmoxmox"
TOTAL = 400
SESSIONS = 12  # below the per-IP connection limit of the submission listeners (20)
KILL_AFTER = 150
#: Generous: a deadline for a slow, shared machine, not a timing assertion.
DEADLINE = 90.0


def listener_port(config: Path, name: str) -> int:
    endpoint = tomllib.loads(config.read_text())["listeners"][name][0]  # "tcp:PORT:interface=..."
    return int(endpoint.split(":")[1])


class Run:
    """What the session threads share: the next message number, the answered messages,
    the transactions in flight, and the kill (done by the thread that got answer N)."""

    def __init__(self, daemon_pid: int) -> None:
        self.lock = threading.Lock()
        self.daemon_pid = daemon_pid
        self.tag = secrets.token_hex(4)
        self.next = 0
        self.answered: dict[str, dict[str, str]] = {}  # Message-ID -> what was sent
        self.in_flight = 0  # transactions begun (MAIL FROM sent), not yet answered 250
        self.in_data = 0  # of those, the ones past DATA (body sent or being sent)
        self.in_flight_at_kill = -1
        self.in_data_at_kill = -1
        self.killed = threading.Event()
        self.killed_pids: list[int] = []
        self.errors: list[str] = []

    def take(self) -> int | None:
        with self.lock:
            if self.killed.is_set() or self.next >= TOTAL:
                return None
            self.next += 1
            return self.next - 1

    def kill(self) -> None:
        """SIGKILL the main process and every process it started (caller holds the lock)."""
        self.in_flight_at_kill = self.in_flight
        self.in_data_at_kill = self.in_data
        self.killed_pids = descendants(self.daemon_pid)
        for pid in (self.daemon_pid, *self.killed_pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.killed.set()


def message(run: Run, i: int) -> tuple[EmailMessage, dict[str, str]]:
    address = f"rcpt{i}@localhost"
    expected = {
        "address": address,
        "subject": f"smtp kill {run.tag} #{i}",
        "text": f"message {i} of run {run.tag}\nsecond line {secrets.token_hex(8)}",
        "message_id": f"<smtp-kill-{run.tag}-{i}@client.localhost>",
    }
    msg = EmailMessage()
    msg["From"] = USER
    msg["To"] = address
    msg["Subject"] = expected["subject"]
    msg["Message-Id"] = expected["message_id"]
    msg.set_content(expected["text"])
    return msg, expected


def session(run: Run, port: int) -> None:
    """One SMTP session sending messages until the daemon is killed or all are taken."""
    try:
        smtp = smtplib.SMTP("127.0.0.1", port, timeout=30)
        smtp.ehlo("client.localhost")
        smtp.login(USER, PASSWORD)  # localserve allows AUTH without TLS
    except (OSError, smtplib.SMTPException) as e:
        with run.lock:
            run.errors.append(f"connect: {type(e).__name__}: {e}")
        return
    try:
        while (i := run.take()) is not None:
            msg, expected = message(run, i)
            with run.lock:
                run.in_flight += 1
            in_data = 0
            try:
                code, text = smtp.mail(USER)
                if code == 250:
                    code, text = smtp.rcpt(expected["address"])
                if code != 250:
                    raise smtplib.SMTPResponseException(code, text)
                with run.lock:
                    run.in_data += 1
                    in_data = 1
                # DATA, the body, the final dot; returns with the reply to the dot.
                code, text = smtp.data(msg.as_bytes(policy=email.policy.SMTP))
                if code != 250:
                    raise smtplib.SMTPResponseException(code, text)
            except (OSError, smtplib.SMTPException) as e:
                with run.lock:
                    run.in_flight -= 1
                    run.in_data -= in_data
                    run.errors.append(f"#{i}: {type(e).__name__}: {e}")
                return
            with run.lock:
                run.in_flight -= 1
                run.in_data -= 1
                if run.killed.is_set():  # answered while the kill was under way: counts too
                    run.answered[expected["message_id"]] = expected
                    return
                run.answered[expected["message_id"]] = expected
                # From answer N on, the first answer that finds another session past DATA
                # kills (at the 150th exactly, all of them can be at MAIL or RCPT).
                if len(run.answered) >= KILL_AFTER and run.in_data > 0:
                    run.kill()
                    return
    finally:
        try:
            smtp.close()
        except OSError:
            pass


class SMTPKillTests(TestCase):
    timeout = 180

    def start_daemon(self, config: Path) -> Daemon:
        daemon = Daemon(self, "--config", str(config)).start()

        def kill_children() -> None:
            # Before Daemon.kill (cleanups run last-in first-out): a test that stopped
            # half-way takes the worker processes down with the main process.
            if not daemon.proto.ended.called:
                for pid in descendants(daemon.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        self.addCleanup(kill_children)
        return daemon

    async def test_answered_submissions_survive_sigkill(self) -> None:
        started = time.monotonic()
        directory = Path(self.mktemp()).absolute()
        config, http_port = write_config(directory)
        port = listener_port(config, "submission")
        data_dir = directory / "data"

        daemon = self.start_daemon(config)
        await daemon.wait_for_port(port)
        await daemon.wait_for_port(http_port)

        pool = ThreadPool(minthreads=SESSIONS, maxthreads=SESSIONS, name="smtp-kill-clients")
        pool.start()
        self.addCleanup(pool.stop)
        run = Run(daemon.process.pid)
        await defer.gatherResults(
            [deferToThreadPool(reactor, pool, session, run, port) for _ in range(SESSIONS)]
        )
        code = await daemon.proto.ended
        answered = dict(run.answered)
        summary = (
            f"taken {run.next}, answered 250 {len(answered)}, transactions in flight at SIGKILL "
            f"{run.in_flight_at_kill} ({run.in_data_at_kill} in DATA), failed {len(run.errors)}, {1 + len(run.killed_pids)} process(es) killed"
        )
        self.assertTrue(run.killed.is_set(), f"never reached {KILL_AFTER} answers: {summary}; {run.errors[:5]}\n{daemon.output}")
        self.assertEqual(code, -signal.SIGKILL, summary)
        self.assertGreater(run.in_data_at_kill, 0, f"no transaction in DATA at SIGKILL: {summary}")
        for _ in range(200):
            if not port_open(port) and not any(alive(p) for p in run.killed_pids):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([p for p in run.killed_pids if alive(p)], [], f"still running after the kill: {summary}")
        self.assertFalse(port_open(port), f"port {port} still served after the kill: {summary}")

        # The database and message files as the killed process left them.
        problems: list[str] = []
        queued = delivered = 0
        db = sqlite3.connect(data_dir / "moxtw.sqlite3")
        try:
            inbox = inbox_files(db, data_dir)
            for message_id, expected in sorted(answered.items()):
                wanted = (expected["address"], *expected["address"].split("@"), expected["subject"])
                row = db.execute(
                    "SELECT recipient_address, recipient_localpart, recipient_domain, subject, blob"
                    " FROM queue_msg WHERE message_id = ?",
                    (message_id,),
                ).fetchall()
                if row:
                    if len(row) != 1 or tuple(row[0][:4]) != wanted:
                        problems.append(f"{message_id}: queue rows {row}, sent {wanted}")
                        continue
                    blob = row[0][4]
                    problem = check_message_file(data_dir / "msgs" / blob[:2] / blob, expected)
                    if problem:
                        problems.append(f"{message_id} (queued): {problem}")
                    else:
                        queued += 1
                    continue
                retired = db.execute(
                    "SELECT recipient_address, recipient_localpart, recipient_domain, subject, success, event"
                    " FROM queue_retired WHERE message_id = ?",
                    (message_id,),
                ).fetchall()
                if len(retired) != 1:
                    problems.append(f"{message_id}: neither queued nor retired once: {retired}")
                elif tuple(retired[0][:4]) != wanted or tuple(retired[0][4:]) != (1, "delivered"):
                    problems.append(f"{message_id}: retired {retired[0]}, sent {wanted}")
                elif message_id not in inbox:
                    problems.append(f"{message_id}: retired as delivered, not in the Inbox")
                else:
                    problem = check_message_file(inbox[message_id], expected)
                    if problem:
                        problems.append(f"{message_id} (delivered): {problem}")
                    else:
                        delivered += 1
        finally:
            db.close()
        summary += f"; found {queued} queued and {delivered} delivered"
        print(f"smtp kill: {summary}")
        self.assertEqual(problems, [], summary)
        self.assertEqual(queued + delivered, len(answered), summary)

        # A restart on the same data directory takes submissions again and delivers
        # everything that was answered.
        again = self.start_daemon(config)
        await again.wait_for_port(port)
        after = Run(again.process.pid)
        after.tag = f"{run.tag}-after"
        msg, expected = message(after, 0)

        def submit_one() -> None:
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
                smtp.login(USER, PASSWORD)
                smtp.send_message(msg)

        await deferToThreadPool(reactor, pool, submit_one)
        wanted_ids = set(answered) | {expected["message_id"]}
        deadline = time.monotonic() + DEADLINE
        while True:
            db = sqlite3.connect(data_dir / "moxtw.sqlite3")
            try:
                missing = wanted_ids - set(inbox_files(db, data_dir))
            finally:
                db.close()
            if not missing:
                break
            if time.monotonic() > deadline or again.proto.ended.called:
                self.fail(f"{len(missing)} answered messages never delivered after the restart: "
                          f"{sorted(missing)[:5]}\n{again.output}")
            await deferLater(reactor, 0.1, lambda: None)

        pids = descendants(again.process.pid)
        self.assertIn(await again.stop(signal.SIGTERM), (0, -signal.SIGTERM), again.output)
        self.assertNotIn("Traceback", again.output)
        for _ in range(100):
            if not any(alive(p) for p in pids):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([p for p in pids if alive(p)], [], f"left running after SIGTERM:\n{again.output}")
        print(f"smtp kill test: {time.monotonic() - started:.1f}s")
