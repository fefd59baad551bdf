# mypy: allow-untyped-calls
"""Tests for moxtw.passwords."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from typing import Any

from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from moxtw.passwords import (
    InvalidPasswordError,
    PasswordVerifier,
    hash_password,
    normalize_password,
    verify_password,
)

# Hashing costs ~50 ms; share a few hashes between tests.
HASH_SECRET = hash_password("secret")
HASH_OTHER = hash_password("other password")

# The example of spec §1.3: the same password, differently written.
PRECIS_SET = "te\u0301st \u00a0\u2002\u200a"
PRECIS_LOGIN = "tést    "


class NormalizeTests(SynchronousTestCase):
    def test_spec_example(self) -> None:
        self.assertEqual(normalize_password(PRECIS_SET), "t\u00e9st    ")
        self.assertEqual(normalize_password(PRECIS_LOGIN), "t\u00e9st    ")

    def test_ascii_unchanged(self) -> None:
        self.assertEqual(normalize_password(" a B~!"), " a B~!")

    def test_non_ascii_spaces_mapped(self) -> None:
        for space in "\u00a0\u1680\u2000\u2005\u200a\u202f\u205f\u3000":
            self.assertEqual(normalize_password(f"a{space}b"), "a b", hex(ord(space)))

    def test_no_compatibility_folding(self) -> None:
        """OpaqueString is NFC, not NFKC, and does not fold case or width."""
        for password in ("\ufb01x", "ＡＢＣ", "Straße", "ΣΑΣ"):
            self.assertEqual(normalize_password(password), password)

    def test_disallowed(self) -> None:
        for password in (
            "",
            "a\tb",  # Control.
            "a\nb",
            "a\x00b",
            "a\x7fb",
            "a\u00adb",  # Soft hyphen: default ignorable.
            "a\ufeffb",
            "a\ue000b",  # Private use.
            "a\ud800b",  # Lone surrogate.
            "a\u2028b",  # Line separator.
            "a\ufffeb",  # Noncharacter.
            "a\U000e0001b",  # Language tag (format).
            "a\ufe0fb",  # Variation selector.
            "a\u0640b",  # Arabic tatweel (RFC 5892 exception).
            "\u1100",  # Lone Hangul jamo.
        ):
            self.assertRaises(InvalidPasswordError, normalize_password, password)

    def test_allowed_non_ascii(self) -> None:
        for password in ("pässwörd", "пароль", "密码", "🔑🔑", "x\u200dy", "\u1100\u1161"):
            normalize_password(password)

    def test_error_is_value_error_without_password(self) -> None:
        with self.assertRaises(ValueError) as cm:
            normalize_password("hunter2\x00")
        self.assertNotIn("hunter2", str(cm.exception))


class HashTests(SynchronousTestCase):
    def test_format(self) -> None:
        scheme, n, r, p, salt, key = HASH_SECRET.split("$")
        self.assertEqual((scheme, n, r, p), ("scrypt", "16384", "8", "1"))
        self.assertEqual(len(base64.b64decode(salt, validate=True)), 16)
        self.assertEqual(len(base64.b64decode(key, validate=True)), 32)

    def test_random_salt(self) -> None:
        self.assertNotEqual(hash_password("secret"), HASH_SECRET)

    def test_verify(self) -> None:
        self.assertTrue(verify_password("secret", HASH_SECRET))
        self.assertTrue(verify_password("other password", HASH_OTHER))

    def test_wrong_password(self) -> None:
        self.assertFalse(verify_password("Secret", HASH_SECRET))
        self.assertFalse(verify_password("secret ", HASH_SECRET))
        self.assertFalse(verify_password("other password", HASH_SECRET))
        self.assertFalse(verify_password("secret", HASH_OTHER))

    def test_invalid_password(self) -> None:
        self.assertFalse(verify_password("", HASH_SECRET))
        self.assertFalse(verify_password("secret\x00", HASH_SECRET))
        self.assertRaises(InvalidPasswordError, hash_password, "")
        self.assertRaises(InvalidPasswordError, hash_password, "a\tb")

    def test_precis_example(self) -> None:
        """Spec §1.3: set as one form, log in with the other, and vice versa."""
        self.assertTrue(verify_password(PRECIS_LOGIN, hash_password(PRECIS_SET)))
        self.assertTrue(verify_password(PRECIS_SET, hash_password(PRECIS_LOGIN)))
        self.assertFalse(verify_password("test    ", hash_password(PRECIS_SET)))

    def test_malformed(self) -> None:
        scheme, n, r, p, salt, key = HASH_SECRET.split("$")
        short = base64.b64encode(b"x" * 4).decode()
        huge = base64.b64encode(b"x" * 65).decode()
        for encoded in (
            "",
            "$",
            "scrypt",
            "scrypt$$$$$",
            "bcrypt$16384$8$1$" + salt + "$" + key,
            "$2a$10$abcdefghijklmnopqrstuu5Uu7WLqB4tQHbX3Sx6kZXZfvX0aiIa",
            f"scrypt${n}${r}${p}${salt}",
            f"scrypt${n}${r}${p}${salt}${key}$",
            f"scrypt${n}${r}${p}${salt}${key[:-2]}",  # Bad padding.
            f"scrypt${n}${r}${p}${salt}${key[:-4]}!!!=",  # Not base64.
            f"scrypt${n}${r}${p}${salt}${key}\u00e9",  # Not ASCII.
            f"scrypt${n}${r}${p}${short}${key}",  # Salt too short.
            f"scrypt${n}${r}${p}${salt}${short}",  # Key too short.
            f"scrypt${n}${r}${p}${salt}${huge}",  # Key too long.
            f"scrypt$16383${r}${p}${salt}${key}",  # n not a power of 2.
            f"scrypt$1${r}${p}${salt}${key}",
            f"scrypt$0${r}${p}${salt}${key}",
            f"scrypt$-16384${r}${p}${salt}${key}",
            f"scrypt$016384${r}${p}${salt}${key}",
            f"scrypt$\u0661\u0666\u0663\u0668\u0664${r}${p}${salt}${key}",  # Arabic digits.
            f"scrypt$1e4${r}${p}${salt}${key}",
            f"scrypt${2**40}${r}${p}${salt}${key}",  # Would need terabytes.
            f"scrypt${2**20}$32${p}${salt}${key}",  # Over the memory bound.
            f"scrypt${n}$0${p}${salt}${key}",
            f"scrypt${n}${r}$0${salt}${key}",
            f"scrypt${n}${r}$17${salt}${key}",
            f"scrypt${n}${r}${p}${salt}${key}\x00",
            f"scrypt${n}${r}${p}${salt}${key}\ud800",
            f"SCRYPT${n}${r}${p}${salt}${key}",
        ):
            self.assertFalse(verify_password("secret", encoded), repr(encoded))

    def test_other_parameters(self) -> None:
        """Hashes with other (bounded) parameters verify: the string describes itself."""
        salt = b"0123456789abcdef"
        key = hashlib.scrypt(b"secret", salt=salt, n=2**10, r=4, p=2, dklen=24)
        encoded = "$".join(
            [
                "scrypt",
                "1024",
                "4",
                "2",
                base64.b64encode(salt).decode(),
                base64.b64encode(key).decode(),
            ]
        )
        self.assertTrue(verify_password("secret", encoded))
        self.assertFalse(verify_password("secreT", encoded))


class CountingVerify:
    """A verify function that counts calls (and records the calling thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.threads: list[threading.Thread] = []

    def __call__(self, password: str, encoded: str) -> bool:
        self.calls.append((password, encoded))
        self.threads.append(threading.current_thread())
        return verify_password(password, encoded)


class ManualThreadPool(ThreadPool):
    """A thread pool that queues work until the test runs it (in the test's thread)."""

    def __init__(self) -> None:
        super().__init__(minthreads=0, maxthreads=1, name="manual")
        self.queued: list[Callable[[], None]] = []

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, Any], object] | None,
        func: Callable[..., Any],
        *args: Any,
        **kw: Any,
    ) -> None:
        def run() -> None:
            try:
                result = func(*args, **kw)
            except BaseException:
                if onResult is not None:
                    onResult(False, Failure())
            else:
                if onResult is not None:
                    onResult(True, result)

        self.queued.append(run)

    def run_all(self) -> None:
        while self.queued:
            self.queued.pop(0)()


@implementer(IReactorFromThreads)
class ImmediateReactor:
    """``callFromThread`` that calls at once (the manual pool runs in the test's thread)."""

    def callFromThread(self, callable: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        callable(*args, **kwargs)


class PasswordVerifierTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.pool = ManualThreadPool()
        self.counting = CountingVerify()
        self.verifier = PasswordVerifier(
            threadpool=self.pool, reactor=ImmediateReactor(), verify_fn=self.counting
        )

    def verify(self, password: str, encoded: str) -> bool:
        d = Deferred.fromCoroutine(self.verifier.verify(password, encoded))
        self.pool.run_all()
        result: bool = self.successResultOf(d)
        return result

    def test_runs_in_pool(self) -> None:
        """Nothing is verified on the calling thread: the result waits for the pool."""
        d = Deferred.fromCoroutine(self.verifier.verify("secret", HASH_SECRET))
        self.assertNoResult(d)
        self.assertEqual(self.counting.calls, [])
        self.assertEqual(len(self.pool.queued), 1)
        self.pool.run_all()
        self.assertIs(self.successResultOf(d), True)

    def test_second_verification_cached(self) -> None:
        self.assertTrue(self.verify("secret", HASH_SECRET))
        self.assertEqual(len(self.counting.calls), 1)
        d = Deferred.fromCoroutine(self.verifier.verify("secret", HASH_SECRET))
        self.assertIs(self.successResultOf(d), True)  # Without running the pool.
        self.assertEqual(self.pool.queued, [])
        self.assertEqual(len(self.counting.calls), 1)
        self.assertEqual(self.verifier.cached_entries(), 1)

    def test_cache_uses_normalised_password(self) -> None:
        encoded = hash_password(PRECIS_SET)
        self.assertTrue(self.verify(PRECIS_SET, encoded))
        self.assertTrue(self.verify(PRECIS_LOGIN, encoded))
        self.assertEqual(len(self.counting.calls), 1)

    def test_failures_not_cached(self) -> None:
        for _ in range(3):
            self.assertFalse(self.verify("wrong", HASH_SECRET))
        self.assertEqual(len(self.counting.calls), 3)
        self.assertEqual(self.verifier.cached_entries(), 0)

    def test_cached_success_does_not_accept_other_password(self) -> None:
        self.assertTrue(self.verify("secret", HASH_SECRET))
        self.assertFalse(self.verify("secret2", HASH_SECRET))
        self.assertFalse(self.verify("other password", HASH_SECRET))
        self.assertEqual(len(self.counting.calls), 3)

    def test_new_hash_invalidates(self) -> None:
        """After a password change (new stored hash) the old password fails."""
        self.assertTrue(self.verify("secret", HASH_SECRET))
        self.assertFalse(self.verify("secret", HASH_OTHER))
        self.assertEqual(len(self.counting.calls), 2)
        # Even a new hash of the same password is verified with scrypt once.
        rehashed = hash_password("secret")
        self.assertTrue(self.verify("secret", rehashed))
        self.assertEqual(len(self.counting.calls), 3)

    def test_invalid_password_not_verified(self) -> None:
        self.assertFalse(self.verify("", HASH_SECRET))
        self.assertFalse(self.verify("a\x00", HASH_SECRET))
        self.assertEqual(self.counting.calls, [])

    def test_cache_bounded_lru(self) -> None:
        verifier = PasswordVerifier(
            threadpool=self.pool,
            reactor=ImmediateReactor(),
            verify_fn=lambda password, encoded: True,
            max_cache_entries=3,
        )

        def verify(password: str) -> None:
            d = Deferred.fromCoroutine(verifier.verify(password, HASH_SECRET))
            self.pool.run_all()
            self.assertTrue(self.successResultOf(d))

        def cached(password: str) -> bool:
            d = Deferred.fromCoroutine(verifier.verify(password, HASH_SECRET))
            hit = not self.pool.queued
            self.pool.run_all()
            self.successResultOf(d)
            return hit

        for password in ("a", "b", "c"):
            verify(password)
        self.assertTrue(cached("a"))  # "a" is now the most recently used.
        verify("d")  # Evicts "b", the least recently used.
        self.assertEqual(verifier.cached_entries(), 3)
        self.assertTrue(cached("a"))
        self.assertTrue(cached("c"))
        self.assertTrue(cached("d"))
        self.assertFalse(cached("b"))
        for i in range(100):
            verify(f"p{i}")
        self.assertEqual(verifier.cached_entries(), 3)

    def test_cache_disabled(self) -> None:
        verifier = PasswordVerifier(
            threadpool=self.pool,
            reactor=ImmediateReactor(),
            verify_fn=self.counting,
            max_cache_entries=0,
        )
        for _ in range(2):
            d = Deferred.fromCoroutine(verifier.verify("secret", HASH_SECRET))
            self.pool.run_all()
            self.assertTrue(self.successResultOf(d))
        self.assertEqual(len(self.counting.calls), 2)
        self.assertRaises(
            ValueError,
            PasswordVerifier,
            threadpool=self.pool,
            reactor=ImmediateReactor(),
            max_cache_entries=-1,
        )

    def test_clear_cache(self) -> None:
        self.assertTrue(self.verify("secret", HASH_SECRET))
        self.verifier.clear_cache()
        self.assertTrue(self.verify("secret", HASH_SECRET))
        self.assertEqual(len(self.counting.calls), 2)

    def test_cache_key_is_per_instance(self) -> None:
        """Cache keys come from a random per-instance secret, not just a plain hash."""
        other = PasswordVerifier(threadpool=self.pool, reactor=ImmediateReactor())
        self.assertNotEqual(
            self.verifier._cache_key("secret", HASH_SECRET),
            other._cache_key("secret", HASH_SECRET),
        )
        self.assertNotIn(repr(self.verifier._cache_secret), repr(self.verifier))

    def test_verify_fn_error_propagates(self) -> None:
        def broken(password: str, encoded: str) -> bool:
            raise RuntimeError("boom")

        verifier = PasswordVerifier(
            threadpool=self.pool, reactor=ImmediateReactor(), verify_fn=broken
        )
        d = Deferred.fromCoroutine(verifier.verify("secret", HASH_SECRET))
        self.pool.run_all()
        self.failureResultOf(d, RuntimeError)
        self.assertEqual(verifier.cached_entries(), 0)


class RealThreadPoolTests(TestCase):
    """The verifier with a real ThreadPool and the real reactor."""

    def setUp(self) -> None:
        self.pool = ThreadPool(minthreads=1, maxthreads=2, name="test-passwords")
        self.pool.start()
        self.addCleanup(self.pool.stop)
        self.counting = CountingVerify()
        self.verifier = PasswordVerifier(
            threadpool=self.pool,
            reactor=global_reactor,  # type: ignore[arg-type]
            verify_fn=self.counting,
        )

    async def test_verify_in_thread(self) -> None:
        self.assertTrue(await self.verifier.verify("secret", HASH_SECRET))
        self.assertFalse(await self.verifier.verify("wrong", HASH_SECRET))
        self.assertEqual(len(self.counting.threads), 2)
        for thread in self.counting.threads:
            self.assertIsNot(thread, threading.main_thread())
        # Cached: no further call.
        self.assertTrue(await self.verifier.verify("secret", HASH_SECRET))
        self.assertEqual(len(self.counting.calls), 2)

    async def test_default_verify_fn(self) -> None:
        verifier = PasswordVerifier(threadpool=self.pool, reactor=global_reactor)  # type: ignore[arg-type]
        self.assertTrue(await verifier.verify(PRECIS_LOGIN, hash_password(PRECIS_SET)))
        self.assertFalse(await verifier.verify("secret", "scrypt$garbage"))
