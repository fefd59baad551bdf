"""Password hashing (scrypt), PRECIS OpaqueString normalisation, and cached verification.

Stored hashes are self-describing strings::

    scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>

(standard base64 alphabet, with padding).  Passwords are normalised with PRECIS OpaqueString
(RFC 8265 §4.2) before hashing and before verification, as mox does: non-ASCII space
characters are mapped to U+0020, then the string is NFC-normalised, then code points that
the PRECIS FreeformClass disallows are rejected, as is the empty string.

Every webapi request carries HTTP basic auth, so :class:`PasswordVerifier` runs scrypt in a
thread pool (never on the reactor thread) and remembers successful verifications: a repeated
correct password costs one HMAC-SHA256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import unicodedata
from collections import OrderedDict
from collections.abc import Callable

import attrs
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

__all__ = [
    "InvalidPasswordError",
    "PasswordVerifier",
    "hash_password",
    "normalize_password",
    "verify_password",
]

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32

# Bounds on the parameters accepted from a stored hash, so that a corrupt or hostile hash
# string cannot make verification use unbounded memory or CPU.
_MAX_N = 2**20
_MAX_R = 32
_MAX_P = 16
_MAX_MEMORY = 64 * 1024 * 1024  # scrypt needs about 128 * r * (n + p + 2) bytes.
_MIN_SALT_BYTES, _MAX_SALT_BYTES = 8, 64
_MIN_KEY_BYTES, _MAX_KEY_BYTES = 16, 64

_INT_RE = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)


class InvalidPasswordError(ValueError):
    """The password is empty or has characters PRECIS OpaqueString does not allow.

    The message never contains (part of) the password.
    """


# --- PRECIS OpaqueString ---------------------------------------------------------------------

# RFC 5892 §2.6 exceptions (used by RFC 8264 §9.6).
_EXCEPTIONS_PVALID = frozenset({0x00DF, 0x03C2, 0x06FD, 0x06FE, 0x0F0B, 0x3007})
_EXCEPTIONS_DISALLOWED = frozenset(
    {0x0640, 0x07FA, 0x302E, 0x302F, 0x3031, 0x3032, 0x3033, 0x3034, 0x3035, 0x303B}
)
# ZERO WIDTH NON-JOINER / JOINER: CONTEXTJ.  Their contextual rules are not checked (they need
# the Joining_Type property, which unicodedata lacks); they are accepted.
_JOIN_CONTROLS = frozenset({0x200C, 0x200D})
# Default_Ignorable_Code_Point members that are not of general category Cf (which is
# disallowed as a whole): Other_Default_Ignorable_Code_Point and Variation_Selector.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180D),
    (0x180F, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)
# Hangul_Syllable_Type L, V, T ("OldHangulJamo", RFC 8264 §9.9).
_OLD_HANGUL_JAMO_RANGES = (
    (0x1100, 0x11FF),
    (0xA960, 0xA97C),
    (0xD7B0, 0xD7C6),
    (0xD7CB, 0xD7FB),
)
# LetterDigits, OtherLetterDigits, Spaces, Symbols, Punctuation (RFC 8264 §9.1-9.5, 9.12).
_VALID_CATEGORIES = frozenset(
    "Ll Lu Lo Nd Lm Mn Mc Lt Nl No Me Zs Sm Sc Sk So Pc Pd Ps Pe Pi Pf Po".split()
)


def _in_ranges(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _freeform_allowed(char: str) -> bool:
    """Whether the PRECIS FreeformClass (RFC 8264 §8, §9.11) allows ``char``.

    Follows the derivation order of RFC 8264 §8 using Python's Unicode database.  Contextual
    rules (CONTEXTJ/CONTEXTO) are not evaluated: such code points are accepted.
    """
    cp = ord(char)
    if cp in _EXCEPTIONS_PVALID:
        return True
    if cp in _EXCEPTIONS_DISALLOWED:
        return False
    category = unicodedata.category(char)
    if category == "Cn":  # Unassigned, including noncharacters.
        return False
    if 0x21 <= cp <= 0x7E:  # ASCII7
        return True
    if cp in _JOIN_CONTROLS:
        return True
    if category == "Cf" or _in_ranges(cp, _IGNORABLE_RANGES):  # PrecisIgnorableProperties
        return False
    if _in_ranges(cp, _OLD_HANGUL_JAMO_RANGES):
        return False
    if category == "Cc":
        return False
    if unicodedata.normalize("NFKC", char) != char:  # HasCompat: FREE_PVAL
        return True
    # Everything else (Cs, Co, Zl, Zp) is disallowed.
    return category in _VALID_CATEGORIES


def normalize_password(password: str) -> str:
    """Apply PRECIS OpaqueString: non-ASCII spaces to U+0020, NFC, check code points.

    Raises :class:`InvalidPasswordError` if the result is empty or contains a code point the
    FreeformClass disallows (controls, unassigned, private use, surrogates, ...).
    """
    mapped = "".join(
        " " if ch != " " and unicodedata.category(ch) == "Zs" else ch for ch in password
    )
    normalised = unicodedata.normalize("NFC", mapped)
    if not normalised:
        raise InvalidPasswordError("empty password")
    if not all(_freeform_allowed(ch) for ch in normalised):
        raise InvalidPasswordError("password contains a character not allowed by PRECIS")
    return normalised


# --- scrypt hashes -----------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str) -> str:
    """Hash ``password`` (after normalisation) with scrypt and a fresh random salt.

    CPU- and memory-heavy (about 16 MiB): call it from a thread, not the reactor thread.
    Raises :class:`InvalidPasswordError` for a password PRECIS OpaqueString rejects.
    """
    secret = normalize_password(password).encode("utf-8")
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64encode(salt)}${_b64encode(key)}"


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


@attrs.frozen
class _ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _parse_int(text: str) -> int | None:
    return int(text) if _INT_RE.fullmatch(text) else None


def _parse_b64(text: str, min_len: int, max_len: int) -> bytes | None:
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return None
    return data if min_len <= len(data) <= max_len else None


def _parse_hash(encoded: str) -> _ScryptHash | None:
    """Parse a stored hash string; None if malformed or its parameters are out of bounds."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    n, r, p = (_parse_int(part) for part in parts[1:4])
    if n is None or r is None or p is None:
        return None
    if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and r <= _MAX_R and p <= _MAX_P):
        return None
    if 128 * r * (n + p + 2) > _MAX_MEMORY:
        return None
    salt = _parse_b64(parts[4], _MIN_SALT_BYTES, _MAX_SALT_BYTES)
    key = _parse_b64(parts[5], _MIN_KEY_BYTES, _MAX_KEY_BYTES)
    if salt is None or key is None:
        return None
    return _ScryptHash(n=n, r=r, p=p, salt=salt, key=key)


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches the stored hash ``encoded`` (constant-time comparison).

    False (never an exception) for a wrong password, a password PRECIS rejects, or a
    malformed or unsupported ``encoded`` string.  CPU-heavy: run it in a thread.
    """
    parsed = _parse_hash(encoded)
    if parsed is None:
        return False
    try:
        secret = normalize_password(password).encode("utf-8")
    except InvalidPasswordError:
        return False
    try:
        key = _scrypt(secret, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.key))
    except ValueError:
        return False
    return hmac.compare_digest(key, parsed.key)


# --- cached, off-reactor verification ----------------------------------------------------------


def _non_negative(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


@attrs.define(eq=False)
class PasswordVerifier:
    """Verifies passwords in ``threadpool`` and caches successes in memory.

    The cache key is HMAC-SHA256(per-instance random key, encoded hash + "\\0" + normalised
    password): the cache holds no password or anything usable offline without that key, and
    because the stored hash is part of the key, changing a password (which changes the stored
    hash) makes the old entries unreachable; they age out of the LRU.  Failures are never
    cached, so a wrong password always costs a full scrypt (rate-limit before calling this).

    ``verify_fn`` is the slow verification run in the pool (replaceable in tests);
    ``max_cache_entries`` bounds the cache (0 disables it).
    """

    threadpool: ThreadPool
    reactor: IReactorFromThreads
    max_cache_entries: int = attrs.field(default=1000, validator=_non_negative)
    verify_fn: Callable[[str, str], bool] = verify_password
    _cache_secret: bytes = attrs.field(
        init=False, repr=False, factory=lambda: secrets.token_bytes(32)
    )
    _cache: OrderedDict[bytes, None] = attrs.field(init=False, repr=False, factory=OrderedDict)

    def _cache_key(self, normalised: str, encoded: str) -> bytes:
        message = encoded.encode("utf-8", "surrogatepass") + b"\0" + normalised.encode("utf-8")
        return hmac.new(self._cache_secret, message, hashlib.sha256).digest()

    async def verify(self, password: str, encoded: str) -> bool:
        """Whether ``password`` matches ``encoded``; see :func:`verify_password`.

        A cache hit answers without leaving the reactor thread; otherwise ``verify_fn`` runs
        in the thread pool.  An exception from ``verify_fn`` propagates.
        """
        try:
            normalised = normalize_password(password)
        except InvalidPasswordError:
            return False
        key = self._cache_key(normalised, encoded)
        if key in self._cache:
            self._cache.move_to_end(key)
            return True
        ok = await deferToThreadPool(
            self.reactor, self.threadpool, self.verify_fn, password, encoded
        )
        if ok and self.max_cache_entries > 0:
            self._cache[key] = None
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cache_entries:
                self._cache.popitem(last=False)
        return bool(ok)

    def clear_cache(self) -> None:
        """Forget all cached verifications."""
        self._cache.clear()

    def cached_entries(self) -> int:
        """Number of cached successful verifications (for metrics and tests)."""
        return len(self._cache)
