"""Compose the outgoing message for the webapi Send method (mox-webapi.md §2.2.2).

The byte layout follows mox: header order and formats, folding, MIME nesting
(multipart/mixed > related > alternative, each only when needed), 60-hex-char
boundaries, part headers sorted by name, CRLF text with us-ascii/utf-8 charset and
7bit/8bit/quoted-printable transfer encoding, base64 files on 76-char lines.

Differences from mox (see the README's "Differences from mox"):

* ``Headers`` may not set the headers that have their own fields or that moxtw
  writes itself, and header names must be valid RFC 5322 field names (``user``
  error).
* A file whose type is not given and cannot be detected gets
  ``application/octet-stream`` (mox writes an empty ``Content-Type:``).
* File data is re-encoded from its decoded bytes (mox re-wraps the request's
  base64 string), so the output is always canonical base64.
* A quoted localpart is written correctly in address headers (``"a b"@x``);
  mox quotes the already quoted form a second time.
* ``User-Agent`` is ``moxtw/<version>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime

import attrs

from moxtw.address import (
    Address,
    DomainError,
    domain_to_ascii,
    go_quote,
    has_control_chars,
    parse_domain,
)

__all__ = [
    "ComposeError",
    "ComposeInput",
    "Composed",
    "File",
    "NameAddress",
    "compose",
    "decode_file_data",
    "detect_content_type",
    "format_address",
    "format_date",
    "format_media_type",
    "new_token",
    "q_encode",
]

MSG_CONTROL_CHARS = "checking header values: control characters not allowed"

# Headers that Send's Headers may not set (moxtw fix 10), lower-case name ->
# request field that sets it, or "" when moxtw writes it itself.
FORBIDDEN_HEADERS: dict[str, str] = {
    "from": "From",
    "to": "To",
    "cc": "CC",
    "bcc": "BCC",
    "reply-to": "ReplyTo",
    "subject": "Subject",
    "date": "Date",
    "message-id": "MessageID",
    "in-reply-to": "References",
    "references": "References",
    "mime-version": "",
    "content-type": "",
    "content-transfer-encoding": "",
}

#: Longer words in a Subject are written as encoded-words, which can be folded.
_MAX_PLAIN_WORD = 900

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class ComposeError(Exception):
    """Composing failed. ``code`` is the webapi error code, ``message`` its text.

    Codes: ``user`` (control characters, bad base64, forbidden header),
    ``malformedMessageID``, ``messageTooLarge``, ``missingBody``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ComposeError({self.code!r}, {self.message!r})"


@attrs.frozen
class File:
    """A file to add. ``content_type`` "" means: detect from the data.

    For uploaded files, ``content_type`` and ``content_id`` are the form part's
    Content-Type and Content-ID headers ("" if absent).
    """

    name: str
    content_type: str
    content_id: str
    data: bytes  # decoded


@attrs.frozen
class NameAddress:
    name: str
    address: Address


@attrs.frozen
class ComposeInput:
    """What to compose. File lists hold the JSON files first, then uploaded ones."""

    from_: NameAddress
    to: Sequence[NameAddress] = ()
    cc: Sequence[NameAddress] = ()
    reply_to: Sequence[NameAddress] = ()
    subject: str = ""
    text: str = ""
    html: str = ""
    message_id: str = ""  # "" => generate
    references: Sequence[str] = ()
    date: datetime | None = None  # None => `now`
    headers: Sequence[tuple[str, str]] = ()
    alternative_files: Sequence[File] = ()
    inline_files: Sequence[File] = ()
    attached_files: Sequence[File] = ()
    # Only used for deciding on SMTPUTF8, never written as a header.
    bcc: Sequence[NameAddress] = ()


@attrs.frozen
class Composed:
    data: bytes
    message_id: str  # with <>
    smtputf8: bool
    subject: str  # as given in the request


# --- small helpers -------------------------------------------------------------


def _utf8(s: str) -> bytes:
    """UTF-8 bytes of s; lone surrogates (possible from JSON) become U+FFFD, like Go."""
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:
        return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def _blen(s: str) -> int:
    return len(_utf8(s))


def _check_control(s: str) -> None:
    if has_control_chars(s):
        raise ComposeError("user", MSG_CONTROL_CHARS)


class _TokenSource:
    """Unpredictable 16-byte values without a system call each: BLAKE2b as a PRF over a
    counter, keyed with 32 bytes from ``os.urandom`` (re-keyed after a fork)."""

    def __init__(self) -> None:
        self._pid = -1
        self._key = b""
        self._counter = itertools.count()

    def __call__(self, n: int) -> bytes:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._key = os.urandom(32)
        out = b""
        while len(out) < n:
            block = next(self._counter).to_bytes(16, "big")
            out += hashlib.blake2b(block, key=self._key, digest_size=32).digest()
        return out[:n]


token_bytes = _TokenSource()


def new_token(random_bytes: Callable[[int], bytes] = token_bytes) -> str:
    """22-character base64url (no padding) token of 16 random bytes.

    Used for generated Message-IDs and FromIDs.
    """
    return base64.urlsafe_b64encode(random_bytes(16)).rstrip(b"=").decode("ascii")


def format_date(dt: datetime) -> str:
    """Format like Go's layout "2 Jan 2006 15:04:05 -0700" in dt's own zone.

    A naive datetime is taken to be in local time.
    """
    if dt.tzinfo is None or dt.utcoffset() is None:
        dt = dt.astimezone()
    offset = dt.utcoffset()
    secs = int(offset.total_seconds()) if offset is not None else 0
    zone = secs // 60 if secs >= 0 else -((-secs) // 60)
    sign = "+"
    if zone < 0:
        sign = "-"
        zone = -zone
    return (
        f"{dt.day} {_MONTHS[dt.month - 1]} {dt.year:04d} "
        f"{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d} {sign}{zone // 60:02d}{zone % 60:02d}"
    )


# --- RFC 2047 encoded words (Go's mime.WordEncoder) ------------------------------

_HEX = "0123456789ABCDEF"
_MAX_CONTENT_LEN = 75 - len("=?UTF-8?q?") - len("?=")  # 63
_MAX_BASE64_LEN = _MAX_CONTENT_LEN // 4 * 3  # 45


def _needs_encoding(s: str) -> bool:
    return any((c < " " or c > "~") and c != "\t" for c in s)


def _q_bytes(b: bytes) -> str:
    out = []
    for x in b:
        if x == 0x20:
            out.append("_")
        elif 0x21 <= x <= 0x7E and x not in (0x3D, 0x3F, 0x5F):
            out.append(chr(x))
        else:
            out.append("=" + _HEX[x >> 4] + _HEX[x & 0x0F])
    return "".join(out)


def q_encode(s: str, force: bool = False) -> str:
    """Like Go's mime.QEncoding.Encode("utf-8", s): s itself if it needs no encoding
    (and not ``force``), else one or more encoded-words (separated by a space) of at most
    75 chars."""
    if not force and not _needs_encoding(s):
        return s
    words: list[str] = []
    cur: list[str] = []
    cur_len = 0
    for c in s:
        b = _utf8(c)
        if len(b) == 1 and 0x20 <= b[0] <= 0x7E and b[0] not in (0x3D, 0x3F, 0x5F):
            enc_len = 1
        else:
            enc_len = 3 * len(b)
        if cur_len + enc_len > _MAX_CONTENT_LEN:
            words.append("".join(cur))
            cur = []
            cur_len = 0
        cur.append(_q_bytes(b))
        cur_len += enc_len
    words.append("".join(cur))
    return " ".join(f"=?utf-8?q?{w}?=" for w in words)


def _b_encode(s: str, force: bool = False) -> str:
    """Like Go's mime.BEncoding.Encode("utf-8", s) (always encoded with ``force``)."""
    if not force and not _needs_encoding(s):
        return s
    data = _utf8(s)
    chunks: list[bytes] = []
    if len(base64.b64encode(data)) <= _MAX_CONTENT_LEN:
        chunks.append(data)
    else:
        cur = b""
        for c in s:
            b = _utf8(c)
            if len(cur) + len(b) <= _MAX_BASE64_LEN:
                cur += b
            else:
                chunks.append(cur)
                cur = b
        chunks.append(cur)
    return " ".join(f"=?utf-8?b?{base64.b64encode(c).decode('ascii')}?=" for c in chunks)


# --- addresses (Go's net/mail.Address.String) ------------------------------------

_MAIL_SPECIALS = frozenset('()<>[]:;@\\,"')


def _is_vchar(c: str) -> bool:
    return "!" <= c <= "~" or c >= "\x80"


def _is_atext(c: str) -> bool:
    if c == "." or c in _MAIL_SPECIALS:
        return False
    return _is_vchar(c)


def _quote_string(s: str) -> str:
    out = ['"']
    for c in s:
        if (_is_vchar(c) and c not in '\\"') or c in " \t":
            out.append(c)
        elif _is_vchar(c):
            out.append("\\" + c)
    out.append('"')
    return "".join(out)


def format_address(name: str, addr: Address, utf8: bool) -> str:
    """Format a name and address for a message header like Go's mail.Address.

    ``<local@domain>`` or ``"Name" <local@domain>``, with non-ASCII names
    RFC 2047-encoded. The domain is in Unicode in utf8 mode, else IDNA ASCII.
    """
    local = addr.localpart
    lb = _utf8(local)
    quote_local = False
    i = 0
    for c in local:
        if not _is_atext(c):
            # Dots are fine when surrounded by atext.
            if not (c == "." and i > 0 and lb[i - 1] != 0x2E and i < len(lb) - 1):
                quote_local = True
                break
        i += _blen(c)
    if quote_local or local == "":
        local = _quote_string(local)
    domain = addr.domain if utf8 else addr.ascii_domain
    s = f"<{local}@{domain}>"
    if name == "":
        return s
    # Not mox: a name with "=?" is encoded even when it is ASCII, as decoders (Python's,
    # mail clients) also decode encoded-words inside a quoted-string (RFC 2047 §5).
    looks_encoded = "=?" in name
    if not looks_encoded and all((_is_vchar(c) or c in " \t") and c < "\x80" for c in name):
        return f"{_quote_string(name)} {s}"
    if any(c in "\"#$%&'(),.:;<>@[]^`{|}~" for c in name):
        return f"{_b_encode(name, looks_encoded)} {s}"
    return f"{q_encode(name, looks_encoded)} {s}"


# --- MIME parameters (Go's mime.FormatMediaType) ---------------------------------

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')


def _is_token(s: str) -> bool:
    return s != "" and all(" " < c < "\x7f" and c not in _TSPECIALS for c in s)


def format_media_type(t: str, params: dict[str, str]) -> str:
    """Like Go's mime.FormatMediaType: "" if t or a parameter name is invalid."""
    major, slash, sub = t.partition("/")
    if not slash:
        if not _is_token(t):
            return ""
        out = [t.lower()]
    else:
        if not _is_token(major) or not _is_token(sub):
            return ""
        out = [major.lower(), "/", sub.lower()]
    for attr in sorted(params):
        value = params[attr]
        out.append("; ")
        if not _is_token(attr):
            return ""
        out.append(attr.lower())
        if _needs_encoding(value):
            # RFC 2231.
            out.append("*=utf-8''")
            for x in _utf8(value):
                ch = chr(x)
                if x <= 0x20 or x >= 0x7F or ch in "*'%" or ch in _TSPECIALS:
                    out.append("%" + _HEX[x >> 4] + _HEX[x & 0x0F])
                else:
                    out.append(ch)
            continue
        out.append("=")
        if _is_token(value) and "*" not in value and "'" not in value:
            # (Not mox: "*" and "'" are quoted, as Python's parser misreads filename=a*b as
            # "a" and finds no filename at all in filename=a'b: RFC 2231's delimiters.)
            out.append(value)
            continue
        out.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "".join(out)


# --- content sniffing (WHATWG / Go's http.DetectContentType) -------------------


def _html_sig(data: bytes, sig: bytes) -> bool:
    if len(data) < len(sig) + 1:
        return False
    for i, b in enumerate(sig):
        db = data[i]
        if 0x41 <= b <= 0x5A:
            db &= 0xDF
        if b != db:
            return False
    return data[len(sig)] in (0x20, 0x3E)


_HTML_SIGS = [
    s.encode("ascii")
    for s in (
        "<!DOCTYPE HTML", "<HTML", "<HEAD", "<SCRIPT", "<IFRAME", "<H1", "<DIV", "<FONT",
        "<TABLE", "<A", "<STYLE", "<TITLE", "<B", "<BODY", "<BR", "<P", "<!--",
    )
]  # fmt: skip

# (mask, pattern, skip leading whitespace, content type); exact signatures have
# an all-0xFF mask.
_MASKED_SIGS: list[tuple[bytes, bytes, bool, str]] = []


def _exact(pat: bytes, ct: str) -> tuple[bytes, bytes, bool, str]:
    return (b"\xff" * len(pat), pat, False, ct)


_SIGS_BEFORE_MP4: list[tuple[bytes, bytes, bool, str]] = [
    (b"\xff\xff\xff\xff\xff", b"<?xml", True, "text/xml; charset=utf-8"),
    _exact(b"%PDF-", "application/pdf"),
    _exact(b"%!PS-Adobe-", "application/postscript"),
    (b"\xff\xff\x00\x00", b"\xfe\xff\x00\x00", False, "text/plain; charset=utf-16be"),
    (b"\xff\xff\x00\x00", b"\xff\xfe\x00\x00", False, "text/plain; charset=utf-16le"),
    (b"\xff\xff\xff\x00", b"\xef\xbb\xbf\x00", False, "text/plain; charset=utf-8"),
    _exact(b"\x00\x00\x01\x00", "image/x-icon"),
    _exact(b"\x00\x00\x02\x00", "image/x-icon"),
    _exact(b"BM", "image/bmp"),
    _exact(b"GIF87a", "image/gif"),
    _exact(b"GIF89a", "image/gif"),
    (b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff", b"RIFF\x00\x00\x00\x00WEBPVP", False, "image/webp"),
    _exact(b"\x89PNG\r\n\x1a\n", "image/png"),
    _exact(b"\xff\xd8\xff", "image/jpeg"),
    _exact(b".snd", "audio/basic"),
    (b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff", b"FORM\x00\x00\x00\x00AIFF", False, "audio/aiff"),
    _exact(b"ID3", "audio/mpeg"),
    _exact(b"OggS\x00", "application/ogg"),
    _exact(b"MThd\x00\x00\x00\x06", "audio/midi"),
    (b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff", b"RIFF\x00\x00\x00\x00AVI ", False, "video/avi"),
    (b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff", b"RIFF\x00\x00\x00\x00WAVE", False, "audio/wave"),
]  # fmt: skip

_SIGS_AFTER_MP4: list[tuple[bytes, bytes, bool, str]] = [
    _exact(b"\x1a\x45\xdf\xa3", "video/webm"),
    (b"\x00" * 34 + b"\xff\xff", b"\x00" * 34 + b"LP", False, "application/vnd.ms-fontobject"),
    _exact(b"\x00\x01\x00\x00", "font/ttf"),
    _exact(b"OTTO", "font/otf"),
    _exact(b"ttcf", "font/collection"),
    _exact(b"wOFF", "font/woff"),
    _exact(b"wOF2", "font/woff2"),
    _exact(b"\x1f\x8b\x08", "application/x-gzip"),
    _exact(b"PK\x03\x04", "application/zip"),
    _exact(b"Rar!\x1a\x07\x00", "application/x-rar-compressed"),
    _exact(b"Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"),
    _exact(b"\x00asm", "application/wasm"),
]

_WS = b"\t\n\x0c\r "


def _masked_match(data: bytes, mask: bytes, pat: bytes) -> bool:
    if len(data) < len(pat):
        return False
    return all(data[i] & m == p for i, (m, p) in enumerate(zip(mask, pat, strict=True)))


def _mp4_match(data: bytes) -> bool:
    if len(data) < 12:
        return False
    box_size = int.from_bytes(data[:4], "big")
    if len(data) < box_size or box_size % 4 != 0:
        return False
    if data[4:8] != b"ftyp":
        return False
    for st in range(8, box_size, 4):
        if st == 12:
            continue  # version of the major brand
        if data[st : st + 3] == b"mp4":
            return True
    return False


def detect_content_type(data: bytes) -> str:
    """Content type of data like Go's http.DetectContentType (WHATWG sniffing).

    Looks at the first 512 bytes; "application/octet-stream" if nothing matches.
    """
    data = data[:512]
    first_non_ws = 0
    while first_non_ws < len(data) and data[first_non_ws] in _WS:
        first_non_ws += 1
    trimmed = data[first_non_ws:]
    for sig in _HTML_SIGS:
        if _html_sig(trimmed, sig):
            return "text/html; charset=utf-8"
    for mask, pat, skip_ws, ct in _SIGS_BEFORE_MP4:
        if _masked_match(trimmed if skip_ws else data, mask, pat):
            return ct
    if _mp4_match(data):
        return "video/mp4"
    for mask, pat, skip_ws, ct in _SIGS_AFTER_MP4:
        if _masked_match(trimmed if skip_ws else data, mask, pat):
            return ct
    if not any(b <= 0x08 or b == 0x0B or 0x0E <= b <= 0x1A or 0x1C <= b <= 0x1F for b in trimmed):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


# --- base64 file data (Go's base64.NewDecoder(base64.StdEncoding, ...)) ----------

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DECODE = bytes(_B64_ALPHABET.index(i) if i in _B64_ALPHABET else 0xFF for i in range(256))


_B64_VALID = re.compile(rb"[A-Za-z0-9+/]*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


class _CorruptInput(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _go_b64_decode(src: bytes, out: bytearray) -> None:
    """Go's (*Encoding).Decode for padded, non-strict StdEncoding."""
    si = 0
    n = len(src)
    while si < n:
        dbuf = [0, 0, 0, 0]
        dlen = 4
        err: _CorruptInput | None = None
        j = 0
        while j < 4:
            if si == n:
                if j == 0:
                    return
                raise _CorruptInput(si - j)
            c = src[si]
            si += 1
            v = _B64_DECODE[c]
            if v != 0xFF:
                dbuf[j] = v
                j += 1
                continue
            if c in (0x0A, 0x0D):
                continue
            if c != 0x3D:
                raise _CorruptInput(si - 1)
            # Padding.
            if j < 2:
                raise _CorruptInput(si - 1)
            if j == 2:
                # "==" expected; the first "=" is consumed.
                while si < n and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == n:
                    raise _CorruptInput(n)
                if src[si] != 0x3D:
                    raise _CorruptInput(si - 1)
                si += 1
            while si < n and src[si] in (0x0A, 0x0D):
                si += 1
            if si < n:
                err = _CorruptInput(si)  # trailing garbage
            dlen = j
            break
        val = dbuf[0] << 18 | dbuf[1] << 12 | dbuf[2] << 6 | dbuf[3]
        out += bytes(((val >> 16) & 0xFF, (val >> 8) & 0xFF, val & 0xFF))[: dlen - 1]
        if err is not None:
            raise err


def decode_file_data(b64: str) -> bytes:
    """Decode a File's Data: standard base64 with padding; CR/LF are ignored.

    Errors are ComposeError("user", "parsing attachment as base64: <err>") with
    the error text mox gives (Go's streaming base64 decoder, which works on
    chunks of 1024 bytes, so offsets are relative to the chunk).
    """
    raw = _utf8(b64)
    filtered = raw.replace(b"\r", b"").replace(b"\n", b"")
    if len(filtered) % 4 == 0 and _B64_VALID.fullmatch(filtered):
        # Well-formed input, which Go decodes without error: take the fast path.
        return binascii.a2b_base64(filtered)
    # Emulate Go's decoder for the exact error.
    pos = 0
    buf = bytearray()
    out = bytearray()
    eof = False
    while True:
        while len(buf) < 4 and not eof:
            want = 1024 - len(buf)
            while True:
                chunk = raw[pos : pos + want]
                pos += len(chunk)
                if not chunk:
                    eof = True
                    break
                filtered = chunk.replace(b"\r", b"").replace(b"\n", b"")
                if filtered:
                    buf += filtered
                    break
        if len(buf) < 4:
            if buf:
                raise ComposeError("user", "parsing attachment as base64: unexpected EOF")
            return bytes(out)
        nr = len(buf) // 4 * 4
        try:
            _go_b64_decode(bytes(buf[:nr]), out)
        except _CorruptInput as e:
            raise ComposeError(
                "user",
                f"parsing attachment as base64: illegal base64 data at input byte {e.offset}",
            ) from None
        del buf[:nr]


# --- quoted-printable (Go's mime/quotedprintable.Writer) --------------------------

_QP_LINE_MAX = 76


def _qp_encode(data: bytes) -> bytes:
    out = bytearray()
    line = bytearray()
    cr = False

    def insert_crlf() -> None:
        line.extend(b"\r\n")
        out.extend(line)
        line.clear()

    def soft_break() -> None:
        line.extend(b"=")
        insert_crlf()

    def encode(b: int) -> None:
        if _QP_LINE_MAX - 1 - len(line) < 3:
            soft_break()
        line.extend(b"=" + (_HEX[b >> 4] + _HEX[b & 0x0F]).encode("ascii"))

    def check_last_byte() -> None:
        if line and line[-1] in (0x20, 0x09):
            b = line.pop()
            encode(b)

    for b in data:
        if b in (0x0A, 0x0D):
            if cr and b == 0x0A:
                cr = False
                continue
            if b == 0x0D:
                cr = True
            check_last_byte()
            insert_crlf()
        elif (0x21 <= b <= 0x7E and b != 0x3D) or b in (0x20, 0x09):
            if len(line) == _QP_LINE_MAX - 1:
                soft_break()
            line.append(b)
            cr = False
        else:
            encode(b)
    # Text parts always end with CRLF, so nothing is left; flush like Close would.
    check_last_byte()
    out.extend(line)
    return bytes(out)


def _needs_quoted_printable(text: bytes) -> bool:
    return any(len(line) > 76 or b"\r" in line or b"\n" in line for line in text.split(b"\r\n"))


def _text_part(subtype: str, text: str, has8bit: bool) -> tuple[bytes, str, str]:
    """Body, Content-Type and Content-Transfer-Encoding for a text part."""
    if not text.endswith("\n"):
        text += "\n"
    text = text.replace("\n", "\r\n")
    charset = "us-ascii" if text.isascii() else "utf-8"
    body = _utf8(text)
    if _needs_quoted_printable(body):
        body = _qp_encode(body)
        cte = "quoted-printable"
    elif has8bit or charset == "utf-8":
        cte = "8bit"
    else:
        cte = "7bit"
    return body, f"text/{subtype}; charset={charset}", cte


# --- the message writer ----------------------------------------------------------


class _Writer:
    def __init__(self, max_size: int) -> None:
        self.buf = bytearray()
        self.max_size = max_size

    def write(self, b: bytes) -> None:
        if self.max_size > 0 and len(self.buf) + len(b) > self.max_size:
            raise ComposeError("messageTooLarge", "message too large")
        self.buf += b

    def header(self, name: str, value: str) -> None:
        self.write(_utf8(f"{name}: {value}\r\n"))

    def header_addrs(self, name: str, addrs: Sequence[NameAddress], utf8: bool) -> None:
        if not addrs:
            return
        v = ""
        linelen = len(name) + 2
        for na in addrs:
            if v:
                v += ","
                linelen += 1
            s = format_address(na.name, na.address, utf8)
            slen = _blen(s)
            if v and linelen + 1 + slen > 77:
                v += "\r\n\t"
                linelen = 1
            elif v:
                v += " "
                linelen += 1
            v += s
            linelen += slen
        self.header(name, v)

    def subject(self, subject: str, utf8: bool) -> None:
        value = ""
        linelen = len("Subject: ")
        last_encoded = False  # the last non-empty word was an encoded-word
        spaces = 0  # spaces since that word
        for i, word in enumerate(subject.split(" ")):
            if i > 0:
                spaces += 1
            encode = (not utf8 and not word.isascii()) or (
                # Not mox: a word a decoder would take for an encoded-word ("=?...?=" in
                # the request, RFC 2047 §5), and a word too long for one line (RFC 5322
                # §2.1.1), which encoded-words split, are encoded too.
                "=?" in word or _blen(word) > _MAX_PLAIN_WORD
            )
            if encode:
                # Whitespace between two encoded-words is dropped by decoders (RFC 2047
                # 6.2), so the spaces before this word go inside it when the previous
                # word was encoded too; mox loses them.
                word = q_encode(" " * spaces + word if last_encoded else word, force=True)
                last_encoded = True
                spaces = 0
            elif word:
                last_encoded = False
                spaces = 0
            # A long word gives several encoded-words: the line may fold between them
            # (mox writes them on one line, over 998 octets for a long CJK subject).
            for j, piece in enumerate(word.split(" ") if encode else [word]):
                if i > 0 or j > 0:
                    value += " "
                    linelen += 1
                plen = _blen(piece)
                if (i > 0 or j > 0) and linelen + plen > 77:
                    value += "\r\n\t"
                    linelen = 1
                value += piece
                linelen += plen
        self.header("Subject", value)


class _Multipart:
    """Go's mime/multipart.Writer, writing into a _Writer."""

    def __init__(self, w: _Writer, boundary: str) -> None:
        self.w = w
        self.boundary = boundary
        self.has_part = False

    def create_part(self, headers: Sequence[tuple[str, str]]) -> None:
        b = self.boundary
        if self.has_part:
            self.w.write(_utf8(f"\r\n--{b}\r\n"))
        else:
            self.w.write(_utf8(f"--{b}\r\n"))
        self.has_part = True
        for name, value in sorted(headers, key=lambda h: h[0]):
            self.w.header(name, value)
        self.w.write(b"\r\n")

    def close(self) -> None:
        self.w.write(_utf8(f"\r\n--{self.boundary}--\r\n"))


def _base64_lines(data: bytes) -> bytes:
    enc = base64.b64encode(data)
    return b"".join(enc[i : i + 76] + b"\r\n" for i in range(0, len(enc), 76))


def _hostname_form(hostname: str, utf8: bool) -> str:
    try:
        d = parse_domain(hostname)
    except DomainError:
        return hostname
    return d if utf8 else domain_to_ascii(d)


def _check_header(name: str, value: str) -> None:
    _check_control(name)
    _check_control(value)
    if name == "" or any(not ("!" <= c <= "~") or c == ":" for c in name):
        raise ComposeError("user", f"invalid header name {go_quote(name)}")
    field = FORBIDDEN_HEADERS.get(name.lower())
    if field is not None:
        if field:
            raise ComposeError(
                "user",
                f"header {go_quote(name)} not allowed in Headers: set through the {field} field",
            )
        raise ComposeError("user", f"header {go_quote(name)} not allowed in Headers: set by moxtw")


def compose(
    inp: ComposeInput,
    *,
    hostname: str,
    now: datetime,
    max_size: int,
    version: str,
    random_bytes: Callable[[int], bytes] = token_bytes,
) -> Composed:
    """Compose the message for a webapi Send.

    ``hostname`` is the server host name (for generated Message-IDs), ``now`` is
    used when ``inp.date`` is None, ``max_size`` (if > 0) is the maximum message
    size, ``version`` goes into the User-Agent header.  Raises ComposeError.
    """
    if inp.text == "" and inp.html == "":
        raise ComposeError("missingBody", "at least text or html body required")

    everyone = [inp.from_, *inp.to, *inp.cc, *inp.bcc, *inp.reply_to]
    utf8 = any(na.address.has_non_ascii_localpart for na in everyone)
    for na in everyone:
        # Normally checked while parsing the request; names never reach a header raw.
        _check_control(na.name)

    w = _Writer(max_size)
    w.header_addrs("From", [inp.from_], utf8)
    if inp.reply_to:
        w.header_addrs("Reply-To", inp.reply_to, utf8)
    w.header_addrs("To", inp.to, utf8)
    w.header_addrs("Cc", inp.cc, utf8)
    if inp.subject != "":
        _check_control(inp.subject)
        w.subject(inp.subject, utf8)

    w.header("Date", format_date(inp.date if inp.date is not None else now))

    message_id = inp.message_id
    if message_id == "":
        message_id = f"<{new_token(random_bytes)}@{_hostname_form(hostname, utf8)}>"
    elif not (message_id.startswith("<") and message_id.endswith(">")):
        raise ComposeError("malformedMessageID", "missing <> in message-id")
    _check_control(message_id)
    w.header("Message-Id", message_id)

    if inp.references:
        for ref in inp.references:
            _check_control(ref)
        w.header("References", "\r\n\t".join(inp.references))
        w.header("In-Reply-To", inp.references[-1])
    w.header("MIME-Version", "1.0")

    have_user_agent = False
    for name, value in inp.headers:
        _check_header(name, value)
        w.header(name, value)
        if name.lower() in ("user-agent", "x-mailer"):
            have_user_agent = True
    if not have_user_agent:
        w.header("User-Agent", f"moxtw/{version}")

    # MIME structure, outermost first; each level only when needed:
    # mixed (attached files) > related (inline files) > alternative (text and
    # html, or alternative files) > text/plain, text/html, alternative files.
    cur: _Multipart | None = None

    def new_multipart(subtype: str) -> _Multipart:
        boundary = random_bytes(30).hex()
        ct = f'multipart/{subtype}; boundary="{boundary}"'
        if cur is None:
            w.header("Content-Type", ct)
            w.write(b"\r\n")
        else:
            cur.create_part([("Content-Type", ct)])
        return _Multipart(w, boundary)

    def create_part(headers: Sequence[tuple[str, str]]) -> None:
        if cur is None:
            for name, value in headers:
                w.header(name, value)
            w.write(b"\r\n")
        else:
            cur.create_part(headers)

    mixed: _Multipart | None = None
    related: _Multipart | None = None
    alternative: _Multipart | None = None
    if inp.attached_files:
        mixed = cur = new_multipart("mixed")
    if inp.inline_files:
        related = cur = new_multipart("related")
    if (inp.text != "" and inp.html != "") or inp.alternative_files:
        alternative = cur = new_multipart("alternative")

    for subtype, text in (("plain", inp.text), ("html", inp.html)):
        if text == "":
            continue
        body, ct, cte = _text_part(subtype, text, utf8)
        create_part([("Content-Type", ct), ("Content-Transfer-Encoding", cte)])
        w.write(body)

    def add_files(files: Sequence[File], disposition: str) -> None:
        for f in files:
            _check_control(f.content_type)
            _check_control(f.content_id)
            ct = f.content_type
            if ct == "":
                # Undetectable types give application/octet-stream (moxtw fix 11).
                ct = detect_content_type(f.data)
            headers = [
                ("Content-Type", ct),
                ("Content-Disposition", format_media_type(disposition, {"filename": f.name})),
            ]
            if f.content_id != "":
                headers.append(("Content-Id", f.content_id))
            headers.append(("Content-Transfer-Encoding", "base64"))
            create_part(headers)
            w.write(_base64_lines(f.data))

    cur = alternative
    add_files(inp.alternative_files, "inline")
    if alternative is not None:
        alternative.close()
    cur = related
    add_files(inp.inline_files, "inline")
    if related is not None:
        related.close()
    cur = mixed
    add_files(inp.attached_files, "attachment")
    if mixed is not None:
        mixed.close()

    return Composed(data=bytes(w.buf), message_id=message_id, smtputf8=utf8, subject=inp.subject)
