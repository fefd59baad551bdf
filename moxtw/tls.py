"""The server certificate for STARTTLS and implicit TLS, from files, reloaded on SIGHUP.

``[tls] cert_file`` (the certificate chain, leaf first: certbot's ``fullchain.pem``) and
``key_file`` (its private key) are read and checked by :func:`load_certificate`: every
PEM block must parse, the key must belong to the first certificate, and every problem is
a :class:`TLSFileError` naming the file and its configuration key.  At startup such an
error stops the daemon (``moxtw.tap`` checks before anything starts, ``moxtw checkconfig``
does the same check).

:class:`ServerTLS` is what the SMTP listeners get as their context factory (Twisted's
``IOpenSSLServerConnectionCreator``: ``TLSMemoryBIOFactory`` for implicit TLS and
``transport.startTLS`` for STARTTLS both accept it).  It hands each new TLS connection an
``SSL.Connection`` on the *current* certificate's context; :meth:`ServerTLS.replace`
swaps that certificate on the reactor thread, so new connections get the new one while
established connections keep the context they were created with.

:class:`TLSReloader` (a child service of the daemon, main process only: the HTTP worker
processes have no TLS) installs a SIGHUP handler.  The handler only schedules the reload
on the reactor with ``callFromThread``; the files are read and parsed in a thread, and
the result is swapped in on the reactor thread.  A file that does not load (half
written, mismatched with its key, unreadable) is logged as an error and the previous
certificate stays in use: a reload never stops the daemon.  In the daemon the SIGHUP
handler is :class:`moxtw.settings.ConfigReloader`'s (one handler: it reloads the
configuration's account settings and calls :meth:`TLSReloader.request_reload`), so the
daemon's reloader is made with ``install_signal=False``.  Neither ``twistd`` nor
``twist`` use SIGHUP themselves (``twistd`` uses SIGUSR1 to reopen its log file when
logging to one), and the reactor installs handlers only for SIGINT, SIGTERM and SIGCHLD.

Every (re)load is logged with the certificate's subject, names, serial and expiry; a
certificate expiring within :data:`EXPIRY_WARNING` (14 days) is warned about then and
once a day while it runs.
"""

from __future__ import annotations

import datetime
import re
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL, crypto
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IOpenSSLContextFactory, IOpenSSLServerConnectionCreator
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from . import metrics
from .config import Config, TLSConfig

__all__ = [
    "EXPIRY_WARNING",
    "Certificate",
    "ServerTLS",
    "TLSFileError",
    "TLSReloader",
    "check_tls_config",
    "load_certificate",
    "tls_context_from_config",
]

#: A certificate expiring within this period is warned about at every load and daily.
EXPIRY_WARNING = datetime.timedelta(days=14)

_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----(?:(?!-----BEGIN ).)*?-----END \1-----", re.DOTALL)
_KEY_TYPES = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey,
              dsa.DSAPrivateKey)


class TLSFileError(Exception):
    """A certificate or key file that cannot be used; the message names the file."""


@attrs.frozen
class Certificate:
    """A loaded, checked certificate chain and key, with what the logs show of it."""

    cert_file: Path
    key_file: Path
    #: The server context configuration: leaf, intermediates and key.
    options: CertificateOptions = attrs.field(repr=False)
    subject: str
    #: subjectAltName entries, as ``DNS:example.org``, ``IP:192.0.2.1``.
    names: tuple[str, ...]
    serial: str  # hex, as ``openssl x509 -serial`` prints it
    not_before: datetime.datetime
    not_after: datetime.datetime
    fingerprint: str  # SHA-256 of the leaf, hex
    #: Number of certificates in cert_file (leaf included).
    chain_length: int
    #: Problems worth a warning that do not stop the certificate being used.
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        names = ", ".join(self.names) or "none"
        return (
            f"subject {self.subject}, names {names}, serial {self.serial}, "
            f"valid {_when(self.not_before)} to {_when(self.not_after)}, sha256 {self.fingerprint}"
        )


def _when(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hex_serial(n: int) -> str:
    """Hex, in whole bytes, as ``openssl x509 -serial`` prints it."""
    text = f"{n:X}"
    return "0" + text if len(text) % 2 else text


def _read(path: Path, label: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise TLSFileError(f"tls.{label}: cannot read {path}: {e.strerror or e}") from None


def _pem_blocks(data: bytes, path: Path, label: str) -> list[tuple[str, bytes]]:
    """Every PEM block as (label, block); a BEGIN line without its complete block (a file
    cut short while being written) is an error, not silently skipped."""
    blocks = [(m.group(1).decode("ascii"), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    if len(blocks) != len(_PEM_BEGIN.findall(data)):
        raise TLSFileError(f"tls.{label}: {path}: incomplete or malformed PEM block (file truncated?)")
    return blocks


def _parse_certificates(path: Path) -> list[x509.Certificate]:
    blocks = [b for kind, b in _pem_blocks(_read(path, "cert_file"), path, "cert_file") if kind == "CERTIFICATE"]
    if not blocks:
        raise TLSFileError(f"tls.cert_file: {path}: no PEM certificate (-----BEGIN CERTIFICATE-----) found")
    certs = []
    for i, block in enumerate(blocks):
        try:
            certs.append(x509.load_pem_x509_certificate(block))
        except ValueError:
            raise TLSFileError(f"tls.cert_file: {path}: certificate {i + 1} of {len(blocks)} is not valid") from None
    return certs


def _parse_key(path: Path) -> Any:
    blocks = _pem_blocks(_read(path, "key_file"), path, "key_file")
    keys = [(kind, b) for kind, b in blocks if kind.endswith("PRIVATE KEY")]
    if not keys:
        raise TLSFileError(f"tls.key_file: {path}: no PEM private key (-----BEGIN PRIVATE KEY-----) found")
    if len(keys) > 1:
        raise TLSFileError(f"tls.key_file: {path}: holds {len(keys)} private keys, expected one")
    kind, block = keys[0]
    if kind == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block:
        raise TLSFileError(f"tls.key_file: {path}: the private key is encrypted; moxtw needs it unencrypted")
    try:
        key = serialization.load_pem_private_key(block, password=None)
    except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: all mean "unusable"
        raise TLSFileError(f"tls.key_file: {path}: the private key is not valid") from None
    if not isinstance(key, _KEY_TYPES):
        raise TLSFileError(f"tls.key_file: {path}: unsupported private key type {type(key).__name__}")
    return key


def _spki(public_key: Any) -> bytes:
    der: bytes = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out = [f"DNS:{n}" for n in san.get_values_for_type(x509.DNSName)]
    out += [f"IP:{ip}" for ip in san.get_values_for_type(x509.IPAddress)]
    return tuple(out)


def _chain_warnings(certs: list[x509.Certificate], cert_file: Path) -> tuple[str, ...]:
    warnings = []
    leaf = certs[0]
    if len(certs) == 1 and leaf.issuer != leaf.subject:
        warnings.append(
            f"{cert_file} holds only the server certificate, no intermediate certificates: clients may "
            "fail to verify it (with certbot, use fullchain.pem rather than cert.pem)"
        )
    for i in range(len(certs) - 1):
        if certs[i].issuer != certs[i + 1].subject:
            warnings.append(
                f"{cert_file}: certificate {i + 2} did not issue certificate {i + 1}: "
                "the chain should be in order, server certificate first"
            )
            break
    return tuple(warnings)


def load_certificate(cert_file: Path, key_file: Path) -> Certificate:
    """Read, parse and check the certificate chain and key; :class:`TLSFileError` if unusable.

    Blocking (file reads, parsing, building the OpenSSL context): the daemon calls it in
    a thread, except once at startup.
    """
    certs = _parse_certificates(cert_file)
    key = _parse_key(key_file)
    leaf = certs[0]
    if _spki(key.public_key()) != _spki(leaf.public_key()):
        matching = [i for i, c in enumerate(certs) if _spki(c.public_key()) == _spki(key.public_key())]
        hint = (
            f" (it belongs to certificate {matching[0] + 1}: put the server certificate first)" if matching else ""
        )
        raise TLSFileError(
            f"tls.key_file: {key_file} does not match the certificate in {cert_file} "
            f"(subject {leaf.subject.rfc4514_string()}){hint}"
        )
    try:
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(leaf),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in certs[1:]] or None,
        )
        # Build the OpenSSL context now (here, in the loading thread), so that anything
        # OpenSSL refuses is an error of this load rather than of the next connection.
        options.getContext()
    except (SSL.Error, crypto.Error, ValueError, TypeError) as e:
        raise TLSFileError(f"tls.cert_file: {cert_file} with {key_file}: OpenSSL refused them: {e}") from None
    return Certificate(
        cert_file=cert_file,
        key_file=key_file,
        options=options,
        subject=leaf.subject.rfc4514_string(),
        names=_names(leaf),
        serial=_hex_serial(leaf.serial_number),
        not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc,
        fingerprint=leaf.fingerprint(hashes.SHA256()).hex(),
        chain_length=len(certs),
        warnings=_chain_warnings(certs, cert_file),
    )


def check_tls_config(tls: TLSConfig) -> Certificate | None:
    """Load ``[tls]`` once to check it (startup, ``moxtw checkconfig``); None if not set."""
    if tls.cert_file is None or tls.key_file is None:
        return None
    return load_certificate(tls.cert_file, tls.key_file)


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLContextFactory)
class ServerTLS:
    """The SMTP listeners' TLS context factory, delegating to the current certificate.

    Not an attrs class: tests set ``iosimVerify`` on it for iosim's pretend TLS.
    """

    def __init__(self, certificate: Certificate) -> None:
        self._current = certificate

    @property
    def current(self) -> Certificate:
        return self._current

    def replace(self, certificate: Certificate) -> None:
        """Use ``certificate`` for new connections (call on the reactor thread)."""
        self._current = certificate

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        return SSL.Connection(self._current.options.getContext(), None)

    def getContext(self) -> SSL.Context:
        context: SSL.Context = self._current.options.getContext()
        return context


def tls_context_from_config(config: Config) -> ServerTLS | None:
    """The server TLS context from ``[tls]`` cert_file/key_file (None if not set).

    Reads the files synchronously: call it while building the service, not later.
    Raises :class:`TLSFileError` if they cannot be used.
    """
    certificate = check_tls_config(config.tls)
    return None if certificate is None else ServerTLS(certificate)


def _now(clock: Any) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(clock.seconds(), datetime.UTC)


class TLSReloader(Service):
    """Reloads the certificate of a :class:`ServerTLS` on SIGHUP; logs it and its expiry.

    ``reactor`` provides ``IReactorTime`` and ``IReactorFromThreads`` (and
    ``getThreadPool`` when no ``pool`` is given: reloads are rare and quick).  With
    ``install_signal`` False (tests) no handler is installed; :meth:`reload` does the work.
    """

    log = Logger()

    def __init__(
        self,
        tls: ServerTLS,
        reactor: Any,
        *,
        pool: ThreadPool | None = None,
        install_signal: bool = True,
        signum: int = signal.SIGHUP,
    ) -> None:
        self.tls = tls
        self.reactor = reactor
        self.pool = pool
        self.install_signal = install_signal
        self.signum = signum
        self.name = "tls-reloader"
        self._previous: Any = None
        self._installed = False
        self._running: Deferred[bool] | None = None
        self._again = False
        self._daily: LoopingCall | None = None
        #: Called after each reload attempt with its result (tests).
        self.on_reloaded: Callable[[bool], object] = lambda ok: None

    # --- service ---------------------------------------------------------------------------

    def startService(self) -> None:
        Service.startService(self)
        self._announce(self.tls.current, "loaded")
        if self.install_signal:
            try:
                self._previous = signal.signal(self.signum, self._on_signal)
                self._installed = True
            except ValueError:  # not the main thread: no signals here
                self.log.warn("cannot install a SIGHUP handler: TLS certificates will not be reloaded")
        self._daily = LoopingCall(self._check_expiry)
        self._daily.clock = self.reactor
        self._daily.start(24 * 3600, now=False)

    def stopService(self) -> Deferred[bool] | None:
        Service.stopService(self)
        if self._installed:
            if signal.getsignal(self.signum) == self._on_signal:
                signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False
        if self._daily is not None and self._daily.running:
            self._daily.stop()
        self._daily = None
        self._again = False
        # A reload in flight finishes (its thread cannot be interrupted) before we are stopped.
        return self._running

    # --- reloading -------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A Python signal handler runs between two bytecodes of whatever the main thread is
        # doing, possibly in the middle of reactor code: only hand the work to the reactor.
        self.reactor.callFromThread(self.request_reload)

    def request_reload(self) -> None:
        """Reload now, or once more after the reload in flight (several SIGHUPs coalesce)."""
        if not self.running:
            return
        if self._running is not None:
            self._again = True
            return
        self.log.info(
            "SIGHUP: reloading TLS certificate from {cert_file} and {key_file}",
            cert_file=str(self.tls.current.cert_file),
            key_file=str(self.tls.current.key_file),
        )
        self._running = Deferred.fromCoroutine(self.reload())

        def done(ok: bool) -> bool:
            self._running = None
            self.on_reloaded(ok)
            if self._again:
                self._again = False
                self.request_reload()
            return ok

        self._running.addCallback(done)

    async def reload(self) -> bool:
        """Load the files again (in a thread) and swap on success; False if kept the old one."""
        old = self.tls.current
        pool = self.pool if self.pool is not None else self.reactor.getThreadPool()
        try:
            new: Certificate = await deferToThreadPool(self.reactor, pool, load_certificate, old.cert_file, old.key_file)
        except TLSFileError as e:
            metrics.tls_reloads.labels("error").inc()
            self.log.error(
                "TLS certificate not reloaded, still using the previous one (serial {serial}, valid to {not_after}): "
                "{error}",
                serial=old.serial,
                not_after=_when(old.not_after),
                error=str(e),
            )
            return False
        except Exception:
            metrics.tls_reloads.labels("error").inc()
            self.log.failure("TLS certificate not reloaded, still using the previous one (serial {serial})",
                             serial=old.serial)
            return False
        self.tls.replace(new)
        metrics.tls_reloads.labels("ok").inc()
        self._announce(new, "reloaded")
        return True

    # --- logging ---------------------------------------------------------------------------

    def _announce(self, cert: Certificate, how: str) -> None:
        metrics.tls_certificate_not_after.set(cert.not_after.timestamp())
        self.log.info(
            "TLS certificate {how} from {cert_file}: {description}",
            how=how,
            cert_file=str(cert.cert_file),
            description=cert.describe(),
            serial=cert.serial,
            not_after=_when(cert.not_after),
        )
        for warning in cert.warnings:
            self.log.warn("TLS certificate: {warning}", warning=warning)
        self._check_expiry()

    def _check_expiry(self) -> None:
        cert = self.tls.current
        now = _now(self.reactor)
        left = cert.not_after - now
        if left <= datetime.timedelta(0):
            self.log.error(
                "TLS certificate {cert_file} (serial {serial}) EXPIRED at {not_after}: renew it, then "
                "reload moxtw (systemctl reload moxtw, or kill -HUP)",
                cert_file=str(cert.cert_file), serial=cert.serial, not_after=_when(cert.not_after),
            )
        elif left < EXPIRY_WARNING:
            self.log.warn(
                "TLS certificate {cert_file} (serial {serial}) expires in {days} days, at {not_after}: renew it, "
                "then reload moxtw (systemctl reload moxtw, or kill -HUP)",
                cert_file=str(cert.cert_file), serial=cert.serial, days=left.days, not_after=_when(cert.not_after),
            )
        if cert.not_before > now:
            self.log.warn(
                "TLS certificate {cert_file} (serial {serial}) is not valid before {not_before}",
                cert_file=str(cert.cert_file), serial=cert.serial, not_before=_when(cert.not_before),
            )
