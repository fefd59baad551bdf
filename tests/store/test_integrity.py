"""The store's integrity check (``moxtw checkstore``) and the start-up sweep of message
files a crash left without a row."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from twisted.trial.unittest import TestCase

from moxtw.store import integrity, messages
from tests.queue.harness import FakeTransport, Harness

ROOT = Path(__file__).resolve().parent.parent.parent


def orphan(directory: Path, key: str, age: float) -> Path:
    """A message file ``key`` under ``directory``'s blob root, last written ``age`` s ago."""
    path = directory / "msgs" / key[:2] / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"Subject: never committed\r\n\r\nx\r\n")
    then = time.time() - age
    os.utime(path, (then, then))
    return path


class CheckTests(TestCase):
    async def populated(self) -> Harness:
        h = Harness(self)
        h.open()
        assert h.store is not None
        await h.queue("a@remote.example", "b@remote.example")
        await messages.deliver(h.store, "mox", "Inbox", b"Subject: in\r\n\r\nhello\r\n", received=time.time())
        return h

    async def test_consistent_store(self) -> None:
        h = await self.populated()
        report = integrity.check(h.directory)
        self.assertEqual(report.problems, [])
        self.assertEqual(report.notes, [])
        self.assertEqual((report.counts["queued"], report.counts["mailbox messages"], report.counts["message files"]),
                         (2, 1, 2))
        self.assertTrue(report.ok)

    async def test_missing_file_is_a_problem(self) -> None:
        h = await self.populated()
        con = sqlite3.connect(h.directory / "moxtw.sqlite3")
        (blob,) = con.execute("SELECT blob FROM message").fetchone()
        con.close()
        (h.directory / "msgs" / blob[:2] / blob).unlink()
        report = integrity.check(h.directory)
        self.assertFalse(report.ok)
        self.assertEqual(len(report.problems), 1)
        self.assertIn(f"mailbox message 1: message file {blob} is missing", report.problems[0])

    async def test_stray_file_and_open_attempt(self) -> None:
        h = await self.populated()
        orphan(h.directory, "ab" + "0" * 30, age=60)
        con = sqlite3.connect(h.directory / "moxtw.sqlite3")
        con.execute("INSERT INTO queue_attempt (msg_id, attempt, token, start) VALUES (1, 1, 't', 0)")
        con.commit()
        con.close()
        report = integrity.check(h.directory)
        self.assertEqual(len(report.notes), 1)
        self.assertIn("1 message file(s) no row refers to", report.notes[0])
        self.assertEqual(len(report.problems), 1)
        self.assertIn("1 delivery attempt(s) left open without a lease (messages 1)", report.problems[0])
        # With the lease (an attempt in progress, or interrupted by a crash) it is no problem.
        con = sqlite3.connect(h.directory / "moxtw.sqlite3")
        con.execute("UPDATE queue_msg SET lease_token = 't' WHERE id = 1")
        con.commit()
        con.close()
        report = integrity.check(h.directory)
        self.assertEqual(report.problems, [])
        self.assertIn("1 queued message(s) leased", report.notes[1])


class SweepTests(TestCase):
    async def test_sweep_removes_only_old_unreferenced_files(self) -> None:
        h = Harness(self)
        store = h.open()
        await h.queue("a@remote.example")
        inbox = await messages.deliver(store, "mox", "Inbox", b"Subject: a\r\n\r\nkept\r\n", received=time.time())
        gone = await messages.deliver(store, "mox", "Inbox", b"Subject: b\r\n\r\nexpunged\r\n", received=time.time())
        con = sqlite3.connect(h.directory / "moxtw.sqlite3")
        blobs = dict(con.execute("SELECT id, blob FROM message"))
        (queued_blob,) = con.execute("SELECT blob FROM queue_msg").fetchone()
        con.execute("UPDATE message SET expunged = 1 WHERE id = ?", (gone,))
        con.commit()
        con.close()
        old = orphan(h.directory, "cd" + "1" * 30, age=3600)
        new = orphan(h.directory, "cd" + "2" * 30, age=0)
        # Referenced files are old too: only the references keep them.
        for key in (blobs[inbox], blobs[gone], queued_blob):
            os.utime(h.directory / "msgs" / key[:2] / key, (time.time() - 3600,) * 2)

        removed = await store.sweep_orphans(time.time() - 60)

        self.assertEqual(removed, 2)
        self.assertFalse(old.exists())
        self.assertFalse((h.directory / "msgs" / blobs[gone][:2] / blobs[gone]).exists())
        self.assertTrue(new.exists())
        self.assertTrue((h.directory / "msgs" / blobs[inbox][:2] / blobs[inbox]).exists())
        self.assertTrue((h.directory / "msgs" / queued_blob[:2] / queued_blob).exists())

    async def test_queue_start_sweeps_files_older_than_the_store(self) -> None:
        h = Harness(self)
        h.directory.mkdir(parents=True)
        left = orphan(h.directory, "ef" + "3" * 30, age=30)
        h.open()
        q = h.service(FakeTransport())
        await q.settle()
        self.assertFalse(left.exists())

    async def test_shared_store_does_not_sweep(self) -> None:
        # Several daemons on one database: another daemon's uncommitted file is not ours.
        h = Harness(self)
        h.directory.mkdir(parents=True)
        left = orphan(h.directory, "ef" + "4" * 30, age=30)
        h.open(shared=True)
        q = h.service(FakeTransport())
        await q.settle()
        self.assertTrue(left.exists())


class CheckStoreCommandTests(TestCase):
    async def test_checkstore_subprocess(self) -> None:
        h = Harness(self)
        h.open()
        await h.queue("a@remote.example")
        config = h.directory / "moxtw.toml"
        config.write_text(f'hostname = "mail.example.org"\ndata_dir = "{h.directory}"\n')
        run = [sys.executable, "-m", "moxtw.cli", "checkstore", str(config)]
        ok = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        self.assertEqual(ok.returncode, 0, ok.stderr)
        self.assertIn("1 queued", ok.stdout)
        self.assertEqual(ok.stdout.splitlines()[-1], "ok")
        for path in (h.directory / "msgs").glob("*/*"):
            path.unlink()
        bad = subprocess.run(run, capture_output=True, text=True, timeout=60, cwd=str(ROOT))
        self.assertEqual(bad.returncode, 1)
        self.assertIn("PROBLEM: queued message 1: message file", bad.stdout)
        self.assertEqual(bad.stdout.splitlines()[-1], "1 problem(s)")
