"""Email addresses as mox handles them: parsing, formatting and normalisation.

Addresses are parsed like mox's ``smtp.ParseAddress``: an RFC 5321 localpart (a
dot-string of atoms or a quoted-string, UTF-8 allowed per RFC 6531), ``@``, and a
domain name that is IDNA-canonicalised (UTS #46 mapping, non-transitional, STD3
rules) and lower-cased.  No display-name syntax, no IP literal.

Error texts match mox's, so they can be sent to webapi clients unchanged: for
``parse_address("not an address")`` ``str(exc)`` is::

    parsing address "not an address": invalid email address: expected @

(``exc.detail`` holds the part after the quoted address).
"""

from __future__ import annotations

import functools
import ipaddress
import unicodedata
from collections.abc import Sequence

import attrs
import idna
from idna.core import IDNAError

__all__ = [
    "Address",
    "AddressError",
    "DomainError",
    "base_address",
    "canonical_localpart",
    "domain_to_ascii",
    "go_lower",
    "go_quote",
    "has_control_chars",
    "pack_localpart",
    "parse_address",
    "parse_domain",
    "parse_localpart",
]

# Characters allowed in an atom besides ASCII letters, digits and non-ASCII.
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")

# Localparts longer than this (in UTF-8 bytes) are refused, like mox (which is
# lenient beyond the RFC 5321 limit of 64 because generated bounce addresses in
# the wild are often longer).
_MAX_LOCALPART_OCTETS = 128


class DomainError(ValueError):
    """A domain name could not be parsed. The message is mox's error text."""


class AddressError(ValueError):
    """An email address could not be parsed.

    ``str(exc)`` is the complete mox error message, ``parsing address "<addr>":
    invalid email address: <reason>``, as used for the webapi ``badAddress``
    error.  ``detail`` is the part after the colon (``invalid email address:
    <reason>``), ``address`` the input string.
    """

    def __init__(self, address: str, detail: str) -> None:
        self.address = address
        self.detail = detail
        super().__init__(f"parsing address {go_quote(address)}: {detail}")


class _LocalpartError(Exception):
    pass


def has_control_chars(s: str) -> bool:
    """Whether s has any character below 0x20 (including TAB, CR and LF)."""
    return any(c < "\x20" for c in s)


def go_lower(s: str) -> str:
    """Lower-case like Go's strings.ToLower: simple per-character case mapping.

    Python's str.lower uses full case mapping with context (final sigma) and maps
    U+0130 to two characters; Go maps each rune to a single rune.
    """
    if s.isascii():
        return s.lower()
    out = []
    for c in s:
        low = c.lower()
        if len(low) != 1:
            # Only U+0130 (LATIN CAPITAL LETTER I WITH DOT ABOVE) has a
            # multi-character full lower-case mapping; its simple mapping is "i".
            low = "i" if c == "\u0130" else c
        out.append(low)
    return "".join(out)


def go_quote(s: str) -> str:
    """Quote s like Go's strconv.Quote (and fmt's %q verb for strings)."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c == '"' or c == "\\":
            out.append("\\" + c)
        elif c.isprintable() and not 0xD800 <= o <= 0xDFFF:
            out.append(c)
        elif c == "\a":
            out.append("\\a")
        elif c == "\b":
            out.append("\\b")
        elif c == "\f":
            out.append("\\f")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\v":
            out.append("\\v")
        elif o < 0x80:
            out.append(f"\\x{o:02x}")
        elif 0xD800 <= o <= 0xDFFF:
            # Not representable in Go strings; Go would have U+FFFD here.
            out.append("\\ufffd")
        elif o < 0x10000:
            out.append(f"\\u{o:04x}")
        else:
            out.append(f"\\U{o:08x}")
    out.append('"')
    return "".join(out)


# --- domains ---------------------------------------------------------------


def _idna_label_error(label: str) -> DomainError:
    return DomainError(f"idna: to ascii: idna: invalid label {go_quote(label)}")


def _uts46_map(s: str) -> str:
    """UTS #46 mapping (non-transitional, STD3 rules) with Go-style errors."""
    out = []
    for c in s:
        try:
            out.append(idna.uts46_remap(c, std3_rules=True, transitional=False))
        except IDNAError:
            raise DomainError(f"idna: to ascii: idna: disallowed rune U+{ord(c):04X}") from None
    return unicodedata.normalize("NFC", "".join(out))


def _validate_ulabel(label: str, errlabel: str) -> None:
    """Label checks of UTS #46 (hyphens, leading combiner, joiners, bidi)."""
    if len(label) > 4 and label[2:4] == "--":
        raise _idna_label_error(errlabel)
    if label.startswith("-") or label.endswith("-"):
        raise _idna_label_error(errlabel)
    if unicodedata.category(label[0]).startswith("M"):
        raise _idna_label_error(errlabel)
    for i, c in enumerate(label):
        if c in "\u200c\u200d":
            try:
                ok = idna.valid_contextj(label, i)
            except (IDNAError, ValueError):
                ok = False
            if not ok:
                raise _idna_label_error(errlabel)
    if not label.isascii():
        try:
            idna.check_bidi(label)
        except IDNAError:
            raise _idna_label_error(errlabel) from None


def _is_ip(s: str) -> bool:
    if "%" in s:
        return False
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


def parse_domain(s: str) -> str:
    """Parse a domain name given with ASCII labels, A-labels or U-labels.

    Returns the canonical Unicode form (U-labels, lower case, NFC), like mox's
    dns.ParseDomain (whose Unicode form we keep; use domain_to_ascii for the
    IDNA ASCII form).  Raises DomainError with mox's message text.
    """
    if s.endswith("."):
        raise DomainError("dns name has trailing dot")
    if _is_ip(s):
        raise DomainError("ip address while name required")
    mapped = _uts46_map(s)
    labels = mapped.split(".")
    ulabels = []
    for label in labels:
        if label == "":
            raise _idna_label_error(s)
        if label.startswith("xn--"):
            try:
                ulabel = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, ValueError):
                raise _idna_label_error(label) from None
            if ulabel == "" or ulabel.isascii():
                raise _idna_label_error(label)
            # The decoded label must be in canonical (mapped) form.
            try:
                remapped = _uts46_map(ulabel)
            except DomainError:
                raise _idna_label_error(label) from None
            if remapped != ulabel or "." in ulabel:
                raise _idna_label_error(label)
            _validate_ulabel(ulabel, label)
            ulabels.append(ulabel)
        else:
            _validate_ulabel(label, label)
            ulabels.append(label)
    return ".".join(ulabels)


def domain_to_ascii(domain: str) -> str:
    """IDNA ASCII form of a domain already normalised by parse_domain."""
    if domain.isascii():
        return domain
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        for label in domain.split(".")
    )


# --- localparts --------------------------------------------------------------


class _Parser:
    def __init__(self, s: str) -> None:
        self.s = s
        self.o = 0

    def error(self, msg: str) -> _LocalpartError:
        return _LocalpartError(msg)

    def xchar(self) -> str:
        if self.o >= len(self.s):
            raise self.error("need another character")
        c = self.s[self.o]
        self.o += 1
        return c

    def xatom(self) -> str:
        if self.o >= len(self.s):
            raise self.error("need at least one char for atom")
        start = self.o
        while self.o < len(self.s):
            c = self.s[self.o]
            if c.isascii() and (c.isalnum() or c in _ATEXT_SPECIALS) or not c.isascii():
                self.o += 1
                continue
            if self.o == start:
                raise self.error(f"expected at least one char for atom, got char {c}")
            break
        return self.s[start : self.o]

    def xquoted_string(self) -> str:
        self.o += 1  # opening dquote, checked by caller
        out = []
        esc = False
        while True:
            c = self.xchar()
            if esc:
                if " " <= c < "\x7f":
                    out.append(c)
                    esc = False
                    continue
                raise self.error(f"invalid localpart, bad escaped char {c}")
            if c == "\\":
                esc = True
                continue
            if c == '"':
                return "".join(out)
            if " " <= c < "\x7f" or c > "\x7f":
                out.append(c)
                continue
            raise self.error(f"invalid localpart, invalid character {c}")

    def xlocalpart(self) -> str:
        if self.s.startswith('"', self.o):
            s = self.xquoted_string()
        else:
            s = self.xatom()
            while self.s.startswith(".", self.o):
                self.o += 1
                s += "." + self.xatom()
        if len(_utf8(s)) > _MAX_LOCALPART_OCTETS:
            raise self.error("localpart longer than 64 octets")
        return unicodedata.normalize("NFC", s)


def _utf8(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass")


def _parse_localpart_prefix(s: str) -> tuple[str, str]:
    """Parse a localpart at the start of s, return it (decoded) and the remainder."""
    p = _Parser(s)
    lp = p.xlocalpart()
    return lp, s[p.o :]


def parse_localpart(s: str) -> str:
    """Parse a (possibly quoted) localpart; returns it decoded (no quotes), NFC.

    Raises ValueError with mox's message text.
    """
    try:
        lp, rem = _parse_localpart_prefix(s)
    except _LocalpartError as e:
        raise ValueError(f"invalid localpart: {e}") from None
    if rem:
        raise ValueError(f"invalid localpart: remaining after localpart: {go_quote(rem)}")
    return lp


def pack_localpart(localpart: str) -> str:
    """SMTP form of a decoded localpart: as dot-string if possible, else quoted."""
    dotstr = True
    for atom in localpart.split("."):
        if atom == "":
            dotstr = False
            break
        for c in atom:
            if c.isascii() and not (c.isalnum() or c in _ATEXT_SPECIALS):
                dotstr = False
                break
        if not dotstr:
            break
    if dotstr:
        return localpart
    return '"' + localpart.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- addresses ----------------------------------------------------------------


@attrs.frozen
class Address:
    """A parsed email address.

    ``localpart`` is decoded (no quotes or escapes) and in Unicode NFC, with its
    case preserved.  ``domain`` is the canonical domain in Unicode form (U-labels,
    lower case), as returned by parse_domain.
    """

    localpart: str
    domain: str

    @property
    def ascii_domain(self) -> str:
        """The domain in IDNA ASCII form (A-labels)."""
        return domain_to_ascii(self.domain)

    @property
    def has_non_ascii_localpart(self) -> bool:
        """Whether the localpart needs SMTPUTF8 (has non-ASCII characters)."""
        return not self.localpart.isascii()

    @property
    def packed_localpart(self) -> str:
        """The localpart as written in SMTP: dot-string or quoted-string."""
        return pack_localpart(self.localpart)

    def smtp_form(self, utf8: bool) -> str:
        """Address for SMTP commands and message headers.

        The domain is in Unicode in utf8 (SMTPUTF8) mode, IDNA ASCII otherwise.
        The localpart is returned as is (non-ASCII only works with SMTPUTF8).
        """
        domain = self.domain if utf8 else self.ascii_domain
        return f"{self.packed_localpart}@{domain}"

    def to_ascii(self) -> str:
        """smtp_form(False): with IDNA ASCII domain."""
        return self.smtp_form(False)

    def __str__(self) -> str:
        return f"{self.packed_localpart}@{self.domain}"


@functools.lru_cache(maxsize=8192)
def parse_address(s: str) -> Address:
    """Parse an email address like mox's smtp.ParseAddress.

    Results are cached (addresses are immutable and the same ones recur: logins,
    senders, frequent recipients); errors are not.

    Raises AddressError, whose str() is the complete mox error message
    (``parsing address "<s>": invalid email address: ...``).
    """
    try:
        lp, rem = _parse_localpart_prefix(s)
    except _LocalpartError as e:
        raise AddressError(s, f"invalid email address: invalid localpart: {e}") from None
    if not rem.startswith("@"):
        raise AddressError(s, "invalid email address: expected @")
    try:
        domain = parse_domain(rem[1:])
    except DomainError as e:
        raise AddressError(s, f"invalid email address: {e}") from None
    return Address(localpart=lp, domain=domain)


def base_address(addr: Address) -> str:
    """Base address for suppression lists (mox §5.2).

    The localpart is cut at the first "+", then at the first "-", dots are
    removed and it is lower-cased; the domain is in Unicode form.  Independent of
    configured catchall separators.
    """
    lp = addr.localpart.split("+", 1)[0]
    lp = lp.split("-", 1)[0]
    lp = go_lower(lp.replace(".", ""))
    return f"{pack_localpart(lp)}@{addr.domain}"


def canonical_localpart(
    localpart: str, separators: Sequence[str], case_sensitive: bool = False
) -> str:
    """Canonical localpart for looking up an account address (mox §1.3).

    Everything from the first occurrence of each catchall separator is stripped
    (separators applied in order), then the localpart is lower-cased unless the
    domain is configured with case-sensitive localparts.
    """
    for sep in separators:
        if sep:
            localpart = localpart.split(sep, 1)[0]
    if not case_sensitive:
        localpart = go_lower(localpart)
    return localpart
