"""Session cookies, CSRF tokens and the key file (moxtw.webui.session); logouts in the
store (moxtw.store.websessions, schema 0009)."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.store import sqlite_store
from moxtw.store import websessions as ws
from moxtw.store.database import _statements, migrate_sqlite, migrations
from moxtw.webui import session as s
from moxtw.webui.session import (
    ACCOUNT,
    ADMIN,
    KeyFileError,
    Sessions,
    b64,
    load_or_create_key,
    unb64,
)

HASH = "scrypt$16384$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5"


class KeyFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.path = self.dir / "data" / s.KEY_FILE

    def test_created_private_and_reused(self) -> None:
        key = load_or_create_key(self.path)
        self.assertEqual(len(key), 32)
        self.assertEqual(stat.S_IMODE(self.path.stat().st_mode), 0o600)
        # Another process (another Sessions) reads the same key; no temporary file is left.
        self.assertEqual(load_or_create_key(self.path), key)
        self.assertEqual(Sessions(self.path, Clock()).key(), key)
        self.assertEqual(sorted(p.name for p in self.path.parent.iterdir()), [s.KEY_FILE])

    def test_race_lost_uses_the_winners_key(self) -> None:
        """When another process links its key into place first, ours is dropped."""
        winner = bytes(range(32))
        real_link = os.link

        def link(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            Path(dst).write_text(winner.hex() + "\n")  # the other process, just before us
            os.chmod(dst, 0o600)
            real_link(src, dst)

        self.patch(s.os, "link", link)
        self.assertEqual(load_or_create_key(self.path), winner)
        self.assertEqual(sorted(p.name for p in self.path.parent.iterdir()), [s.KEY_FILE])

    def test_bad_key_file(self) -> None:
        self.path.parent.mkdir(parents=True)
        self.path.write_text("not a key\n")
        e = self.assertRaises(KeyFileError, load_or_create_key, self.path)
        self.assertIn("delete it to make a new one", str(e))
        self.assertEqual(self.path.read_text(), "not a key\n")


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.sessions = Sessions(Path(self.mktemp()) / s.KEY_FILE, self.clock)
        self.hashes: dict[str, str | None] = {"admin": HASH, "mox": HASH}

    def current(self, session: s.Session) -> str | None:
        return self.hashes.get(session.account or "admin")

    def verify(self, value: str, kind: str = ACCOUNT) -> s.Session | None:
        return self.sessions.verify(value, kind, self.current)

    def test_round_trip(self) -> None:
        value, issued = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        self.assertEqual(self.verify(value), issued)
        self.assertEqual((issued.account, issued.address), ("mox", "mox@localhost"))
        self.assertEqual((issued.issued, issued.expires), (1_800_000_000.0, 1_800_000_000 + 12 * 3600))
        # Cookie-safe characters only; the password hash is not in it.
        self.assertRegex(value, r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
        self.assertNotIn("scrypt", unb64(value.split(".")[0]).decode())
        # Every login gets its own session ID, so its own CSRF token.
        self.assertEqual(len(unb64(issued.id)), 16)
        _, again = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        self.assertNotEqual(again.id, issued.id)
        self.assertNotEqual(self.sessions.csrf_token(again), self.sessions.csrf_token(issued))

    def test_valid_in_every_process(self) -> None:
        """An HTTP worker (another Sessions on the same key file) accepts the cookie."""
        value, issued = self.sessions.issue(ADMIN, "", "", HASH)
        worker = Sessions(self.sessions.key_path, self.clock)
        self.assertEqual(worker.verify(value, ADMIN, self.current), issued)
        self.assertEqual(worker.csrf_token(issued), self.sessions.csrf_token(issued))

    def test_tampered(self) -> None:
        value, _ = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        payload, mac = value.split(".")
        body = json.loads(unb64(payload))
        body["a"] = "other"
        forged = b64(json.dumps(body).encode())
        self.hashes["other"] = HASH
        self.assertIsNone(self.verify(f"{forged}.{mac}"))
        flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
        self.assertIsNone(self.verify(f"{payload}.{flipped}"))
        for bad in ("", ".", payload, f"{payload}.", f"{payload}.{mac}.x", "é.é", "x" * 5000):
            self.assertIsNone(self.verify(bad), bad)
        # Signed under another key: not ours.
        other = Sessions(Path(self.mktemp()) / s.KEY_FILE, self.clock)
        value2, _ = other.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        self.assertIsNone(self.verify(value2))

    def signed(self, body: dict[str, object]) -> str:
        """A cookie of ``body`` with a valid MAC (as this key would sign it)."""
        payload = b64(json.dumps(body).encode())
        return f"{payload}.{b64(self.sessions._mac('session', payload))}"

    def test_issue_time_survives_the_cookie(self) -> None:
        self.clock.advance(0.25)
        value, issued = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        self.assertEqual(self.verify(value).issued, 1_800_000_000.25)  # type: ignore[union-attr]
        self.assertEqual(self.verify(value), issued)

    def test_other_formats_refused(self) -> None:
        """A cookie of version 1 (no session ID, no issue time) is invalid even with a
        good MAC: its user logs in again; so is a version 2 body missing a field."""
        value, _ = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        body = json.loads(unb64(value.split(".")[0]))
        self.assertEqual(self.verify(self.signed(body)), self.verify(value))  # signed() signs like issue()
        v1 = {k: v for k, v in body.items() if k not in ("i", "t")} | {"v": 1, "n": body["i"]}
        self.assertIsNone(self.verify(self.signed(v1)))
        for change in ({"v": 3}, {"i": ""}, {"i": None}, {"t": True}, {"t": "1"}, {"e": 1.9e9}, {"k": 1}):
            self.assertIsNone(self.verify(self.signed(body | change)), change)
        for key in ("i", "t", "e", "p"):
            self.assertIsNone(self.verify(self.signed({k: v for k, v in body.items() if k != key})), key)
        self.assertIsNone(self.verify(self.signed(["not", "a", "dict"])))  # type: ignore[arg-type]

    def test_expired(self) -> None:
        value, _ = self.sessions.issue(ADMIN, "", "", HASH)
        self.clock.advance(12 * 3600 - 1)
        self.assertIsNotNone(self.verify(value, ADMIN))
        self.clock.advance(1)
        self.assertIsNone(self.verify(value, ADMIN))

    def test_kind_must_match(self) -> None:
        value, _ = self.sessions.issue(ADMIN, "", "", HASH)
        self.assertIsNotNone(self.verify(value, ADMIN))
        self.assertIsNone(self.verify(value, ACCOUNT))

    def test_password_change_ends_session(self) -> None:
        value, _ = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        self.hashes["mox"] = HASH.replace("a2V5", "b2V5")
        self.assertIsNone(self.verify(value))
        self.hashes["mox"] = HASH
        self.assertIsNotNone(self.verify(value))
        self.hashes["mox"] = None  # account gone or login disabled
        self.assertIsNone(self.verify(value))

    def test_csrf_tokens(self) -> None:
        _, session = self.sessions.issue(ADMIN, "", "", HASH)
        token = self.sessions.csrf_token(session)
        self.assertTrue(self.sessions.check_csrf(session, token))
        for bad in ("", token[:-1], token + "A", "é" * len(token)):
            self.assertFalse(self.sessions.check_csrf(session, bad), bad)
        nonce = self.sessions.login_nonce()
        login = self.sessions.login_token(ADMIN, nonce)
        self.assertTrue(self.sessions.check_login_token(ADMIN, nonce, login))
        self.assertFalse(self.sessions.check_login_token(ACCOUNT, nonce, login))
        self.assertFalse(self.sessions.check_login_token(ADMIN, self.sessions.login_nonce(), login))
        self.assertFalse(self.sessions.check_login_token(ADMIN, "", self.sessions.login_token(ADMIN, "")))
        self.assertNotEqual(login, token)


DAY = 24 * 3600.0
T0 = 1_800_000_000.0
LIFETIME = 12 * 3600.0


class LogoutStoreTests(TestCase):
    """The ``webui_logout`` table through the store's thread pool, as the pages use it."""

    def setUp(self) -> None:
        self.store = sqlite_store(Path(self.mktemp()).absolute(), reactor)
        self.store.open()
        self.addCleanup(self.store.close)

    async def ended(self, session: str, issued: float = T0, kind: str = ACCOUNT, account: str = "mox") -> bool:
        result: bool = await self.store.db.run("ended", ws.session_ended, kind, account, session, issued)
        return result

    async def end(self, session: str, at: float, expires: float, kind: str = ACCOUNT, account: str = "mox") -> int:
        removed: int = await self.store.db.run("end", ws.end_session, kind, account, session, at, expires)
        return removed

    async def rows(self) -> list[tuple[Any, ...]]:
        def read(cursor: Any) -> list[tuple[Any, ...]]:
            cursor.execute("SELECT kind, account, session, at, expires FROM webui_logout ORDER BY at, session")
            return [tuple(r) for r in cursor.fetchall()]

        result: list[tuple[Any, ...]] = await self.store.db.run("rows", read)
        return result

    async def test_logged_out_session(self) -> None:
        self.assertFalse(await self.ended("s1"))
        self.assertEqual(await self.end("s1", T0 + 60, T0 + LIFETIME), 0)
        self.assertTrue(await self.ended("s1"))
        # Only that session: not another one of the login, nor the same ID elsewhere.
        self.assertFalse(await self.ended("s2"))
        self.assertFalse(await self.ended("s1", account="other"))
        self.assertFalse(await self.ended("s1", kind=ADMIN, account=""))
        # Logging out twice (two tabs at once) keeps one row.
        await self.end("s1", T0 + 61, T0 + LIFETIME)
        self.assertEqual(await self.rows(), [(ACCOUNT, "mox", "s1", T0 + 61, T0 + LIFETIME)])

    async def test_everywhere(self) -> None:
        await self.end(ws.EVERYWHERE, T0 + 100, T0 + 100 + LIFETIME, kind=ADMIN, account="")
        for issued in (T0, T0 + 99.999, T0 + 100):
            self.assertTrue(await self.ended("any", issued, kind=ADMIN, account=""), issued)
        self.assertFalse(await self.ended("any", T0 + 100.001, kind=ADMIN, account=""))
        # Another login is not affected.
        self.assertFalse(await self.ended("any", T0, kind=ACCOUNT, account="mox"))
        # Again later: the later time counts; an earlier one (a clock stepped back) does
        # not bring ended sessions back.
        await self.end(ws.EVERYWHERE, T0 + 200, T0 + 200 + LIFETIME, kind=ADMIN, account="")
        self.assertTrue(await self.ended("any", T0 + 150, kind=ADMIN, account=""))
        await self.end(ws.EVERYWHERE, T0 + 50, T0 + 50 + LIFETIME, kind=ADMIN, account="")
        self.assertTrue(await self.ended("any", T0 + 150, kind=ADMIN, account=""))
        self.assertEqual(await self.rows(), [(ADMIN, "", "", T0 + 200, T0 + 200 + LIFETIME)])

    async def test_expired_rows_removed_at_the_next_logout(self) -> None:
        await self.end("s1", T0, T0 + LIFETIME)
        await self.end(ws.EVERYWHERE, T0 + 10, T0 + 10 + LIFETIME)
        await self.end("s2", T0 + 20, T0 + 20 + LIFETIME, kind=ADMIN, account="")
        self.assertEqual(len(await self.rows()), 3)
        # At s1's expiry only s1 goes (the others could still end a valid session).
        self.assertEqual(await self.end("s3", T0 + LIFETIME, T0 + 2 * LIFETIME), 1)
        self.assertEqual([r[2] for r in await self.rows()], ["", "s2", "s3"])
        self.assertEqual(await self.end("s4", T0 + DAY - 1, T0 + DAY + LIFETIME), 2)
        self.assertEqual([r[2] for r in await self.rows()], ["s3", "s4"])
        self.assertEqual(await self.store.db.run("clean", ws.remove_expired_logouts, T0 + 3 * DAY), 2)
        self.assertEqual(await self.rows(), [])

    def test_reads_and_deletes_use_indexes(self) -> None:
        """The check reads the primary key; the cleanup the expiry index (no scans)."""
        conn = sqlite3.connect(str(self.store.db_path))
        self.addCleanup(conn.close)

        def plan(sql: str, *args: Any) -> str:
            return " ".join(str(r[-1]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))

        check = plan(
            "SELECT session, at FROM webui_logout WHERE kind = ? AND account = ? AND session IN (?, ?)",
            ACCOUNT, "mox", "s1", "",
        )  # fmt: skip
        self.assertIn("USING INDEX sqlite_autoindex_webui_logout_1 (kind=? AND account=? AND session=?)", check)
        self.assertNotIn("SCAN", check)
        clean = plan("DELETE FROM webui_logout WHERE expires <= ?", T0)
        self.assertIn("SEARCH webui_logout USING INDEX webui_logout_expires (expires<?)", clean)


class MigrationTests(SynchronousTestCase):
    def test_0009_applies_on_an_older_database_and_uses_only_0001(self) -> None:
        everything = migrations()
        (m9,) = [m for m in everything if m[0] == 9]
        self.assertEqual(m9[1], "0009_webui_sessions.sql")
        tables = {"queue_msg", "queue_retired", "event", "hold_rule", "hook_retired", "suppression", "message"}
        self.assertEqual({t for t in tables if t in m9[2]}, set())
        path = str(Path(self.mktemp()).absolute())
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied REAL NOT NULL)")
        for version, name, sql in [m for m in everything if m[0] < 9]:
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version VALUES (?, ?, 0)", (version, name))
        conn.close()
        old, new = migrate_sqlite(path)
        self.assertEqual((old, new), (8, max(v for v, _, _ in everything)))
        conn = sqlite3.connect(path)
        self.addCleanup(conn.close)
        columns = [r[1] for r in conn.execute("PRAGMA table_info(webui_logout)")]
        self.assertEqual(columns, ["kind", "account", "session", "at", "expires"])
