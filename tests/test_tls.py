"""The server certificate: loading and checking, the reloadable context, SIGHUP reloads.

Certificates are generated here with ``cryptography``.  The reloadable context is tested
with real TLS handshakes over in-memory transports (iosim); the SIGHUP handler with a
real signal raised in this process and a fake reactor and thread pool, so every step is
deterministic.  ``tests/integration/test_tls_reload.py`` does the same with a real daemon.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from moxtw import cli, localserve, tap
from moxtw.config import TLSConfig
from moxtw.tls import (
    ServerTLS,
    TLSFileError,
    TLSReloader,
    check_tls_config,
    load_certificate,
)

# --- certificates -----------------------------------------------------------------------------

NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "moxtw test CA") -> tuple[x509.Certificate, Any]:
    key = new_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=3650))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_cert(
    key: Any,
    *,
    serial: int,
    not_after: datetime.datetime,
    not_before: datetime.datetime | None = None,
    hostname: str = "localhost",
    ca: tuple[x509.Certificate, Any] | None = None,
) -> x509.Certificate:
    """A server certificate for ``hostname`` (and 127.0.0.1), self-signed unless ``ca``."""
    issuer_name, issuer_key = (name(hostname), key) if ca is None else (ca[0].subject, ca[1])
    return (
        x509.CertificateBuilder()
        .subject_name(name(hostname))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before or NOW - datetime.timedelta(days=1))
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())
    )


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: Any, password: bytes | None = None) -> bytes:
    encryption: Any = (
        serialization.NoEncryption() if password is None else serialization.BestAvailableEncryption(password)
    )
    return bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption))


def write_pair(cert_file: Path, key_file: Path, cert: bytes, key: bytes) -> None:
    """Replace both files the way certbot does: write aside, then rename over."""
    for path, data in ((cert_file, cert), (key_file, key)):
        tmp = path.with_name(path.name + ".new")
        tmp.write_bytes(data)
        tmp.replace(path)


class Files:
    """A certificate/key file pair in a test's temporary directory."""

    def __init__(self, testcase: SynchronousTestCase) -> None:
        directory = Path(testcase.mktemp())
        directory.mkdir()
        self.cert = directory / "fullchain.pem"
        self.key = directory / "privkey.pem"

    def write(self, cert: bytes, key: bytes) -> Files:
        write_pair(self.cert, self.key, cert, key)
        return self

    def load(self) -> Any:
        return load_certificate(self.cert, self.key)


def self_signed(serial: int, days: int = 90, **kw: Any) -> tuple[bytes, bytes]:
    key = new_key()
    return cert_pem(make_cert(key, serial=serial, not_after=NOW + datetime.timedelta(days=days), **kw)), key_pem(key)


# --- loading and checking ---------------------------------------------------------------------


class LoadTests(SynchronousTestCase):
    def test_loads_chain_and_describes_it(self) -> None:
        ca = make_ca()
        key = new_key()
        leaf = make_cert(key, serial=0xA11CE, not_after=NOW + datetime.timedelta(days=90), ca=ca)
        files = Files(self).write(cert_pem(leaf, ca[0]), key_pem(key))
        cert = files.load()
        self.assertEqual(cert.subject, "CN=localhost")
        self.assertEqual(cert.names, ("DNS:localhost", "IP:127.0.0.1"))
        self.assertEqual(cert.serial, "0A11CE")
        self.assertEqual(cert.not_after, NOW + datetime.timedelta(days=90))
        self.assertEqual(cert.chain_length, 2)
        self.assertEqual(cert.warnings, ())
        self.assertEqual(cert.fingerprint, leaf.fingerprint(hashes.SHA256()).hex())
        self.assertIn("serial 0A11CE", cert.describe())
        self.assertIn("2027-02-22T12:00:00Z", cert.describe())

    def test_rsa_key_and_key_in_the_certificate_file(self) -> None:
        """An RSA key; a cert_file that also holds the key (one combined PEM) works too."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = cert_pem(make_cert(key, serial=7, not_after=NOW + datetime.timedelta(days=30)))
        files = Files(self).write(cert + key_pem(key), key_pem(key))
        self.assertEqual(files.load().serial, "07")
        files.key.write_bytes(cert + key_pem(key))
        self.assertEqual(load_certificate(files.key, files.key).serial, "07")

    def test_leaf_without_intermediates_warns(self) -> None:
        ca = make_ca()
        key = new_key()
        leaf = make_cert(key, serial=1, not_after=NOW + datetime.timedelta(days=90), ca=ca)
        cert = Files(self).write(cert_pem(leaf), key_pem(key)).load()
        (warning,) = cert.warnings
        self.assertIn("no intermediate certificates", warning)
        self.assertIn("fullchain.pem", warning)

    def test_chain_out_of_order(self) -> None:
        ca = make_ca()
        other_ca = make_ca("another CA")
        key = new_key()
        leaf = make_cert(key, serial=1, not_after=NOW + datetime.timedelta(days=90), ca=ca)
        cert = Files(self).write(cert_pem(leaf, other_ca[0]), key_pem(key)).load()
        (warning,) = cert.warnings
        self.assertIn("certificate 2 did not issue certificate 1", warning)
        # Intermediate first, server certificate second: the key matches the second.
        files = Files(self).write(cert_pem(ca[0], leaf), key_pem(key))
        e = self.assertRaises(TLSFileError, files.load)
        self.assertIn("belongs to certificate 2: put the server certificate first", str(e))

    def test_key_does_not_match_certificate(self) -> None:
        cert_a, _ = self_signed(1)
        _, key_b = self_signed(2)
        files = Files(self).write(cert_a, key_b)
        e = self.assertRaises(TLSFileError, files.load)
        self.assertEqual(
            str(e),
            f"tls.key_file: {files.key} does not match the certificate in {files.cert} (subject CN=localhost)",
        )

    def test_bad_certificate_files(self) -> None:
        cert, key = self_signed(1)
        ca = make_ca()
        cases: list[tuple[bytes, str]] = [
            (b"", "no PEM certificate (-----BEGIN CERTIFICATE-----) found"),
            (b"garbage\n", "no PEM certificate (-----BEGIN CERTIFICATE-----) found"),
            (key, "no PEM certificate (-----BEGIN CERTIFICATE-----) found"),
            # Half written: cut in the middle of the (only, or the second) certificate.
            (cert[: len(cert) // 2], "incomplete or malformed PEM block (file truncated?)"),
            (cert + cert_pem(ca[0])[:300], "incomplete or malformed PEM block (file truncated?)"),
            (cert.replace(b"MII", b"MIX", 1), "certificate 1 of 1 is not valid"),
        ]
        for data, expected in cases:
            files = Files(self).write(data, key)
            e = self.assertRaises(TLSFileError, files.load)
            self.assertEqual(str(e), f"tls.cert_file: {files.cert}: {expected}")

    def test_bad_key_files(self) -> None:
        key_obj = new_key()
        cert = cert_pem(make_cert(key_obj, serial=1, not_after=NOW + datetime.timedelta(days=9)))
        good = key_pem(key_obj)
        two = good + key_pem(new_key())
        cases: list[tuple[bytes, str]] = [
            (b"", "no PEM private key (-----BEGIN PRIVATE KEY-----) found"),
            (cert, "no PEM private key"),
            (good[: len(good) - 40], "incomplete or malformed PEM block (file truncated?)"),
            (key_pem(key_obj, b"secret"), "the private key is encrypted; moxtw needs it unencrypted"),
            (key_obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                   serialization.BestAvailableEncryption(b"secret")),
             "the private key is encrypted; moxtw needs it unencrypted"),  # Proc-Type: 4,ENCRYPTED
            (good.replace(b"MI", b"XX", 1), "the private key is not valid"),
            (two, "holds 2 private keys, expected one"),
        ]
        for data, expected in cases:
            files = Files(self).write(cert, data)
            e = self.assertRaises(TLSFileError, files.load)
            self.assertTrue(str(e).startswith(f"tls.key_file: {files.key}: "), str(e))
            self.assertIn(expected, str(e))

    def test_missing_and_unreadable(self) -> None:
        files = Files(self)
        e = self.assertRaises(TLSFileError, files.load)
        self.assertEqual(str(e), f"tls.cert_file: cannot read {files.cert}: No such file or directory")
        cert, _ = self_signed(1)
        files.cert.write_bytes(cert)
        files.key.mkdir()
        e = self.assertRaises(TLSFileError, files.load)
        self.assertEqual(str(e), f"tls.key_file: cannot read {files.key}: Is a directory")

    def test_check_tls_config(self) -> None:
        self.assertIsNone(check_tls_config(TLSConfig()))
        files = Files(self).write(*self_signed(0x42))
        loaded = check_tls_config(TLSConfig(cert_file=files.cert, key_file=files.key))
        assert loaded is not None
        self.assertEqual(loaded.serial, "42")


# --- the reloadable context, with real TLS over memory transports -------------------------------


def handshake(context_factory: Any) -> tuple[int, Any]:
    """A TLS handshake between a client and a server built on ``context_factory`` over
    in-memory transports; (the serial number the client saw, the client's TLS protocol)."""
    clock = Clock()  # TLS protocols flush their writes on the clock; the pump advances it
    server = TLSMemoryBIOFactory(context_factory, False, Factory.forProtocol(Protocol), clock=clock)
    client = TLSMemoryBIOFactory(CertificateOptions(), True, Factory.forProtocol(Protocol), clock=clock)
    server_proto = server.buildProtocol(None)
    client_proto = client.buildProtocol(None)
    pump = iosim.connect(server_proto, iosim.makeFakeServer(server_proto),
                         client_proto, iosim.makeFakeClient(client_proto), clock=clock)
    pump.flush()
    peer = client_proto.getPeerCertificate()
    assert peer is not None, "no TLS handshake"
    return int(peer.to_cryptography().serial_number), (client_proto, server_proto, pump)


class ServerTLSTests(SynchronousTestCase):
    def test_new_connections_get_the_new_certificate(self) -> None:
        files = Files(self).write(*self_signed(0xA))
        tls = ServerTLS(files.load())
        self.assertTrue(IOpenSSLServerConnectionCreator.providedBy(tls))
        serial, (old_client, _, old_pump) = handshake(tls)  # an established connection
        self.assertEqual(serial, 0xA)

        tls.replace(files.write(*self_signed(0xB)).load())
        serial, _ = handshake(tls)
        self.assertEqual(serial, 0xB)
        # The connection made before keeps its certificate and still carries data.
        self.assertEqual(old_client.getPeerCertificate().to_cryptography().serial_number, 0xA)
        received: list[bytes] = []
        server_app = old_pump.server.wrappedProtocol
        server_app.dataReceived = received.append
        old_client.write(b"still here")
        old_pump.flush()
        self.assertEqual(b"".join(received), b"still here")

    def test_getcontext_follows_current(self) -> None:
        """For callers that use the older context-factory interface."""
        files = Files(self)
        a = files.write(*self_signed(1)).load()
        tls = ServerTLS(a)
        self.assertIs(tls.getContext(), a.options.getContext())
        b = files.write(*self_signed(2)).load()
        tls.replace(b)
        self.assertIs(tls.getContext(), b.options.getContext())
        self.assertIs(tls.current, b)


# --- SIGHUP reloads ---------------------------------------------------------------------------


class FakeReactor(Clock):
    """A clock that also takes ``callFromThread`` calls (run by :meth:`run_from_thread`)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_thread: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.from_thread.append((f, args))

    def run_from_thread(self) -> None:
        while self.from_thread:
            f, args = self.from_thread.pop(0)
            f(*args)


class ManualPool:
    """A thread pool whose jobs run when the test says so (in this thread)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Callable[..., Any], tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Callable[..., Any], *args: Any) -> None:
        self.jobs.append((on_result, f, args))

    def run_all(self) -> None:
        while self.jobs:
            on_result, f, args = self.jobs.pop(0)
            try:
                result = f(*args)
            except BaseException as e:
                from twisted.python.failure import Failure

                on_result(False, Failure(e))
            else:
                on_result(True, result)


def messages(events: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    from twisted.logger import formatEvent

    return [(e["log_level"].name, formatEvent(e)) for e in events]


class ReloaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.files = Files(self).write(*self_signed(0xA, days=90))
        self.tls = ServerTLS(self.files.load())
        self.reactor = FakeReactor()
        self.reactor.advance(NOW.timestamp())
        self.pool = ManualPool()
        self.results: list[bool] = []
        # Whatever SIGHUP did before this test, it does again afterwards.
        original = signal.getsignal(signal.SIGHUP)
        self.addCleanup(signal.signal, signal.SIGHUP, original)
        self.previous = lambda signum, frame: None
        signal.signal(signal.SIGHUP, self.previous)

    def reloader(self, install_signal: bool = True) -> TLSReloader:
        reloader = TLSReloader(self.tls, self.reactor, pool=self.pool, install_signal=install_signal)  # type: ignore[arg-type]
        reloader.on_reloaded = self.results.append

        def stop() -> None:
            if reloader.running:
                reloader.stopService()

        self.addCleanup(stop)
        return reloader

    def sighup(self) -> list[tuple[str, str]]:
        """SIGHUP to this process, then the reactor's and the thread's share of the work."""
        with capturedLogs() as events:
            signal.raise_signal(signal.SIGHUP)
            # The handler only hands the work to the reactor thread.
            self.assertEqual(len(self.reactor.from_thread), 1)
            self.assertEqual(self.pool.jobs, [])
            self.reactor.run_from_thread()
            self.pool.run_all()
            self.reactor.run_from_thread()
        return messages(events)

    def test_sighup_swaps_and_bad_files_keep_the_old_certificate(self) -> None:
        reloader = self.reloader()
        with capturedLogs() as events:
            reloader.startService()
        (started,) = messages(events)
        self.assertEqual(started[0], "info")
        self.assertIn(f"TLS certificate loaded from {self.files.cert}: subject CN=localhost", started[1])
        self.assertIn("names DNS:localhost, IP:127.0.0.1, serial 0A, valid 2026-11-23T12:00:00Z to 2027-02-22T12:00:00Z",
                      started[1])
        self.assertEqual(signal.getsignal(signal.SIGHUP), reloader._on_signal)

        self.files.write(*self_signed(0xB, days=60))
        logged = self.sighup()
        self.assertEqual(self.results, [True])
        self.assertEqual(self.tls.current.serial, "0B")
        self.assertEqual(handshake(self.tls)[0], 0xB)
        self.assertIn(("info", f"SIGHUP: reloading TLS certificate from {self.files.cert} and {self.files.key}"), logged)
        self.assertTrue(any(level == "info" and text.startswith(f"TLS certificate reloaded from {self.files.cert}: ")
                            and "serial 0B," in text for level, text in logged), logged)

        # Garbage, then a certificate whose key is not (yet) written: errors, B stays.
        good_key = self.files.key.read_bytes()
        for cert, key, problem in [
            (b"garbage", good_key, f"tls.cert_file: {self.files.cert}: no PEM certificate"),
            (self_signed(0xC)[0], good_key, f"tls.key_file: {self.files.key} does not match the certificate"),
        ]:
            self.files.write(cert, key)
            logged = self.sighup()
            self.assertEqual(self.results[-1], False)
            self.assertEqual(self.tls.current.serial, "0B")
            self.assertEqual(handshake(self.tls)[0], 0xB)
            errors = [text for level, text in logged if level == "error"]
            self.assertEqual(len(errors), 1, logged)
            self.assertTrue(errors[0].startswith(
                "TLS certificate not reloaded, still using the previous one (serial 0B, valid to 2027-01-23T12:00:00Z): "
                + problem), errors[0])
        self.assertTrue(reloader.running)

        reloader.stopService()
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)

    def test_signals_during_a_reload_coalesce(self) -> None:
        reloader = self.reloader()
        reloader.startService()
        self.files.write(*self_signed(0xB))
        for _ in range(3):
            signal.raise_signal(signal.SIGHUP)
        self.reactor.run_from_thread()
        self.assertEqual(len(self.pool.jobs), 1)  # one load at a time
        self.files.write(*self_signed(0xC))
        self.pool.run_all()
        self.reactor.run_from_thread()
        # The first load read C already (written before it ran); one more follows.
        self.assertEqual(len(self.pool.jobs), 1)
        self.pool.run_all()
        self.reactor.run_from_thread()
        self.assertEqual(self.results, [True, True])
        self.assertEqual(self.pool.jobs, [])
        self.assertEqual(self.tls.current.serial, "0C")

    def test_stop_waits_for_a_reload_in_flight(self) -> None:
        reloader = self.reloader()
        reloader.startService()
        self.files.write(*self_signed(0xB))
        signal.raise_signal(signal.SIGHUP)
        self.reactor.run_from_thread()
        d = reloader.stopService()
        assert d is not None
        self.assertNoResult(d)
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)
        self.pool.run_all()
        self.reactor.run_from_thread()
        self.assertTrue(self.successResultOf(d))
        # A signal after the stop reaches the previous handler, not the reloader.
        signal.raise_signal(signal.SIGHUP)
        self.assertEqual(self.reactor.from_thread, [])

    def test_unexpected_error_keeps_the_old_certificate(self) -> None:
        reloader = self.reloader(install_signal=False)
        reloader.startService()
        self.assertIs(signal.getsignal(signal.SIGHUP), self.previous)
        self.files.write(*self_signed(0xB))
        import moxtw.tls

        def broken(cert_file: Path, key_file: Path) -> Any:
            raise RuntimeError("a bug")

        self.patch(moxtw.tls, "load_certificate", broken)
        with capturedLogs() as events:
            reloader.request_reload()
            self.pool.run_all()
            self.reactor.run_from_thread()
        self.assertEqual(self.results, [False])
        self.assertEqual(self.tls.current.serial, "0A")
        (failure,) = [e for e in events if "log_failure" in e]
        self.assertIn("still using the previous one (serial 0A)", messages([failure])[0][1])
        self.flushLoggedErrors(RuntimeError)

    def test_expiry_warnings(self) -> None:
        cases = [
            (self_signed(1, days=10), "warn", "expires in 10 days, at 2026-12-04T12:00:00Z"),
            (self_signed(2, days=-1, not_before=NOW - datetime.timedelta(days=10)), "error",
             "EXPIRED at 2026-11-23T12:00:00Z"),
            (self_signed(3, days=90, not_before=NOW + datetime.timedelta(days=2)), "warn",
             "is not valid before 2026-11-26T12:00:00Z"),
        ]
        for (cert, key), level, text in cases:
            self.tls.replace(self.files.write(cert, key).load())
            reloader = self.reloader(install_signal=False)
            with capturedLogs() as events:
                reloader.startService()
            logged = messages(events)
            self.assertIn(level, [lv for lv, t in logged if text in t], logged)
            reloader.stopService()
        # 90 days left: nothing to warn about, at load or in the daily check.
        self.tls.replace(self.files.write(*self_signed(4, days=90)).load())
        reloader = self.reloader(install_signal=False)
        with capturedLogs() as events:
            reloader.startService()
            self.reactor.advance(24 * 3600)
        self.assertEqual([lv for lv, _ in messages(events)], ["info"])
        # The daily check warns once the certificate gets within 14 days of its end.
        with capturedLogs() as events:
            self.reactor.advance(76 * 24 * 3600)
        self.assertEqual([lv for lv, _ in messages(events)], ["warn"])
        with capturedLogs() as events:
            self.reactor.advance(24 * 3600)
        (warning,) = messages(events)
        self.assertIn("expires in 12 days", warning[1])


# --- startup and checkconfig ------------------------------------------------------------------


class StartupTests(SynchronousTestCase):
    def localserve(self, cert: bytes, key: bytes | None = None) -> Path:
        directory = Path(self.mktemp()).absolute()
        localserve.ensure_config(directory)
        (directory / "tls" / "localhost.crt").write_bytes(cert)
        if key is not None:
            (directory / "tls" / "localhost.key").write_bytes(key)
        return directory

    def test_bad_certificate_stops_startup(self) -> None:
        directory = self.localserve(b"-----BEGIN CERTIFICATE-----\nMIIB")
        options = tap.Options()
        e = self.assertRaises(usage.UsageError, options.parseOptions, ["localserve", "--dir", str(directory)])
        self.assertEqual(
            str(e), f"tls.cert_file: {directory}/tls/localhost.crt: incomplete or malformed PEM block (file truncated?)"
        )

    def test_mismatched_key_stops_startup_and_fails_checkconfig(self) -> None:
        cert, _ = self_signed(1)
        directory = self.localserve(cert)
        e = self.assertRaises(usage.UsageError, tap.Options().parseOptions, ["localserve", "--dir", str(directory)])
        self.assertIn(f"tls.key_file: {directory}/tls/localhost.key does not match the certificate in", str(e))
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            self.assertEqual(cli.main(["checkconfig", str(directory / "moxtw.toml")]), 1)
        self.assertEqual(err.getvalue().strip(), str(e))

    def test_good_certificate_passes(self) -> None:
        directory = self.localserve(*self_signed(5))
        options = tap.Options()
        options.parseOptions(["localserve", "--dir", str(directory)])
        self.assertTrue(options.config.tls.enabled)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(cli.main(["checkconfig", str(directory / "moxtw.toml")]), 0)
