"""Sessions of the web interface: signed cookies, ended by logging out, and CSRF tokens.

HTTP worker processes share the listener (``SO_REUSEPORT``), so one browser's requests
land in different processes.  Nothing about a session is therefore kept in memory: the
cookie carries it, signed with HMAC-SHA256 under a secret in the data directory
(:data:`KEY_FILE`, created with mode 0600 on first use by whichever process needs it
first; the others read the same file), and logging out is recorded in the store, which
every process reads (:mod:`moxtw.store.websessions`).

A session cookie holds its format version (:data:`VERSION`; a cookie of another version
is invalid: its user logs in again), its kind (``admin`` or ``account``), the account name
and login address (account sessions), a random session ID, when it was issued, an
absolute expiry and a fingerprint of the password hash it was opened with.
:meth:`Sessions.verify` checks the cookie: its MAC, its kind (the one of the area asked
for), its expiry, and that the fingerprint still matches the current password hash
(changing a password, ``moxtw setpassword``, ends its sessions; deleting the key file
ends all of them).  The web interface then asks the store whether the session was
logged out (its ID) or its login logged out everywhere since it was issued
(:meth:`moxtw.webui.core.WebUI.authenticate`).

CSRF tokens are MACs of the session ID (they change with every login and are useless
without the cookie); the login forms, which have no session yet, get a token bound to a
short-lived random cookie instead (a signed double-submit cookie).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

#: The session key's file name in the data directory.
KEY_FILE = "webui-session.key"
#: How long a session lasts after login (absolute, not sliding).
SESSION_LIFETIME = 12 * 3600.0
#: How long a login form may be used.
LOGIN_FORM_LIFETIME = 3600.0
#: Longest cookie value accepted (browsers keep 4096 bytes per cookie).
MAX_COOKIE = 4096
#: The session cookie's format (version 1 had no session ID or issue time).
VERSION = 2

ADMIN = "admin"
ACCOUNT = "account"
KINDS = (ADMIN, ACCOUNT)

log = Logger()


class KeyFileError(Exception):
    """The key file exists but cannot be used; ``str()`` says why and what to do."""


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """Decode unpadded base64url; ``ValueError`` if it is not."""
    if not text or any(c not in _B64_CHARS for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _read_key(path: Path) -> bytes:
    text = path.read_text("ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise KeyFileError(f"{path}: not a web interface session key (64 hex digits); delete it to make a new one")
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warn("{path} is readable by others (mode {mode:o}); it signs login sessions", path=path, mode=mode)
    return key


def load_or_create_key(path: Path) -> bytes:
    """The 32-byte key in ``path``, created (mode 0600) if there is none yet.

    Safe between processes that start at the same time: each writes its candidate to a
    private temporary file and hard-links it into place, which only one of them can do;
    all then read the file that won.  A reader never sees a partly written key.
    """
    with contextlib.suppress(FileNotFoundError):
        return _read_key(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.write(fd, secrets.token_bytes(32).hex().encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process was first: use its key
        else:
            dirfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return _read_key(path)


@attrs.frozen
class Session:
    """A logged-in browser, as its cookie says."""

    kind: str
    #: The account's name and the address it logged in with ("" for admin sessions).
    account: str
    address: str
    #: Random, per login: what logging out records; CSRF tokens are derived from it.
    id: str
    #: UNIX time of the login (logging out everywhere ends the sessions issued before).
    issued: float
    #: UNIX time at which the session ends.
    expires: int
    #: Fingerprint of the password hash at login.
    password: str


@attrs.define(eq=False)
class Sessions:
    """Issues and checks session cookies and CSRF tokens (any process, same key file)."""

    key_path: Path
    clock: IReactorTime
    lifetime: float = SESSION_LIFETIME
    _key: bytes | None = None

    def key(self) -> bytes:
        """The signing key, read (or created) on first use."""
        if self._key is None:
            self._key = load_or_create_key(self.key_path)
        return self._key

    def _mac(self, purpose: str, *parts: str) -> bytes:
        message = "\0".join((purpose, *parts)).encode("utf-8")
        return hmac.new(self.key(), message, hashlib.sha256).digest()

    def now(self) -> float:
        return float(self.clock.seconds())

    def password_fingerprint(self, password_hash: str) -> str:
        """A keyed digest of a password hash: equal for the same hash, reveals nothing."""
        return b64(self._mac("password", password_hash)[:16])

    # --- sessions -----------------------------------------------------------------------

    def issue(self, kind: str, account: str, address: str, password_hash: str) -> tuple[str, Session]:
        """A new session and its cookie value."""
        if kind not in KINDS:
            raise ValueError(f"unknown session kind {kind!r}")
        now = self.now()
        session = Session(
            kind=kind,
            account=account,
            address=address,
            id=b64(secrets.token_bytes(16)),
            issued=now,
            expires=int(now + self.lifetime),
            password=self.password_fingerprint(password_hash),
        )
        body = {
            "v": VERSION,
            "k": session.kind,
            "a": session.account,
            "l": session.address,
            "i": session.id,
            "t": session.issued,
            "e": session.expires,
            "p": session.password,
        }
        payload = b64(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return f"{payload}.{b64(self._mac('session', payload))}", session

    def verify(self, value: str, kind: str, password_hash: Callable[[Session], str | None]) -> Session | None:
        """The session of cookie ``value`` if the cookie is valid for ``kind``.

        ``password_hash(session)`` returns the current password hash of the session's
        user, or None if the user is gone or may not log in; a session opened with another
        hash is invalid.  Whether it was logged out is for the store to say
        (:func:`moxtw.store.websessions.session_ended`).
        """
        if not value or len(value) > MAX_COOKIE or value.count(".") != 1:
            return None
        payload, mac = value.split(".")
        try:
            given = unb64(mac)
            body: Any = json.loads(unb64(payload).decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(given, self._mac("session", payload)):
            return None
        session = _session(body)
        if session is None or session.kind != kind or session.expires <= self.now():
            return None
        current = password_hash(session)
        if current is None:
            return None
        if not hmac.compare_digest(session.password, self.password_fingerprint(current)):
            return None
        return session

    # --- CSRF -----------------------------------------------------------------------------

    def csrf_token(self, session: Session) -> str:
        """The token state-changing requests of ``session`` must carry."""
        return b64(self._mac("csrf", session.kind, session.id))

    def check_csrf(self, session: Session, token: str) -> bool:
        return bool(token) and hmac.compare_digest(token.encode("utf-8"), self.csrf_token(session).encode("ascii"))

    def login_nonce(self) -> str:
        """A random value for the login form's cookie."""
        return b64(secrets.token_bytes(16))

    def login_token(self, kind: str, nonce: str) -> str:
        """The login form's token, bound to the random value in its cookie."""
        return b64(self._mac("login", kind, nonce))

    def check_login_token(self, kind: str, nonce: str, token: str) -> bool:
        if not nonce or not token:
            return False
        return hmac.compare_digest(token.encode("utf-8"), self.login_token(kind, nonce).encode("ascii"))


def _session(body: Any) -> Session | None:
    if not isinstance(body, dict) or body.get("v") != VERSION:
        return None
    strings = [body.get(k) for k in ("k", "a", "l", "i", "p")]
    issued, expires = body.get("t"), body.get("e")
    if not all(isinstance(v, str) for v in strings):
        return None
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        return None
    if isinstance(expires, bool) or not isinstance(expires, int):
        return None
    kind, account, address, session_id, password = (str(v) for v in strings)
    if not session_id:
        return None
    return Session(
        kind=kind,
        account=account,
        address=address,
        id=session_id,
        issued=float(issued),
        expires=expires,
        password=password,
    )
