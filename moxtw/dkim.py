"""DKIM signing of submitted messages (RFC 6376, RFC 8463) and ``moxtw dkim generate``.

Like mox, moxtw signs once, at submission: :meth:`moxtw.submit.Submitter.submit` asks the
:class:`Signer` for DKIM-Signature headers and appends them to the message prefix stored
with each queue row, after the Received header (spec §2.2.3), so every delivery attempt
sends the same signature.  The signing domain is the domain of the From header's address;
it signs with the selectors in that domain's ``[domains.X.dkim] sign`` list, in order.

Signing is done by dkimpy (canonicalization relaxed/relaxed, ``rsa-sha256`` or
``ed25519-sha256`` from the key's type) in a thread pool: hashing a large message is CPU
work that must not block the reactor.  Only the RSA private-key operation of moxtw's keys
is handed to OpenSSL (see ``_install_openssl_rsa``): 7x faster than dkimpy's own.  Keys are PEM files (PKCS#8 or, for RSA, PKCS#1),
read and checked once at startup: :func:`load_private_key` is used by the configuration
check (so ``moxtw checkconfig`` reports a bad key) and by :func:`build_signer`.

Every signed header is also oversigned: listed once more than the message has it, so
that no instance of it can be added without breaking the signature (mox does the same).
"""

from __future__ import annotations

import argparse
import base64
import email.utils
import os
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from .address import (
    Address,
    AddressError,
    DomainError,
    canonical_localpart,
    domain_to_ascii,
    parse_address,
    parse_domain,
)
from .config import Config, ConfigError, is_dkim_selector

__all__ = [
    "DEFAULT_HEADERS",
    "DKIMKeyError",
    "DKIMSignError",
    "PrivateKey",
    "SelectorKey",
    "Signer",
    "add_cli",
    "build_signer",
    "cmd_generate",
    "dns_txt_strings",
    "generate_key",
    "load_private_key",
    "parse_private_key",
    "sign_message",
    "write_key_file",
]

#: Headers signed when a selector has no ``headers``: mox's default set, plus MIME-Version
#: and the one-click unsubscribe headers (RFC 8058 wants them covered by a signature).
DEFAULT_HEADERS = (
    "From",
    "To",
    "Cc",
    "Bcc",
    "Reply-To",
    "References",
    "In-Reply-To",
    "Subject",
    "Date",
    "Message-Id",
    "Content-Type",
    "MIME-Version",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)

CANONICALIZATION = (b"relaxed", b"relaxed")

#: RSA keys smaller than this are refused (RFC 8301; verifiers ignore smaller ones).
MIN_RSA_BITS = 1024
MAX_RSA_BITS = 4096

# A localpart usable as is in the i= tag: a dot-atom without "=" (which, like ";", would
# need dkim-quoted-printable encoding).
_IDENTITY_LOCALPART_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/?^_`{|}~-]+)*$")


# --- keys ------------------------------------------------------------------------------


class DKIMKeyError(Exception):
    """A private key file that cannot be used; ``str(exc)`` says why."""


@attrs.frozen
class PrivateKey:
    """A private key, ready for dkimpy."""

    #: ``rsa-sha256`` or ``ed25519-sha256``.
    algorithm: str
    #: What dkimpy's ``sign`` takes: PKCS#1 PEM (RSA) or the base64 seed (Ed25519).
    signing_key: bytes = attrs.field(repr=False)
    #: The public key as the ``p=`` tag of the DNS record has it (base64).
    public_key: str
    #: RSA modulus size; 256 for Ed25519.
    bits: int
    #: The RSA key as a ``cryptography`` object, for signing with OpenSSL (None: Ed25519),
    #: and its modulus.
    rsa_key: Any = attrs.field(default=None, repr=False, eq=False)
    rsa_modulus: int = attrs.field(default=0, repr=False)

    @property
    def key_type(self) -> str:
        """The ``k=`` tag: ``rsa`` or ``ed25519``."""
        return self.algorithm.split("-")[0]

    def dns_record(self) -> str:
        """The TXT record value: ``v=DKIM1; k=rsa; p=...``."""
        return f"v=DKIM1; k={self.key_type}; p={self.public_key}"


def parse_private_key(pem: bytes) -> PrivateKey:
    """An RSA or Ed25519 private key from PEM; raises :class:`DKIMKeyError`."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:  # what cryptography raises for an encrypted key without password
        raise DKIMKeyError("key is encrypted; DKIM key files must not be") from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise DKIMKeyError(f"not a PEM private key ({e})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise DKIMKeyError(f"RSA key of {key.key_size} bits is too small: {MIN_RSA_BITS} at least, 2048 recommended")
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        pkcs1 = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        modulus = key.public_key().public_numbers().n
        return PrivateKey("rsa-sha256", pkcs1, base64.b64encode(spki).decode(), key.key_size, key, modulus)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return PrivateKey("ed25519-sha256", base64.b64encode(seed), base64.b64encode(public).decode(), 256)
    raise DKIMKeyError(f"unsupported key type {type(key).__name__}: DKIM keys are RSA or Ed25519")


def load_private_key(path: Path) -> PrivateKey:
    """Read and check a key file; raises :class:`DKIMKeyError` with the reason."""
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise DKIMKeyError(f"cannot read {path}: {e.strerror}") from None
    try:
        return parse_private_key(pem)
    except DKIMKeyError as e:
        raise DKIMKeyError(f"{path}: {e}") from None


def generate_key(algorithm: str = "rsa", bits: int = 2048) -> bytes:
    """A new private key as PKCS#8 PEM; ``algorithm`` is ``rsa`` or ``ed25519``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise ValueError(f"RSA key size must be between {MIN_RSA_BITS} and {MAX_RSA_BITS} bits")
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    elif algorithm == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}: rsa or ed25519")
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def dns_txt_strings(record: str, size: int = 255) -> list[str]:
    """``record`` cut into TXT character-strings of at most ``size`` bytes (RFC 1035)."""
    return [record[i : i + size] for i in range(0, len(record), size)] or [""]


# --- signing ---------------------------------------------------------------------------


@attrs.frozen
class SelectorKey:
    selector: str
    key: PrivateKey
    #: Header names to sign (each once per occurrence, plus once more).
    headers: tuple[str, ...] = DEFAULT_HEADERS


@attrs.frozen
class DomainKeys:
    """A signing domain: its selectors in ``sign`` order and its localpart rules."""

    keys: tuple[SelectorKey, ...]
    catchall_separators: tuple[str, ...] = ()
    localpart_case_sensitive: bool = False


class DKIMSignError(Exception):
    """dkimpy could not sign the message (e.g. a malformed header line)."""


def signed_headers(present: Sequence[str], names: Sequence[str]) -> list[bytes]:
    """The h= list: each of ``names`` once per occurrence in ``present``, plus once more."""
    counts: dict[str, int] = {}
    for name in present:
        counts[name.lower()] = counts.get(name.lower(), 0) + 1
    out: list[bytes] = []
    seen: set[str] = set()
    for name in names:
        lower = name.lower()
        if lower in seen:
            continue
        seen.add(lower)
        out.extend([lower.encode("ascii")] * (counts.get(lower, 0) + 1))
    return out


# dkimpy computes RSA signatures with Python integers: 7.5 ms of CPU, holding the GIL, for
# each 2048-bit signature, against 0.35 ms in OpenSSL.  Everything else stays dkimpy's:
# its one RSA signing function is wrapped, once, to hand keys that moxtw loaded (by
# modulus) to OpenSSL; other keys and hashes go to dkimpy's own code.  PKCS#1 v1.5
# signatures are deterministic, so both give the same bytes (tests check this).
_openssl_rsa_keys: dict[int, Any] = {}


def _install_openssl_rsa() -> None:
    import dkim

    if getattr(dkim.RSASSA_PKCS1_v1_5_sign, "moxtw_openssl", False):
        return

    def rsa_sign(hash: Any, private_key: Mapping[str, Any]) -> bytes:
        key = _openssl_rsa_keys.get(private_key["modulus"])
        if key is None or hash.name.lower() != "sha256":
            result: bytes = dkim.crypto.RSASSA_PKCS1_v1_5_sign(hash, private_key)
            return result
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        signature: bytes = key.sign(hash.digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        return signature

    rsa_sign.moxtw_openssl = True  # type: ignore[attr-defined]
    dkim.RSASSA_PKCS1_v1_5_sign = rsa_sign


def _register_rsa_key(key: PrivateKey) -> None:
    if key.rsa_key is not None:
        _openssl_rsa_keys[key.rsa_modulus] = key.rsa_key


def sign_message(message: bytes, domain: str, identity: str | None, keys: Sequence[SelectorKey]) -> bytes:
    """The DKIM-Signature header(s) for ``message``, one per key, each ending in CRLF.

    ``domain`` is the d= domain in ASCII form; ``identity`` the i= value (None: ``@domain``).
    Runs in a thread; raises :class:`DKIMSignError`.
    """
    import dkim

    _install_openssl_rsa()
    for k in keys:
        _register_rsa_key(k.key)
    try:
        signer = dkim.DKIM(message, linesep=b"\r\n")
        signer.should_not_sign.discard(b"bcc")
        present = [name.decode("ascii", "replace") for name, _ in signer.headers]
        out = []
        for k in keys:
            out.append(
                signer.sign(
                    k.selector.encode("ascii"),
                    domain.encode("ascii"),
                    k.key.signing_key,
                    signature_algorithm=k.key.algorithm.encode("ascii"),
                    identity=identity.encode("ascii") if identity is not None else None,
                    canonicalize=CANONICALIZATION,
                    include_headers=signed_headers(present, k.headers),
                )
            )
    except dkim.DKIMException as e:
        raise DKIMSignError(str(e)) from None
    return b"".join(out)


def from_header_address(data: bytes) -> Address | None:
    """The address of the message's single From header (with a single address), or None."""
    end = data.find(b"\r\n\r\n")
    block = data if end < 0 else data[:end]
    if block.startswith(b"\r\n"):
        return None
    fields: list[list[str]] = []
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t"):
            if fields:
                fields[-1][1] += line
            continue
        name, _, value = line.partition(":")
        fields.append([name.strip().lower(), value])
    froms = [value for name, value in fields if name == "from"]
    if len(froms) != 1:
        return None
    addresses = email.utils.getaddresses(froms)
    if len(addresses) != 1:
        return None
    try:
        return parse_address(addresses[0][1])
    except AddressError:
        return None


@attrs.define(eq=False)
class Signer:
    """Signs submitted messages with the From domain's selectors, in ``pool``."""

    #: Signing domains by their canonical (Unicode) name.
    domains: Mapping[str, DomainKeys]
    pool: ThreadPool
    reactor: IReactorFromThreads

    async def sign(self, prefix: bytes, data: bytes, sender: Address) -> bytes:
        """DKIM-Signature headers for the message ``prefix + data`` (b"" if its From domain
        does not sign); raises :class:`DKIMSignError`.

        The signing domain is the From header's (``sender``'s if the message has no single
        From address); i= is its base address (catchall suffix removed), as in mox.
        """
        author = from_header_address(data) or sender
        domain = self.domains.get(author.domain)
        if domain is None:
            return b""
        localpart = canonical_localpart(
            author.localpart, domain.catchall_separators, domain.localpart_case_sensitive
        )
        ascii_domain = domain_to_ascii(author.domain)
        identity = None
        if _IDENTITY_LOCALPART_RE.match(localpart):
            identity = f"{localpart}@{ascii_domain}"
        headers: bytes = await deferToThreadPool(
            self.reactor, self.pool, _sign_parts, prefix, data, ascii_domain, identity, domain.keys
        )
        return headers


def _sign_parts(prefix: bytes, data: bytes, domain: str, identity: str | None, keys: Sequence[SelectorKey]) -> bytes:
    return sign_message(prefix + data, domain, identity, keys)


def build_signer(config: Config, pool: ThreadPool, reactor: IReactorFromThreads) -> Signer | None:
    """The signer for the configured domains' ``sign`` selectors; None if no domain signs.

    Reads every key file once; raises :class:`~moxtw.config.ConfigError` naming the key
    path of each unusable key.
    """
    problems: list[str] = []
    domains: dict[str, DomainKeys] = {}
    for name, domain in config.domains.items():
        keys: list[SelectorKey] = []
        for sel_name in domain.dkim_sign:
            selector = domain.dkim_selectors[sel_name]
            try:
                key = load_private_key(selector.key_file)
            except DKIMKeyError as e:
                problems.append(f"domains.{name}.dkim.selectors.{sel_name}.key_file: {e}")
                continue
            keys.append(SelectorKey(sel_name, key, selector.headers or DEFAULT_HEADERS))
        if keys:
            try:
                canonical = parse_domain(name)
            except DomainError:
                canonical = name
            domains[canonical] = DomainKeys(
                tuple(keys), domain.catchall_separators, domain.localpart_case_sensitive
            )
    if problems:
        raise ConfigError(problems, str(config.source or ""))
    if not domains:
        return None
    return Signer(domains, pool, reactor)


# --- moxtw dkim generate -----------------------------------------------------------------


def _toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_key(name: str) -> str:
    return name if re.match(r"^[A-Za-z0-9_-]+$", name) else _toml_string(name)


def write_key_file(path: Path, pem: bytes) -> None:
    """Create ``path`` holding ``pem``, mode 0600, fsynced (its directory is made, mode
    0700, if missing).  Never overwrites: raises ``FileExistsError`` if it exists
    (another ``OSError`` for other trouble)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)


def cmd_generate(args: argparse.Namespace) -> int:
    """``moxtw dkim generate DOMAIN SELECTOR``: write a key, print the DNS record."""
    try:
        domain = domain_to_ascii(parse_domain(args.domain))
    except DomainError as e:
        print(f"moxtw: bad domain {args.domain!r}: {e}", file=sys.stderr)
        return 2
    selector = args.selector
    if not is_dkim_selector(selector):
        print(f"moxtw: bad selector {selector!r}: letters, digits and hyphens, like 2026a", file=sys.stderr)
        return 2
    try:
        pem = generate_key(args.algorithm, args.bits)
    except ValueError as e:
        print(f"moxtw: {e}", file=sys.stderr)
        return 2
    path = (Path(args.dir) / f"{domain}-{selector}.pem").absolute()
    try:
        write_key_file(path, pem)
    except FileExistsError:
        print(f"moxtw: {path} exists; not overwriting it (pick another selector)", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"moxtw: cannot create {path}: {e.strerror}", file=sys.stderr)
        return 1
    key = parse_private_key(pem)
    strings = " ".join(f'"{s}"' for s in dns_txt_strings(key.dns_record()))
    size = f"{key.bits} bits" if key.key_type == "rsa" else "256 bits"
    domain_key = _toml_key(args.domain.lower())
    print(f"Wrote {key.key_type} private key ({size}) to {path}")
    print()
    print("Add this DNS record:")
    print()
    print(f"{selector}._domainkey.{domain}. TXT {strings}")
    print()
    print("Once it is published (mail signed with a key that is not in DNS fails DKIM")
    print("checks), add the selector to the configuration and restart moxtw; if the domain")
    print("already has a dkim table, add the selector to its sign list instead:")
    print()
    print(f"[domains.{domain_key}.dkim]")
    print(f'sign = ["{selector}"]')
    print(f"[domains.{domain_key}.dkim.selectors.{_toml_key(selector)}]")
    print(f"key_file = {_toml_string(str(path))}")
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``moxtw dkim ...`` on the ``moxtw`` command's subparsers."""
    dkim = subparsers.add_parser("dkim", help="DKIM keys for signing outgoing mail")
    sub = dkim.add_subparsers(dest="dkim_command", required=True)
    gen = sub.add_parser(
        "generate",
        help="write a new private key, print its DNS record and configuration",
        description="Write DIR/DOMAIN-SELECTOR.pem (mode 0600, never overwritten) and print "
        "the DNS TXT record to publish and the configuration to add.",
    )
    gen.add_argument("domain", help="signing domain, e.g. example.org")
    gen.add_argument("selector", help="selector, e.g. 2026a")
    gen.add_argument("--algorithm", choices=["rsa", "ed25519"], default="rsa", help="key type (default: rsa)")
    gen.add_argument("--bits", type=int, default=2048, help="RSA key size (default: 2048)")
    gen.add_argument("--dir", default=".", help="directory for the key file (default: .)")
    gen.set_defaults(func=cmd_generate)
