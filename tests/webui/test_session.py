"""Session cookies, CSRF tokens and the key file (moxtw.webui.session)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

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
        self.assertEqual(issued.expires, 1_800_000_000 + 12 * 3600)
        # Cookie-safe characters only; the password hash is not in it.
        self.assertRegex(value, r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
        self.assertNotIn("scrypt", unb64(value.split(".")[0]).decode())
        # Every login gets its own nonce, so its own CSRF token.
        _, again = self.sessions.issue(ACCOUNT, "mox", "mox@localhost", HASH)
        self.assertNotEqual(again.nonce, issued.nonce)
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
