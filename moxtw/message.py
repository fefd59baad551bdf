"""Message parsing as mox does it, for MessageGet and the incoming webhook.

:func:`parse` reads a stored message into a tree of :class:`Part` (the MIME structure
with offsets into the message bytes, like mox's ``message.Part``); from it
:func:`structure` builds the ``Structure`` of spec §2.1, :func:`envelope` the header
fields (addresses, subject, message-id, references, date), :func:`readable_parts` the
first text/plain and text/html contents (spec §2.7), and :func:`find_part` /
:meth:`Part.content` the part MessagePartGet answers with (spec §2.9).

Like mox, a message whose MIME structure cannot be parsed (missing closing boundary,
multipart without boundary, ...) is treated as one ``application/octet-stream`` part,
keeping what the top-level header says.  Unlike mox, bare LF line ends are accepted.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.headerregistry
import email.policy
import email.utils
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import attrs

from .address import AddressError, pack_localpart, parse_address

__all__ = [
    "MAX_READABLE",
    "Envelope",
    "MessageError",
    "NameAddress",
    "Part",
    "PartNotFound",
    "decode_words",
    "envelope",
    "find_part",
    "is_automated",
    "parse",
    "parse_media_type",
    "readable_parts",
    "sniff_content_type",
    "structure",
]

#: MessageGet and webhook Text/HTML are truncated to this many bytes (spec §1.5).
MAX_READABLE = 1024 * 1024


class MessageError(ValueError):
    """The MIME structure could not be parsed (the message is then one opaque part)."""


class PartNotFound(LookupError):
    """A MessagePartGet path element is out of range; ``str()`` is mox's message."""

    def __init__(self, index: int, position: int) -> None:
        super().__init__(f"part {index} at index {position} not found")
        self.index = index
        self.position = position


# --- media types (Go's mime.ParseMediaType) -------------------------------------------

_TSPECIALS = frozenset('()<>@,;:\\"/[]?=')


def _is_token_char(c: str) -> bool:
    return " " < c < "\x7f" and c not in _TSPECIALS


def _consume_token(v: str) -> tuple[str, str]:
    i = 0
    while i < len(v) and _is_token_char(v[i]):
        i += 1
    return v[:i], v[i:]


def _consume_value(v: str) -> tuple[str, str] | None:
    if not v:
        return None
    if v[0] != '"':
        token, rest = _consume_token(v)
        return (token, rest) if token else None
    out: list[str] = []
    i = 1
    while i < len(v):
        c = v[i]
        if c == '"':
            return "".join(out), v[i + 1 :]
        if c == "\\" and i + 1 < len(v) and v[i + 1] in _TSPECIALS:
            out.append(v[i + 1])
            i += 2
            continue
        if c in "\r\n":
            return None
        out.append(c)
        i += 1
    return None


def _decode_2231(value: str, with_charset: bool) -> str | None:
    charset = "us-ascii"
    if with_charset:
        pieces = value.split("'", 2)
        if len(pieces) != 3:
            return None
        charset = pieces[0].lower() or "us-ascii"
        value = pieces[2]
    try:
        raw = _percent_decode(value)
    except ValueError:
        return None
    if charset in ("us-ascii", "utf-8"):
        return raw.decode("utf-8", "replace")
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeError, ValueError):
        return None


def _percent_decode(value: str) -> bytes:
    out = bytearray()
    i = 0
    data = value.encode("utf-8")
    while i < len(data):
        if data[i] == 0x25:  # %
            if i + 2 >= len(data):
                raise ValueError("bad percent escape")
            out.append(int(data[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(data[i])
            i += 1
    return bytes(out)


def parse_media_type(v: str) -> tuple[str, dict[str, str]]:
    """Like Go's ``mime.ParseMediaType``: lower-cased type, parameters with lower-cased
    keys, RFC 2231 continuations and charsets decoded.  Raises ``ValueError``.
    """
    base, semicolon, rest = v.partition(";")
    mediatype = base.strip().lower()
    if not mediatype:
        raise ValueError("mime: no media type")
    major, slash, minor = mediatype.partition("/")
    if not major or any(not _is_token_char(c) for c in major):
        raise ValueError("mime: no media type")
    if slash and (not minor or any(not _is_token_char(c) for c in minor)):
        raise ValueError("mime: expected token after slash")
    params: dict[str, str] = {}
    continuation: dict[str, dict[str, str]] = {}
    v = ";" + rest if semicolon else ""
    while v:
        v = v.lstrip()
        if not v:
            break
        if not v.startswith(";"):
            raise ValueError("mime: invalid media parameter")
        rest = v[1:].lstrip()
        key, rest2 = _consume_token(rest)
        if not key:
            if not rest.strip():
                break  # trailing semicolon
            raise ValueError("mime: invalid media parameter")
        rest2 = rest2.lstrip()
        if not rest2.startswith("="):
            raise ValueError("mime: invalid media parameter")
        consumed = _consume_value(rest2[1:].lstrip())
        if consumed is None:
            raise ValueError("mime: invalid media parameter")
        value, v = consumed
        key = key.lower()
        target = params
        base_key, star, _ = key.partition("*")
        if star:
            target = continuation.setdefault(base_key, {})
        if key in target:
            raise ValueError("mime: duplicate parameter name")
        target[key] = value
    for key, pieces in continuation.items():
        if key + "*" in pieces:
            decoded = _decode_2231(pieces[key + "*"], True)
            if decoded is not None:
                params[key] = decoded
            continue
        out = []
        n = 0
        while True:
            simple = f"{key}*{n}"
            encoded = simple + "*"
            if simple in pieces:
                out.append(pieces[simple])
            elif encoded in pieces:
                decoded = _decode_2231(pieces[encoded], n == 0)
                if decoded is None:
                    break
                out.append(decoded)
            else:
                break
            n += 1
        if out:
            params[key] = "".join(out)
    return mediatype, params


# --- RFC 2047 ---------------------------------------------------------------------

_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _decode_word(charset: str, encoding: str, text: str) -> str | None:
    charset = charset.split("*", 1)[0].lower()
    try:
        if encoding.upper() == "B":
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        else:
            raw = binascii.a2b_qp(text.replace("_", " ").encode("ascii"), header=False)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if charset in ("", "us-ascii", "utf-8"):
        return raw.decode("utf-8", "replace")
    try:
        return raw.decode(charset)
    except (LookupError, UnicodeError, ValueError):
        return None


def decode_words(s: str) -> str:
    """Decode RFC 2047 encoded words like Go's ``mime.WordDecoder.DecodeHeader``:
    whitespace between adjacent encoded words is dropped; undecodable words are kept."""
    if "=?" not in s:
        return s
    out: list[str] = []
    pos = 0
    after_word = False  # the last thing written was a decoded encoded-word
    for m in _WORD_RE.finditer(s):
        between = s[pos : m.start()]
        decoded = _decode_word(m.group(1), m.group(2), m.group(3))
        if decoded is None:
            out.append(between + m.group(0))
            after_word = False
        else:
            # Only whitespace between two decoded words goes: not after plain text
            # that happens to end in "?=" ("?= =?utf-8?q?=C3=BC?=" is "?= ü").
            if not after_word or between.strip(" \t\r\n"):
                out.append(between)
            out.append(decoded)
            after_word = True
        pos = m.end()
    out.append(s[pos:])
    return "".join(out)


def _decode_param(name: str) -> str:
    """mox's tryDecodeParam: q/b-word decode a filename that looks encoded."""
    if not name or not name.startswith("=?") and not name.endswith("?="):
        return name
    return decode_words(name)


# --- headers ----------------------------------------------------------------------


@attrs.frozen
class Header:
    """A parsed header section: unfolded values, looked up case-insensitively."""

    fields: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.fields if k.lower() == name]

    def get(self, name: str) -> str | None:
        values = self.values(name)
        return values[0] if values else None


def _parse_header(raw: bytes) -> Header:
    fields: list[tuple[str, str]] = []
    for line in raw.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        text = line.decode("utf-8", "surrogateescape")
        if text[0] in " \t":
            if fields:
                name, value = fields[-1]
                piece = text.strip()
                fields[-1] = (name, f"{value} {piece}" if value and piece else value + piece)
            continue
        name, colon, value = text.partition(":")
        if not colon or not name.strip() or name != name.rstrip():
            continue  # not a header line; mox would refuse the message, we skip it
        fields.append((name, value.strip()))
    return Header(tuple((k, v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")) for k, v in fields))


# --- parts ------------------------------------------------------------------------


@attrs.define(eq=False)
class Part:
    """One MIME part: offsets into ``data`` (the whole message) and its header fields.

    ``media_type``/``media_subtype`` are upper-case like mox's; both empty when the part
    has no Content-Type header.
    """

    data: bytes
    header: Header
    header_offset: int
    body_offset: int
    end_offset: int
    media_type: str = ""
    media_subtype: str = ""
    params: dict[str, str] = attrs.Factory(dict)
    content_id: str | None = None
    transfer_encoding: str | None = None  # upper case
    disposition: str | None = None
    parts: list[Part] = attrs.Factory(list)

    @property
    def content_type(self) -> str:
        return f"{self.media_type}/{self.media_subtype}".lower()

    @property
    def is_text(self) -> bool:
        return self.media_type == "TEXT"

    @property
    def raw_body(self) -> bytes:
        return self.data[self.body_offset : self.end_offset]

    def content(self) -> bytes:
        """The body with its transfer encoding undone; text parts with CRLF line ends
        (mox's ``Part.Reader``).  No charset conversion."""
        body = self.raw_body
        cte = self.transfer_encoding or ""
        if cte == "BASE64":
            body = _decode_base64(body)
        elif cte == "QUOTED-PRINTABLE":
            body = binascii.a2b_qp(body)
        if self.is_text:
            body = _crlf(body)
        return body

    @property
    def decoded_size(self) -> int:
        if self.parts or self.media_type == "MULTIPART":
            return 0
        return len(self.content())

    def content_utf8(self) -> bytes:
        """:meth:`content` converted to UTF-8 for a known charset (mox's
        ``ReaderUTF8OrBinary``); unknown or absent charsets leave it as is."""
        data = self.content()
        charset = self.params.get("charset", "").strip().lower()
        if charset in ("", "us-ascii", "utf-8", "utf8", "ascii"):
            return data
        try:
            return data.decode(charset, "replace").encode("utf-8")
        except (LookupError, UnicodeError, ValueError):
            # Unknown, or a Python codec that is no text encoding (hex, rot13) or cannot
            # decode with "replace" (idna, undefined): left as is.
            return data

    def is_dsn(self) -> bool:
        return (
            self.media_type == "MULTIPART"
            and self.media_subtype == "REPORT"
            and len(self.parts) >= 2
            and self.parts[1].media_type == "MESSAGE"
            and self.parts[1].media_subtype in ("DELIVERY-STATUS", "GLOBAL-DELIVERY-STATUS")
        )

    def disposition_filename(self) -> tuple[str, str]:
        """mox's ``DispositionFilename``: lower-case disposition and decoded filename
        (from the disposition's filename, else the content type's name)."""
        params: dict[str, str] = {}
        disposition = ""
        if self.disposition:
            try:
                disposition, params = parse_media_type(self.disposition)
            except ValueError:
                return "", ""
        filename = _decode_param(params.get("filename", ""))
        if not filename:
            filename = _decode_param(self.params.get("name", ""))
        return disposition.lower(), filename


def _decode_base64(body: bytes) -> bytes:
    clean = re.sub(rb"[\r\n]", b"", body)
    try:
        return binascii.a2b_base64(clean)
    except binascii.Error:
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", clean)
        clean = clean[: len(clean) - len(clean) % 4]
        try:
            return binascii.a2b_base64(clean)
        except binascii.Error:
            return b""


def _crlf(data: bytes) -> bytes:
    """Every bare LF becomes CRLF (mox's textReader)."""
    if b"\n" not in data:
        return data
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def _lines(data: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(line start, line end including its line ending) from start to end."""
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        stop = end if nl < 0 else nl + 1
        yield pos, stop
        pos = stop


def _check_bound(line: bytes, bound: bytes) -> tuple[bool, bool]:
    """mox's checkBound: (is a boundary line, is the closing one)."""
    if not line.startswith(bound):
        return False, False
    rest = line[len(bound) :]
    if rest.startswith(b"--"):
        return True, True
    if not rest or rest[:1] in (b" ", b"\t", b"\r", b"\n"):
        return True, False
    return False, False


def _strip_eol(data: bytes, start: int, end: int) -> int:
    """``end`` moved before the line ending just before it (the boundary's CRLF)."""
    if end > start and data[end - 1 : end] == b"\n":
        end -= 1
        if end > start and data[end - 1 : end] == b"\r":
            end -= 1
    return end


def _new_part(data: bytes, start: int, end: int) -> Part:
    body_offset = end
    for line_start, line_end in _lines(data, start, end):
        if data[line_start:line_end] in (b"\r\n", b"\n"):
            body_offset = line_end
            break
    header = _parse_header(data[start:body_offset])
    part = Part(data=data, header=header, header_offset=start, body_offset=body_offset, end_offset=end)
    ct = header.get("Content-Type")
    if ct is not None and ct != "":
        try:
            mt, params = parse_media_type(ct)
        except ValueError:
            t = ct.split(";", 1)[0].strip().split("/", 1)
            ok = len(t) == 2 and all(x and all(_is_token_char(c) for c in x) for x in t)
            if ok and t[0].lower() != "multipart":
                part.media_type, part.media_subtype = t[0].upper(), t[1].upper()
            else:
                part.media_type, part.media_subtype = "APPLICATION", "OCTET-STREAM"
        else:
            major, slash, minor = mt.upper().partition("/")
            if slash:
                part.media_type, part.media_subtype, part.params = major, minor, params
            else:
                part.media_type, part.media_subtype = "APPLICATION", "OCTET-STREAM"
    part.content_id = header.get("Content-Id")
    cte = header.get("Content-Transfer-Encoding")
    part.transfer_encoding = None if cte is None else cte.strip().upper()
    part.disposition = header.get("Content-Disposition")
    return part


def _parse_multipart(part: Part, end: int, nested: bool) -> None:
    """Find the sub parts of a multipart ``part`` whose body ends at most at ``end``."""
    boundary = part.params.get("boundary", "")
    if not boundary:
        raise MessageError("missing/empty boundary content-type parameter")
    bound = b"--" + boundary.encode("utf-8")
    data = part.data
    current: int | None = None
    for line_start, line_end in _lines(data, part.body_offset, end):
        match, finish = _check_bound(data[line_start:line_end], bound)
        if not match:
            continue
        if current is None and finish:
            raise MessageError("first boundary cannot be finishing boundary")
        if current is not None:
            part.parts.append(_child(data, current, line_start))
        if finish:
            # A nested multipart's body includes what follows its closing boundary, up
            # to the parent's next boundary; the top-level one ends after the line.
            part.end_offset = end if nested else line_end
            return
        current = line_end
    raise MessageError("eof without closing boundary")


def _child(data: bytes, start: int, end: int) -> Part:
    child = _new_part(data, start, end)
    if child.media_type == "MULTIPART":
        _parse_multipart(child, end, nested=True)
    else:
        child.end_offset = max(child.body_offset, _strip_eol(data, child.body_offset, end))
    return child


def parse(data: bytes) -> Part:
    """Parse a message; never fails (an unparsable structure gives one opaque part)."""
    part = _new_part(data, 0, len(data))
    if part.media_type != "MULTIPART":
        return part
    try:
        _parse_multipart(part, len(data), nested=False)
    except MessageError:
        part.parts = []
        part.media_type, part.media_subtype = "APPLICATION", "OCTET-STREAM"
        part.end_offset = len(data)
    return part


def find_part(root: Part, path: Sequence[int]) -> Part:
    """The part at ``path`` (MessagePartGet's PartPath); raises :class:`PartNotFound`."""
    part = root
    for position, index in enumerate(path):
        if index < 0 or index >= len(part.parts):
            raise PartNotFound(index, position)
        part = part.parts[index]
    return part


# --- Structure ----------------------------------------------------------------------


@attrs.frozen
class StructureNode:
    """Plain form of ``webhook.Structure`` (convert with :func:`to_webapi`)."""

    content_type: str
    content_type_params: dict[str, str]
    content_id: str
    content_disposition: str
    filename: str
    decoded_size: int
    parts: list[StructureNode]


def structure(part: Part) -> StructureNode:
    """The MIME tree as in spec §2.1 (mox's ``webhook.PartStructure``)."""
    disposition, filename = part.disposition_filename()
    return StructureNode(
        content_type=part.content_type,
        content_type_params=dict(part.params),
        content_id=part.content_id or "",
        content_disposition=disposition,
        filename=filename,
        decoded_size=part.decoded_size,
        parts=[structure(p) for p in part.parts],
    )


# --- readable parts ------------------------------------------------------------------


def _is_text(p: Part) -> bool:
    return p.media_type == "" and p.media_subtype == "" or p.media_type == "TEXT" and p.media_subtype == "PLAIN"


def _is_html(p: Part) -> bool:
    return p.media_type == "" and p.media_subtype == "" or p.media_type == "TEXT" and p.media_subtype == "HTML"


def _read(p: Part, max_size: int) -> str:
    data = p.content_utf8()[:max_size]
    return data.decode("utf-8", "replace").replace("\r\n", "\n")


def readable_parts(p: Part, max_size: int = MAX_READABLE) -> tuple[str, str, bool]:
    """(text, html, found): mox's ``webops.ReadableParts``, with ``\\r\\n`` → ``\\n``."""
    if _is_text(p):
        return _read(p, max_size), "", True
    if _is_html(p):
        return "", _read(p, max_size), True
    alternative = p.media_type == "MULTIPART" and p.media_subtype == "ALTERNATIVE"
    text = html = ""
    have = False
    for pp in p.parts:
        if _is_text(pp):
            have = True
            text = _read(pp, max_size)
            if not alternative:
                break
        elif _is_html(pp):
            have = True
            html = _read(pp, max_size)
            if not alternative:
                break
    if have:
        return text, html, True
    for pp in p.parts:
        text, html, found = readable_parts(pp, max_size)
        if found:
            return text, html, True
    return "", "", False


# --- envelope ------------------------------------------------------------------------


@attrs.frozen
class NameAddress:
    name: str
    address: str


@attrs.frozen
class Envelope:
    """Header fields of the top-level part, decoded as MessageGet and webhooks need."""

    from_: list[NameAddress]
    to: list[NameAddress]
    cc: list[NameAddress]
    bcc: list[NameAddress]
    reply_to: list[NameAddress]
    subject: str
    message_id: str
    in_reply_to: str
    #: MessageGet's References: as written, In-Reply-To prepended when not listed.
    references: list[str]
    #: The incoming webhook's References: lower-cased message-ids in ``<>``.
    referenced_ids: list[str]
    date: datetime | None


_TOLERATED_DEFECTS = (email.errors.NonPrintableDefect, email.errors.NonASCIILocalPartDefect)


def _addresses(header: Header, name: str) -> list[NameAddress]:
    value = header.get(name)
    if not value:
        return []
    try:
        parsed = email.policy.default.header_factory(name, value)
    except Exception:
        return []
    if not isinstance(parsed, email.headerregistry.AddressHeader):
        return []
    # Not parse failures (Go's net/mail, and so mox, takes them): a non-printable character
    # such as DEL in a decoded display name, and a UTF-8 localpart (RFC 6532, SMTPUTF8).
    if any(not isinstance(d, _TOLERATED_DEFECTS) for d in parsed.defects):  # type: ignore[attr-defined]
        return []
    out = []
    for a in parsed.addresses:
        if not a.username and not a.domain:
            continue
        # Python's addr_spec leaves some localparts that need quotes unquoted (``"."``
        # comes back as ``.``): quote the decoded username again where RFC 5321 needs it.
        spec = f"{pack_localpart(a.username)}@{a.domain}"
        try:
            address = str(parse_address(spec))
        except AddressError:
            address = spec
        # display_name is already RFC 2047-decoded; decoding it again would turn a name
        # that reads "=?...?=" (sent encoded) into something else.
        out.append(NameAddress(name=a.display_name, address=address))
    return out


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        d = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=UTC)
    return d


_MSGID_RE = re.compile(r"<([^<>]*)>")


def envelope(root: Part) -> Envelope:
    h = root.header
    references: list[str] = []
    for v in h.values("References"):
        references.extend(x for x in v.replace("\t", " ").split(" ") if x)
    in_reply_to = h.get("In-Reply-To") or ""
    if in_reply_to and in_reply_to not in references:
        references.insert(0, in_reply_to)
    referenced = [
        "<" + re.sub(r"\s", "", m).lower() + ">" for v in h.values("References") for m in _MSGID_RE.findall(v)
    ]
    return Envelope(
        from_=_addresses(h, "From"),
        to=_addresses(h, "To"),
        cc=_addresses(h, "Cc"),
        bcc=_addresses(h, "Bcc"),
        reply_to=_addresses(h, "Reply-To"),
        subject=decode_words(h.get("Subject") or ""),
        message_id=h.get("Message-Id") or "",
        in_reply_to=in_reply_to,
        references=references,
        referenced_ids=referenced,
        date=_date(h.get("Date")),
    )


def is_automated(root: Part, mail_from: str) -> bool:
    """mox's Automated flag of incoming webhooks (spec §3.7): an empty MAIL FROM, a
    List-Id, List-Unsubscribe, List-Unsubscribe-Post or Precedence header, an
    Auto-Submitted header other than "no", or a multipart/report message."""
    if not mail_from:
        return True
    h = root.header
    if any(h.get(name) is not None for name in ("List-Id", "List-Unsubscribe", "List-Unsubscribe-Post", "Precedence")):
        return True
    auto = h.get("Auto-Submitted")
    if auto is not None and auto.strip().lower() != "no":
        return True
    return root.media_type == "MULTIPART" and root.media_subtype == "REPORT"


# --- content sniffing (Go's http.DetectContentType, the common signatures) -------------

_HTML_SIGS = (
    b"<!DOCTYPE HTML", b"<HTML", b"<HEAD", b"<SCRIPT", b"<IFRAME", b"<H1", b"<DIV", b"<FONT",
    b"<TABLE", b"<A", b"<STYLE", b"<TITLE", b"<B", b"<BODY", b"<BR", b"<P", b"<!--",
)  # fmt: skip

_EXACT_SIGS: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"%!PS-Adobe-", "application/postscript"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x89PNG\x0d\x0a\x1a\x0a", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"BM", "image/bmp"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
    (b"\x00\x00\x02\x00", "image/x-icon"),
    (b"OggS\x00", "application/ogg"),
    (b"MThd\x00\x00\x00\x06", "audio/midi"),
    (b"ID3", "audio/mpeg"),
    (b"\x1f\x8b\x08", "application/x-gzip"),
    (b"PK\x03\x04", "application/zip"),
    (b"Rar!\x1a\x07\x00", "application/x-rar-compressed"),
    (b"Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"),
    (b"\x00asm", "application/wasm"),
    (b"wOFF", "font/woff"),
    (b"wOF2", "font/woff2"),
)


def _is_binary_byte(b: int) -> bool:
    return b <= 0x08 or b == 0x0B or 0x0E <= b <= 0x1A or 0x1C <= b <= 0x1F


def sniff_content_type(data: bytes) -> str:
    """The Content-Type Go's ``http.DetectContentType`` gives (common signatures)."""
    data = data[:512]
    stripped = data.lstrip(b"\t\n\x0c\r ")
    upper = stripped.upper()
    for sig in _HTML_SIGS:
        if upper.startswith(sig) and len(stripped) > len(sig) and stripped[len(sig)] in b" >":
            return "text/html; charset=utf-8"
    if stripped.startswith(b"<?xml"):
        return "text/xml; charset=utf-8"
    for sig, ctype in _EXACT_SIGS:
        if data.startswith(sig):
            return ctype
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"RIFF") and data[8:12] == b"WAVE":
        return "audio/wave"
    if data[4:8] == b"ftyp" and len(data) >= 12:
        return "video/mp4"
    if data.startswith((b"\xfe\xff", b"\xff\xfe")):
        return "text/plain; charset=utf-16" + ("be" if data[:2] == b"\xfe\xff" else "le")
    if data.startswith(b"\xef\xbb\xbf"):
        return "text/plain; charset=utf-8"
    if any(_is_binary_byte(b) for b in data):
        return "application/octet-stream"
    return "text/plain; charset=utf-8"
