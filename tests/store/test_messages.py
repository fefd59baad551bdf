"""The account message store: deliver, flags, move, expunge, migration 0002."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import TestCase

from moxtw.store import Store, sqlite_store
from moxtw.store import messages as sm
from moxtw.store.database import migrate_sqlite, migrations

MESSAGE = b"From: Alice <alice@localhost>\r\nTo: mox@localhost\r\nSubject: hi\r\nMessage-Id: <m1@x>\r\n\r\nhello\r\n"


class MessageStoreTests(TestCase):
    def open_store(self) -> Store:
        store = sqlite_store(Path(self.mktemp()).absolute(), reactor)
        store.open()
        self.addCleanup(store.close)
        return store

    async def get(self, store: Store, msg_id: int, account: str = "mox") -> sm.MessageRow:
        return await store.db.run("get", sm.get_message, account, msg_id)

    async def test_deliver_stores_file_and_row(self) -> None:
        store = self.open_store()
        meta = sm.DeliveryMeta(mail_from="alice@localhost", rcpt_to="mox@localhost", remote_ip="127.0.0.1")
        msg_id = await sm.deliver(store, "mox", "Inbox", MESSAGE, received=1000.0, meta=meta)
        row = await self.get(store, msg_id)
        self.assertEqual(await store.blobs.get(row.blob), MESSAGE)
        self.assertEqual((row.mailbox_name, row.size, row.received, row.uid), ("Inbox", len(MESSAGE), 1000.0, 1))
        self.assertEqual((row.mail_from, row.rcpt_to, row.remote_ip), ("alice@localhost", "mox@localhost", "127.0.0.1"))
        self.assertEqual((row.msg_from, row.message_id, row.subject), ("alice@localhost", "<m1@x>", "hi"))
        self.assertEqual(row.all_flags, [])
        second = await sm.deliver(store, "mox", "Inbox", MESSAGE, received=1001.0)
        self.assertGreater(second, msg_id)
        self.assertEqual((await self.get(store, second)).uid, 2)

    async def test_default_mailboxes_created_lazily_per_account(self) -> None:
        store = self.open_store()
        self.assertEqual(await store.db.run("count", lambda c: c.execute("SELECT count(*) FROM mailbox").fetchone()[0]), 0)
        boxes = await store.db.run("list", sm.list_mailboxes, "other")
        self.assertEqual(
            [(n, s) for _, n, s in boxes],
            [("Inbox", ""), ("Sent", "\\Sent"), ("Archive", "\\Archive"), ("Drafts", "\\Drafts"),
             ("Junk", "\\Junk"), ("Trash", "\\Trash")],
        )  # fmt: skip
        # Delivering into an unknown mailbox creates it.
        msg_id = await sm.deliver(store, "other", "Lists/x", MESSAGE, received=1.0)
        self.assertEqual((await self.get(store, msg_id, "other")).mailbox_name, "Lists/x")

    async def test_sent_flags(self) -> None:
        store = self.open_store()
        msg_id = await sm.deliver(store, "mox", "Sent", MESSAGE, flags=["\\Seen", "$NotJunk"], received=1.0)
        row = await self.get(store, msg_id)
        self.assertEqual((row.mailbox_name, row.all_flags), ("Sent", ["$notjunk", "\\seen"]))
        with self.assertRaises(sm.FlagsError):
            await sm.deliver(store, "mox", "Sent", MESSAGE, flags=["bad keyword"], received=1.0)

    async def test_messages_are_per_account(self) -> None:
        store = self.open_store()
        msg_id = await sm.deliver(store, "mox", "Inbox", MESSAGE, received=1.0)
        with self.assertRaises(sm.MessageNotFound):
            await self.get(store, msg_id, "other")

    async def test_flags_add_and_remove(self) -> None:
        store = self.open_store()
        msg_id = await sm.deliver(store, "mox", "Inbox", MESSAGE, received=1.0)
        columns, keywords = sm.parse_flags(["\\Seen", "$Forwarded", "custom1", "$Junk", "b", "a"])
        await store.db.run("add", sm.update_flags, "mox", msg_id, columns, keywords, True)
        self.assertEqual((await self.get(store, msg_id)).all_flags, ["$forwarded", "$junk", "\\seen", "a", "b", "custom1"])
        columns, keywords = sm.parse_flags(["\\SEEN", "custom1", "notpresent"])
        await store.db.run("remove", sm.update_flags, "mox", msg_id, columns, keywords, False)
        self.assertEqual((await self.get(store, msg_id)).all_flags, ["$forwarded", "$junk", "a", "b"])

    def test_parse_flags(self) -> None:
        self.assertEqual(sm.parse_flags(["\\Answered", "X", "x"]), (frozenset({"answered"}), ["x"]))
        for bad, text in [
            ("with space", "invalid keyword with space"),
            ("\\Bogus", "invalid keyword \\bogus"),
            ("", "invalid keyword "),
            ("a(b", "invalid keyword a(b"),
            ("é", "invalid keyword é"),
        ]:
            with self.assertRaises(sm.FlagsError) as e:
                sm.parse_flags([bad])
            self.assertEqual(str(e.exception), text)
        with self.assertRaises(sm.FlagsError) as e:
            sm.parse_flags(["x", "X"], pedantic=True)
        self.assertEqual(str(e.exception), "duplicate keyword x")

    async def test_move(self) -> None:
        store = self.open_store()
        msg_id = await sm.deliver(store, "mox", "Inbox", MESSAGE, flags=["$Junk", "$Forwarded"], received=1.0)
        await store.db.run("move", sm.move_message, "mox", msg_id, "Archive")
        row = await self.get(store, msg_id)
        self.assertEqual((row.mailbox_name, row.all_flags, row.uid), ("Archive", ["$forwarded", "$notjunk"], 1))
        await store.db.run("move", sm.move_message, "mox", msg_id, "Junk")
        self.assertEqual((await self.get(store, msg_id)).all_flags, ["$forwarded", "$junk"])
        await store.db.run("move", sm.move_message, "mox", msg_id, "Inbox")
        self.assertEqual((await self.get(store, msg_id)).all_flags, ["$forwarded"])
        with self.assertRaises(sm.AlreadyInMailbox):
            await store.db.run("move", sm.move_message, "mox", msg_id, "Inbox")
        with self.assertRaises(sm.MailboxNotFound):
            await store.db.run("move", sm.move_message, "mox", msg_id, "inbox")
        with self.assertRaises(sm.MessageNotFound):
            await store.db.run("move", sm.move_message, "mox", 999, "Inbox")

    async def test_expunge(self) -> None:
        store = self.open_store()
        msg_id = await sm.deliver(store, "mox", "Inbox", MESSAGE, received=1.0)
        blob = await store.db.run("expunge", sm.expunge_message, "mox", msg_id)
        self.assertEqual(blob, (await store.db.run("blob", _blob, msg_id)))
        with self.assertRaises(sm.MessageNotFound) as e:
            await self.get(store, msg_id)
        self.assertTrue(e.exception.removed)
        with self.assertRaises(sm.MessageNotFound) as e:
            await store.db.run("expunge", sm.expunge_message, "mox", msg_id)
        self.assertTrue(e.exception.removed)
        with self.assertRaises(sm.MessageNotFound) as e:
            await self.get(store, 12345)
        self.assertFalse(e.exception.removed)
        # IDs are never reused.
        self.assertGreater(await sm.deliver(store, "mox", "Inbox", MESSAGE, received=2.0), msg_id)


def _blob(cursor: Any, msg_id: int) -> str:
    cursor.execute("SELECT blob FROM message WHERE id = ?", (msg_id,))
    return str(cursor.fetchone()[0])


class MigrationTests(TestCase):
    def test_0002_applies_on_a_version_1_database(self) -> None:
        path = str(Path(self.mktemp()).absolute())
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Build a version 1 database the way an older moxtw did: only migration 1.
        version, name, sql = migrations()[0]
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
        for statement in [s for s in "\n".join(x for x in sql.splitlines() if not x.strip().startswith("--")).split(";") if s.strip()]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))
        conn.execute(
            "INSERT INTO suppression (created, account, base_address, original_address, manual, reason)"
            " VALUES (0, 'mox', 'a@b', 'a@b', 1, '')"
        )
        conn.close()
        old, new = migrate_sqlite(path)
        self.assertEqual(old, 1)
        self.assertGreaterEqual(new, 2)
        conn = sqlite3.connect(path)
        try:
            self.assertEqual(conn.execute("SELECT count(*) FROM suppression").fetchone()[0], 1)
            self.assertEqual(conn.execute("SELECT count(*) FROM mailbox").fetchone()[0], 0)
            self.assertEqual(conn.execute("SELECT count(*) FROM message").fetchone()[0], 0)
            names = [r[0] for r in conn.execute("SELECT name FROM schema_version ORDER BY version")]
            self.assertEqual(names[:2], ["0001_init.sql", "0002_mailboxes.sql"])
        finally:
            conn.close()
