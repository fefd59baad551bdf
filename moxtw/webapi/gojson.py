"""Go ``encoding/json`` compatibility for the webapi and webhooks.

mox is built with go1.27, whose ``encoding/json`` is implemented on top of
``encoding/json/v2`` with the v1 legacy options.  This module reproduces what mox does
with it, byte for byte where it matters:

* Requests are decoded like ``json.NewDecoder(strings.NewReader(s))`` with
  ``DisallowUnknownFields()`` and a single ``Decode``: only the first JSON value is read
  (anything after it is ignored), the value is checked for syntax errors first, then
  decoded into the request type.  Object keys match struct fields exactly, else
  case-insensitively (``strings.EqualFold``).  Type mismatches and unknown fields do not
  stop decoding; the first such error in document order is reported.  Error texts are
  Go's, e.g. ``json: unknown field "Bogus"`` or ``json: cannot unmarshal string into Go
  struct field SendRequest.To of type []webapi.NameAddress``; the field path is the JSON
  path as written in the request (``SendRequest.To.0.Address``, ``SendRequest.to``), and
  a path ending in an array index drops the words "Go struct field"
  (``SendRequest.Headers.0.1``), as go1.27 does.
* Values are encoded like ``json.Marshal``: struct fields in declaration order, map keys
  sorted, ``time.Time`` in RFC 3339 with trimmed nanoseconds, control characters escaped
  (``\\b \\f \\n \\r \\t`` short, others ``\\u00XX``), U+2028/U+2029 escaped,
  ``<``, ``>``, ``&`` escaped only when HTML escaping is on.

Go structs are declared as annotated classes with :func:`gostruct`.  The Go type of a
field follows from its annotation:

==========================  ==========================================================
Python annotation           Go type (zero value)
==========================  ==========================================================
``str``                     ``string`` (``""``)
``bool``                    ``bool`` (``False``)
``int``                     ``int64`` (``0``); ``GoInt`` is Go ``int``,
                            ``Duration`` is ``time.Duration`` (nanoseconds)
``datetime``                ``time.Time`` (:data:`ZERO_TIME`)
``X | None``                ``*X`` (``None`` is nil)
``list[X] | None``          ``[]X`` (``None`` is nil, ``[]`` is an empty slice)
``dict[str, X] | None``     ``map[string]X`` (``None`` is nil)
``tuple[X, X]``             ``[2]X`` (a tuple of zero values)
a :func:`gostruct` class    that struct (an instance with all zero values)
``Annotated[str, Go(n)]``   a named string type ``n``, e.g. ``webhook.OutgoingEvent``
==========================  ==========================================================
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast, dataclass_transform

if TYPE_CHECKING:
    from moxtw.webapi.types import Request

__all__ = [
    "ZERO_TIME",
    "Duration",
    "Go",
    "GoInt",
    "GoJSONError",
    "NanoDatetime",
    "decode",
    "decode_request",
    "encode",
    "encode_response",
    "encode_webhook",
    "field_names",
    "format_time",
    "go_type_name",
    "gostruct",
    "is_gostruct",
    "nanosecond",
    "parse_time",
    "quote",
    "with_nanosecond",
]


class GoJSONError(ValueError):
    """A request could not be decoded; ``str(err)`` is exactly Go's error text.

    The webapi prefixes it with ``parsing request: ``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


# ---------------------------------------------------------------------------------------
# Time values.

ZERO_TIME = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time`` (``0001-01-01T00:00:00Z``)."""


class NanoDatetime(datetime):
    """A :class:`datetime` that also carries the nanoseconds below its microseconds.

    Go times have nanosecond precision; :func:`parse_time` returns a ``NanoDatetime``
    when the input has digits beyond microseconds, and :func:`format_time` writes them
    back.  Comparison, hashing, arithmetic and pickling ignore the extra nanoseconds
    (results of arithmetic are truncated to microseconds).  Create one with
    :func:`with_nanosecond`, read the full value with :func:`nanosecond`.
    """

    _extra_ns: int = 0  # 0..999, nanoseconds below .microsecond

    def __repr__(self) -> str:
        return f"NanoDatetime({format_time(self)})"


def with_nanosecond(dt: datetime, nanosecond: int) -> datetime:
    """Return *dt* with its fraction of a second set to *nanosecond* (0..999999999)."""
    if not 0 <= nanosecond < 1_000_000_000:
        raise ValueError("nanosecond must be in 0..999999999")
    micro, extra = divmod(nanosecond, 1000)
    if extra == 0:
        return datetime(
            dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, micro, dt.tzinfo, fold=dt.fold
        )
    ndt = NanoDatetime(
        dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, micro, dt.tzinfo, fold=dt.fold
    )
    ndt._extra_ns = extra
    return ndt


def nanosecond(dt: datetime) -> int:
    """The fraction of a second of *dt* in nanoseconds (Go's ``Time.Nanosecond()``)."""
    extra = dt._extra_ns if isinstance(dt, NanoDatetime) else 0
    return dt.microsecond * 1000 + extra


def format_time(dt: datetime) -> str:
    """Format like Go's ``time.RFC3339Nano`` (what ``json.Marshal`` writes for a time).

    ``2024-03-27T00:00:00Z``, ``2024-03-27T01:02:03.5+01:00``: trailing zeros of the
    fraction are dropped, a zero offset is written as ``Z``, offset seconds are
    truncated.  A naive datetime is taken to be UTC.
    """
    off = dt.utcoffset()
    offset = 0 if off is None else int(off.total_seconds())  # Go offsets are whole seconds
    parts = [
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    ]
    ns = nanosecond(dt)
    if ns:
        parts.append("." + f"{ns:09d}".rstrip("0"))
    if offset == 0:
        parts.append("Z")
    else:
        zone = abs(offset) // 60  # Go: offset/60 truncates toward zero
        sign = "-" if offset < 0 and zone else "+"
        parts.append(f"{sign}{zone // 60:02d}:{zone % 60:02d}")
    return "".join(parts)


_RFC3339 = b"2006-01-02T15:04:05Z07:00"


def _time_quote(b: bytes) -> str:
    """Go's ``time.quote``: non-ASCII and control bytes as ``\\xNN``."""
    out = ['"']
    for c in b:
        if c >= 0x80 or c < 0x20:
            out.append(f"\\x{c:02x}")
        elif c in (0x22, 0x5C):
            out.append("\\" + chr(c))
        else:
            out.append(chr(c))
    out.append('"')
    return "".join(out)


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


_DAYS_BEFORE = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def _days_in(month: int, year: int) -> int:
    if month == 2 and _is_leap(year):
        return 29
    return _DAYS_BEFORE[month - 1]


def _isdigit(b: bytes, i: int) -> bool:
    return i < len(b) and 0x30 <= b[i] <= 0x39


def parse_time(s: str) -> datetime:
    """Parse like Go's ``time.Time.UnmarshalText`` (what ``json`` does for a time string).

    That is ``time.Parse(time.RFC3339, s)``, which accepts e.g. a one-digit hour and a
    comma before the fraction, fractions of any length (nanosecond precision), offsets up
    to ``+24:60``.  Raises :class:`GoJSONError` with Go's ``*time.ParseError`` text, e.g.
    ``parsing time "yesterday" as "2006-01-02T15:04:05Z07:00": cannot parse "yesterday"
    as "2006"``.  Offsets Python cannot represent (24 hours or more) are converted to UTC;
    year 0, which Go accepts, is refused.
    """
    whole = s.encode("utf-8", "surrogatepass")
    value = whole

    def cannot(layout_elem: bytes, value_elem: bytes) -> GoJSONError:
        return GoJSONError(
            f"parsing time {_time_quote(whole)} as {_time_quote(_RFC3339)}: "
            f"cannot parse {_time_quote(value_elem)} as {_time_quote(layout_elem)}"
        )

    def failed(message: str) -> GoJSONError:
        return GoJSONError(f"parsing time {_time_quote(whole)}{message}")

    def skip(value: bytes, prefix: bytes) -> bytes:
        if not value.startswith(prefix):
            raise cannot(prefix, value)
        return value[len(prefix) :]

    def getnum(value: bytes, fixed: bool) -> tuple[int, bytes] | None:
        if not _isdigit(value, 0):
            return None
        if not _isdigit(value, 1):
            if fixed:
                return None
            return value[0] - 0x30, value[1:]
        return (value[0] - 0x30) * 10 + value[1] - 0x30, value[2:]

    # 2006
    if len(value) < 4 or not _isdigit(value, 0) or not all(0x30 <= c <= 0x39 for c in value[:4]):
        raise cannot(b"2006", value)
    year = int(value[:4])
    value = skip(value[4:], b"-")
    # 01
    hold = value
    num = getnum(value, True)
    if num is None:
        raise cannot(b"01", hold)
    month, value = num
    if not 1 <= month <= 12:
        raise failed(": month out of range")
    value = skip(value, b"-")
    # 02
    hold = value
    num = getnum(value, True)
    if num is None:
        raise cannot(b"02", hold)
    day, value = num
    value = skip(value, b"T")
    # 15
    hold = value
    num = getnum(value, False)
    if num is None:
        raise cannot(b"15", hold)
    hour, value = num
    if hour >= 24:
        raise failed(": hour out of range")
    value = skip(value, b":")
    # 04
    hold = value
    num = getnum(value, True)
    if num is None:
        raise cannot(b"04", hold)
    minute, value = num
    if minute >= 60:
        raise failed(": minute out of range")
    value = skip(value, b":")
    # 05, with an optional fraction the layout does not mention
    hold = value
    num = getnum(value, True)
    if num is None:
        raise cannot(b"05", hold)
    second, value = num
    if second >= 60:
        raise failed(": second out of range")
    nsec = 0
    if len(value) >= 2 and value[0] in b".," and _isdigit(value, 1):
        n = 2
        while _isdigit(value, n):
            n += 1
        digits = value[1 : min(n, 10)]
        nsec = int(digits) * 10 ** (9 - len(digits))
        value = value[n:]
    # Z07:00
    offset: int | None
    if value[:1] == b"Z":
        offset = None
        value = value[1:]
    else:
        hold = value
        bad = False
        range_err = ""
        if len(value) < 6 or value[3] != 0x3A:
            bad = True
        else:
            sign, hh, mm, value = value[0:1], value[1:3], value[4:6], value[6:]
            hr = getnum(hh, True)
            mi = getnum(mm, True) if hr is not None else None
            hours = hr[0] if hr is not None else 0
            minutes = mi[0] if mi is not None else 0
            if hr is None or mi is None:
                bad = True
            if hours > 24:
                range_err = "time zone offset hour"
            if minutes > 60:
                range_err = "time zone offset minute"
            offset = (hours * 60 + minutes) * 60
            if sign == b"-":
                offset = -offset
            elif sign != b"+":
                bad = True
        if range_err:
            raise failed(f": {range_err} out of range")
        if bad:
            raise cannot(b"Z07:00", hold)
    if value:
        raise failed(": extra text: " + _time_quote(value))
    if day < 1 or day > _days_in(month, year):
        raise failed(": day out of range")
    if year == 0:
        raise failed(": year out of range")  # valid in Go, not representable in Python

    micro, extra = divmod(nsec, 1000)
    if offset is None:
        dt = datetime(year, month, day, hour, minute, second, micro, UTC)
    elif -86400 < offset < 86400:
        dt = datetime(
            year, month, day, hour, minute, second, micro, timezone(timedelta(seconds=offset))
        )
    else:
        try:
            dt = datetime(year, month, day, hour, minute, second, micro, UTC)
            dt -= timedelta(seconds=offset)
        except OverflowError:
            raise failed(": year out of range") from None
    if extra:
        return with_nanosecond(dt, nsec)
    return dt


# ---------------------------------------------------------------------------------------
# Go's UTF-8 and quoting rules, for error texts.


def _decode_rune(b: bytes, i: int) -> tuple[int, int]:
    """Go's ``utf8.DecodeRune(b[i:])``: (code point, size), or (-1, 1) if invalid."""
    c = b[i]
    if c < 0x80:
        return c, 1
    n = len(b) - i
    if 0xC2 <= c <= 0xDF:
        if n >= 2 and 0x80 <= b[i + 1] <= 0xBF:
            return ((c & 0x1F) << 6) | (b[i + 1] & 0x3F), 2
        return -1, 1
    if 0xE0 <= c <= 0xEF:
        lo, hi = (0xA0, 0xBF) if c == 0xE0 else (0x80, 0x9F) if c == 0xED else (0x80, 0xBF)
        if n >= 3 and lo <= b[i + 1] <= hi and 0x80 <= b[i + 2] <= 0xBF:
            return ((c & 0x0F) << 12) | ((b[i + 1] & 0x3F) << 6) | (b[i + 2] & 0x3F), 3
        return -1, 1
    if 0xF0 <= c <= 0xF4:
        lo, hi = (0x90, 0xBF) if c == 0xF0 else (0x80, 0x8F) if c == 0xF4 else (0x80, 0xBF)
        if (
            n >= 4
            and lo <= b[i + 1] <= hi
            and 0x80 <= b[i + 2] <= 0xBF
            and 0x80 <= b[i + 3] <= 0xBF
        ):
            cp = ((c & 0x07) << 18) | ((b[i + 1] & 0x3F) << 12) | ((b[i + 2] & 0x3F) << 6)
            return cp | (b[i + 3] & 0x3F), 4
        return -1, 1
    return -1, 1


def _full_rune(b: bytes, i: int) -> bool:
    """Go's ``utf8.FullRune(b[i:])``: False only for a truncated valid prefix."""
    c = b[i]
    n = len(b) - i
    if c < 0xC2 or c > 0xF4:
        return True
    need = 2 if c <= 0xDF else 3 if c <= 0xEF else 4
    if n >= need:
        return True
    if n >= 2:  # check the second byte is plausible
        lo, hi = 0x80, 0xBF
        if c == 0xE0:
            lo = 0xA0
        elif c == 0xED:
            hi = 0x9F
        elif c == 0xF0:
            lo = 0x90
        elif c == 0xF4:
            hi = 0x8F
        if not lo <= b[i + 1] <= hi:
            return True
    if n >= 3 and not 0x80 <= b[i + 2] <= 0xBF:
        return True
    return False


def _go_printable(cp: int) -> bool:
    """Go's ``unicode.IsPrint`` (categories L, M, N, P, S and the ASCII space)."""
    return cp <= 0x10FFFF and not 0xD800 <= cp <= 0xDFFF and chr(cp).isprintable()


_SHORT_ESCAPES = {
    0x07: "\\a",
    0x08: "\\b",
    0x0C: "\\f",
    0x0A: "\\n",
    0x0D: "\\r",
    0x09: "\\t",
    0x0B: "\\v",
}


def _escape_rune(cp: int, quote: str) -> str:
    """Go's ``strconv`` ``appendEscapedRune``."""
    if cp == ord(quote) or cp == 0x5C:
        return "\\" + chr(cp)
    if 0xD800 <= cp <= 0xDFFF or cp > 0x10FFFF:
        return "\\ufffd"
    if chr(cp).isprintable():
        return chr(cp)
    if cp in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[cp]
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _strconv_quote(b: bytes) -> str:
    """Go's ``strconv.Quote`` (``%q``) of a byte string."""
    out = ['"']
    i = 0
    while i < len(b):
        cp, size = _decode_rune(b, i)
        if cp < 0:
            out.append(f"\\x{b[i]:02x}")
        else:
            out.append(_escape_rune(cp, '"'))
        i += size
    out.append('"')
    return "".join(out)


def _quote_rune_at(b: bytes, i: int) -> str:
    """jsonwire's ``QuoteRune``: the first rune of ``b[i:]`` as a Go rune literal."""
    cp, _ = _decode_rune(b, i)
    if cp < 0:
        return f"'\\x{b[i]:x}'"
    return "'" + _escape_rune(cp, "'") + "'"


# ---------------------------------------------------------------------------------------
# Syntax: read and validate the first JSON value (jsontext.Decoder.ReadValue).

_WS = frozenset(b" \t\r\n")
_MAX_DEPTH = 10000
_UNEXPECTED_EOF = "unexpected EOF"


class _Syntax(Exception):
    """A syntax error, with jsontext's (v2) message; converted by :func:`_v1_syntax`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _invalid_char(b: bytes, i: int, where: str) -> _Syntax:
    return _Syntax(f"invalid character {_quote_rune_at(b, i)} {where}")


def _invalid_text(label: str, what: bytes, where: str) -> _Syntax:
    """jsonwire's ``InvalidTextError``."""
    count = 0
    need_escape = False
    i = 0
    while i < len(what):
        cp, size = _decode_rune(what, i)
        count += 1
        if cp < 0 or cp in (0x60, 0xFFFD, 0x20) or not _go_printable(cp) or chr(cp).isspace():
            need_escape = True
        i += size
    if count == 1:
        text = _quote_rune_at(what, 0)
    elif need_escape:
        text = _strconv_quote(what)
    else:
        text = "`" + what.decode("utf-8") + "`"
    return _Syntax(f"invalid {label} {text} {where}".rstrip(" "))


_V1_REPLACEMENTS = (
    ("object name", "object key"),
    ("at start of value", "looking for beginning of value"),
    ("at start of string", "looking for beginning of object key string"),
    ("after object value", "after object key:value pair"),
    ("in number", "in numeric literal"),
)


def _v1_syntax(msg: str) -> str:
    """``encoding/json``'s ``transformSyntacticError`` applied to a v2 message."""
    i = msg.find(" (expecting")
    if i >= 0 and " in literal" not in msg:
        msg = msg[:i]
    out: list[str] = []
    p = 0
    while p < len(msg):
        for old, new in _V1_REPLACEMENTS:
            if msg.startswith(old, p):
                out.append(new)
                p += len(old)
                break
        else:
            out.append(msg[p])
            p += 1
    return "".join(out)


class _Node:
    """A parsed JSON value: kind is one of ``n t f " 0 { [``."""

    __slots__ = ("kind", "text", "members", "elems")

    def __init__(self, kind: str, text: str = "") -> None:
        self.kind = kind
        self.text = text  # unquoted string, or number literal
        self.members: list[tuple[str, _Node]] = []
        self.elems: list[_Node] = []


def _go_replace(exc: UnicodeError) -> tuple[str, int]:
    # Go replaces every byte of an invalid sequence by U+FFFD; Python would replace the
    # maximal invalid subpart by one.
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return "\ufffd", exc.start + 1


codecs.register_error("moxtw-gojson-replace", _go_replace)

_ESCAPE_RE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|(.))", re.DOTALL)
_SIMPLE_UNESCAPE = {
    ord('"'): '"',
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}


_SURROGATE_ESCAPE_RE = re.compile(rb"\\u[dD][89a-fA-F]")


def _unquote(raw: bytes) -> str:
    """jsonwire's ``AppendUnquote`` of a validated string body (without the quotes)."""
    if b"\\" not in raw:
        return raw.decode("utf-8", "moxtw-gojson-replace")
    if _SURROGATE_ESCAPE_RE.search(raw) is None:
        # Fast path: without invalid UTF-8 and surrogate escapes, Python agrees with Go.
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return cast(str, json.loads('"' + text + '"'))
    out: list[str] = []
    pos = 0
    pending_high = -1  # a high surrogate waiting for its low half
    for m in _ESCAPE_RE.finditer(raw):
        if m.start() != pos:
            if pending_high >= 0:
                out.append("\ufffd")
                pending_high = -1
            out.append(raw[pos : m.start()].decode("utf-8", "moxtw-gojson-replace"))
        pos = m.end()
        hexdigits = m.group(1)
        if hexdigits is None:
            if pending_high >= 0:
                out.append("\ufffd")
                pending_high = -1
            out.append(_SIMPLE_UNESCAPE[m.group(2)[0]])
            continue
        cp = int(hexdigits, 16)
        if pending_high >= 0:
            if 0xDC00 <= cp <= 0xDFFF:
                out.append(chr(0x10000 + ((pending_high - 0xD800) << 10) + (cp - 0xDC00)))
                pending_high = -1
                continue
            out.append("\ufffd")
            pending_high = -1
        if 0xD800 <= cp <= 0xDBFF:
            pending_high = cp
        elif 0xDC00 <= cp <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(chr(cp))
    if pending_high >= 0:
        out.append("\ufffd")
    out.append(raw[pos:].decode("utf-8", "moxtw-gojson-replace"))
    return "".join(out)


def _has_escaped_utf16_prefix(b: bytes) -> bool:
    for i, c in enumerate(b[:6]):
        if i == 0 and c != 0x5C:
            return False
        if i == 1 and c != 0x75:
            return False
        if i >= 2 and not (0x30 <= c <= 0x39 or 0x61 <= c <= 0x66 or 0x41 <= c <= 0x46):
            return False
    return True


# A run of string content that is valid as is: printable ASCII except '"' and '\\',
# valid escape sequences, and valid UTF-8 sequences (possessive: no backtracking).
_PLAIN_RUN_RE = re.compile(
    rb"(?:[\x20\x21\x23-\x5b\x5d-\x7f]++"
    rb'|\\["\\/bfnrt]'
    rb"|\\u[0-9a-fA-F]{4}"
    rb"|[\xc2-\xdf][\x80-\xbf]"
    rb"|\xe0[\xa0-\xbf][\x80-\xbf]"
    rb"|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
    rb"|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}"
    rb"|[\xf1-\xf3][\x80-\xbf]{3}"
    rb"|\xf4[\x80-\x8f][\x80-\xbf]{2})*+"
)


def _scan_string(b: bytes, i: int) -> tuple[str, int]:
    """Consume the string starting at ``b[i] == '"'``; return (value, end)."""
    n = len(b)
    j = i + 1
    run = _PLAIN_RUN_RE.match
    while True:
        m = run(b, j)
        assert m is not None  # the pattern matches the empty string
        j = m.end()
        if j >= n:
            raise _Syntax(_UNEXPECTED_EOF)
        c = b[j]
        if c == 0x22:
            return _unquote(b[i + 1 : j]), j + 1
        if c == 0x5C:
            if j + 2 > n:
                raise _Syntax(_UNEXPECTED_EOF)
            e = b[j + 1]
            if e in b'"\\/bfnrt':
                j += 2
            elif e == 0x75:
                if j + 6 > n:
                    if _has_escaped_utf16_prefix(b[j:]):
                        raise _Syntax(_UNEXPECTED_EOF)
                    raise _invalid_text("escape sequence", b[j:], "in string")
                if not all(
                    0x30 <= x <= 0x39 or 0x61 <= x <= 0x66 or 0x41 <= x <= 0x46
                    for x in b[j + 2 : j + 6]
                ):
                    raise _invalid_text("escape sequence", b[j : j + 6], "in string")
                j += 6
            else:
                raise _invalid_text("escape sequence", b[j : j + 2], "in string")
        elif c >= 0x80:
            cp, size = _decode_rune(b, j)
            if cp < 0 and not _full_rune(b, j):
                raise _Syntax(_UNEXPECTED_EOF)
            j += size  # invalid UTF-8 is allowed, and replaced when unquoting
        else:
            raise _invalid_char(b, j, "in string (expecting non-control character)")


def _scan_number(b: bytes, i: int) -> int:
    """jsonwire's ``ConsumeNumber``; return the end of the number."""
    n = len(b)
    j = i
    if b[j] == 0x2D:
        j += 1
    if j >= n:
        raise _Syntax(_UNEXPECTED_EOF)
    if b[j] == 0x30:
        j += 1
    elif 0x31 <= b[j] <= 0x39:
        j += 1
        while j < n and 0x30 <= b[j] <= 0x39:
            j += 1
    else:
        raise _invalid_char(b, j, "in number (expecting digit)")
    if j < n and b[j] == 0x2E:
        j += 1
        if j >= n:
            raise _Syntax(_UNEXPECTED_EOF)
        if not 0x30 <= b[j] <= 0x39:
            raise _invalid_char(b, j, "in number (expecting digit)")
        while j < n and 0x30 <= b[j] <= 0x39:
            j += 1
    if j < n and b[j] in b"eE":
        j += 1
        if j < n and b[j] in b"+-":
            j += 1
        if j >= n:
            raise _Syntax(_UNEXPECTED_EOF)
        if not 0x30 <= b[j] <= 0x39:
            raise _invalid_char(b, j, "in number (expecting digit)")
        while j < n and 0x30 <= b[j] <= 0x39:
            j += 1
    return j


def _scan_literal(b: bytes, i: int, lit: bytes) -> int:
    for k, want in enumerate(lit):
        if i + k >= len(b):
            raise _Syntax(_UNEXPECTED_EOF)
        if b[i + k] != want:
            expect = "'" + chr(want) + "'"
            raise _invalid_char(b, i + k, f"in literal {lit.decode()} (expecting {expect})")
    return i + len(lit)


def _skip_ws(b: bytes, i: int) -> int:
    n = len(b)
    while i < n and b[i] in _WS:
        i += 1
    return i


def _parse_first_value(b: bytes) -> _Node:
    """Read the first JSON value of *b* like go1.27's ``json.Decoder.Decode``.

    Raises :class:`GoJSONError` with the v1 error text for syntax errors (``EOF`` for
    empty input, ``unexpected EOF`` for truncated input).
    """
    try:
        return _parse_value(b)
    except _Syntax as exc:
        if exc.message in ("EOF", _UNEXPECTED_EOF):
            raise GoJSONError(exc.message) from None
        raise GoJSONError(_v1_syntax(exc.message)) from None


def _parse_name(b: bytes, i: int) -> tuple[str, int]:
    if i >= len(b):
        raise _Syntax(_UNEXPECTED_EOF)
    if b[i] != 0x22:
        raise _invalid_char(b, i, "at start of string (expecting '\"')")
    name, i = _scan_string(b, i)
    i = _skip_ws(b, i)
    if i >= len(b):
        raise _Syntax(_UNEXPECTED_EOF)
    if b[i] != 0x3A:
        raise _invalid_char(b, i, "after object name (expecting ':')")
    i = _skip_ws(b, i + 1)
    if i >= len(b):
        raise _Syntax(_UNEXPECTED_EOF)
    return name, i


def _parse_value(b: bytes) -> _Node:
    n = len(b)
    i = _skip_ws(b, 0)
    if i >= n:
        raise _Syntax("EOF")
    if b[i] in b",:":
        raise _invalid_char(b, i, "at start of value")
    # Containers being read, with the name of the member being read for objects.
    stack: list[tuple[_Node, str]] = []
    while True:
        # Read the value starting at b[i] (no whitespace, not at the end).
        c = b[i]
        node: _Node
        if c == 0x7B or c == 0x5B:  # { [
            if len(stack) >= _MAX_DEPTH:
                raise _Syntax("exceeded max depth")
            i = _skip_ws(b, i + 1)
            if i >= n:
                raise _Syntax(_UNEXPECTED_EOF)
            if c == 0x7B:
                node = _Node("{")
                if b[i] != 0x7D:
                    name, i = _parse_name(b, i)
                    stack.append((node, name))
                    continue
            else:
                node = _Node("[")
                if b[i] != 0x5D:
                    stack.append((node, ""))
                    continue
            i += 1
        elif c == 0x22:
            text, i = _scan_string(b, i)
            node = _Node('"', text)
        elif c == 0x2D or 0x30 <= c <= 0x39:
            end = _scan_number(b, i)
            node = _Node("0", b[i:end].decode("ascii"))
            i = end
        elif c == 0x6E:
            i = _scan_literal(b, i, b"null")
            node = _Node("n")
        elif c == 0x74:
            i = _scan_literal(b, i, b"true")
            node = _Node("t")
        elif c == 0x66:
            i = _scan_literal(b, i, b"false")
            node = _Node("f")
        else:
            raise _invalid_char(b, i, "at start of value")

        # Store the value in its container; close containers that end here.
        while True:
            if not stack:
                return node  # anything after the first value is not read
            parent, name = stack[-1]
            if parent.kind == "{":
                parent.members.append((name, node))
            else:
                parent.elems.append(node)
            i = _skip_ws(b, i)
            if i >= n:
                raise _Syntax(_UNEXPECTED_EOF)
            c = b[i]
            if c == 0x2C:  # ,
                i = _skip_ws(b, i + 1)
                if i >= n:
                    raise _Syntax(_UNEXPECTED_EOF)
                if parent.kind == "{":
                    name, i = _parse_name(b, i)
                    stack[-1] = (parent, name)
                break
            if parent.kind == "{":
                if c != 0x7D:
                    raise _invalid_char(b, i, "after object value (expecting ',' or '}')")
            elif c != 0x5D:
                raise _invalid_char(b, i, "after array element (expecting ',' or ']')")
            i += 1
            stack.pop()
            node = parent


# ---------------------------------------------------------------------------------------
# Go types and struct declarations.


@dataclasses.dataclass(frozen=True)
class Go:
    """``Annotated`` marker giving the Go type name of an ``int`` or ``str`` field."""

    name: str


GoInt = Annotated[int, Go("int")]
"""Go ``int`` (64 bits, like ``int64``, but named ``int`` in error texts)."""

Duration = Annotated[int, Go("time.Duration")]
"""Go ``time.Duration``: an integer number of nanoseconds."""


class _Type:
    name: str  # Go type name as printed in error messages

    def zero(self) -> Any:
        raise NotImplementedError


class _String(_Type):
    def __init__(self, name: str = "string") -> None:
        self.name = name

    def zero(self) -> Any:
        return ""


class _Bool(_Type):
    name = "bool"

    def zero(self) -> Any:
        return False


class _Int(_Type):
    def __init__(self, name: str = "int64") -> None:
        self.name = name

    def zero(self) -> Any:
        return 0


class _Time(_Type):
    name = "time.Time"

    def zero(self) -> Any:
        return ZERO_TIME


class _Pointer(_Type):
    def __init__(self, elem: _Type) -> None:
        self.elem = elem
        self.name = "*" + elem.name

    def zero(self) -> Any:
        return None


class _Slice(_Type):
    def __init__(self, elem: _Type) -> None:
        self.elem = elem
        self.name = "[]" + elem.name

    def zero(self) -> Any:
        return None


class _Map(_Type):
    def __init__(self, elem: _Type) -> None:
        self.elem = elem
        self.name = "map[string]" + elem.name

    def zero(self) -> Any:
        return None


class _Array(_Type):
    def __init__(self, elem: _Type, length: int) -> None:
        self.elem = elem
        self.length = length
        self.name = f"[{length}]{elem.name}"

    def zero(self) -> Any:
        return tuple(self.elem.zero() for _ in range(self.length))


class _Struct(_Type):
    def __init__(self, cls: type) -> None:
        self.cls = cls
        decl = _DECLS[cls]
        self.name = f"{decl.package}.{decl.name}"

    @property
    def info(self) -> _StructInfo:
        return _struct_info(self.cls)

    def zero(self) -> Any:
        return self.cls()


@dataclasses.dataclass(frozen=True)
class _Decl:
    package: str
    name: str


@dataclasses.dataclass
class _Field:
    name: str
    type: _Type


class _StructInfo:
    def __init__(self, cls: type, decl: _Decl) -> None:
        self.cls = cls
        self.name = decl.name
        self.go_name = f"{decl.package}.{decl.name}"
        self.fields: list[_Field] = []
        self.by_name: dict[str, _Field] = {}
        self.by_folded: dict[str, _Field] = {}

    def lookup(self, key: str) -> _Field | None:
        """Exact match first, then ``strings.EqualFold`` (first field wins)."""
        f = self.by_name.get(key)
        if f is not None:
            return f
        folded = _ascii_fold(key)
        if folded is None:
            return None
        return self.by_folded.get(folded)


def _ascii_fold(s: str) -> str | None:
    """Fold *s* for comparison with ASCII names like ``strings.EqualFold`` does.

    Besides ASCII case, KELVIN SIGN matches k and LATIN SMALL LETTER LONG S matches s;
    other non-ASCII characters cannot match an ASCII name (None).
    """
    if s.isascii():
        return s.lower()
    out = []
    for ch in s:
        if ch.isascii():
            out.append(ch.lower())
        elif ch == "\u212a":
            out.append("k")
        elif ch == "\u017f":
            out.append("s")
        else:
            return None
    return "".join(out)


_DECLS: dict[type, _Decl] = {}
_INFOS: dict[type, _StructInfo] = {}

_T = TypeVar("_T")


@dataclass_transform(kw_only_default=True, frozen_default=True)
def gostruct(package: str, *, name: str | None = None) -> Callable[[type[_T]], type[_T]]:
    """Declare a Go struct ``package.Name`` as a frozen, keyword-only dataclass.

    Fields are the annotated class attributes, in Go field order, named exactly like the
    Go fields; each needs a default, the Go zero value (see the module docstring)::

        @gostruct("webapi")
        class MessageFlagsAddRequest:
            MsgID: int = 0
            Flags: list[str] | None = None
    """

    def declare(cls: type[_T]) -> type[_T]:
        dc = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        _DECLS[dc] = _Decl(package, name or cls.__name__)
        return dc

    return declare


def is_gostruct(obj: object) -> bool:
    """Whether *obj* is a :func:`gostruct` class or an instance of one."""
    return (obj if isinstance(obj, type) else type(obj)) in _DECLS


def go_type_name(cls: type) -> str:
    """The Go name of a :func:`gostruct` class, e.g. ``webapi.SendRequest``."""
    return _struct_info(cls).go_name


def _struct_info(cls: type) -> _StructInfo:
    info = _INFOS.get(cls)
    if info is not None:
        return info
    decl = _DECLS.get(cls)
    if decl is None:
        raise TypeError(f"{cls!r} is not a gostruct")
    info = _StructInfo(cls, decl)
    _INFOS[cls] = info  # before resolving fields: types may be recursive
    module = sys.modules[cls.__module__]
    try:
        hints = typing.get_type_hints(cls, globalns=vars(module), localns={}, include_extras=True)
        for f in dataclasses.fields(cls):
            if not f.name.isascii():
                raise TypeError(f"{cls.__name__}.{f.name}: Go field names must be ASCII")
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: needs a default (the Go zero value)")
            field = _Field(f.name, _type_from_hint(hints[f.name], f"{cls.__name__}.{f.name}"))
            info.fields.append(field)
            info.by_name.setdefault(f.name, field)
            info.by_folded.setdefault(f.name.lower(), field)
    except BaseException:
        del _INFOS[cls]
        raise
    return info


def _type_from_hint(hint: Any, where: str) -> _Type:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Annotated:
        base = args[0]
        names = [m.name for m in args[1:] if isinstance(m, Go)]
        if len(names) != 1:
            raise TypeError(f"{where}: Annotated needs one Go(...) marker")
        if base is str:
            return _String(names[0])
        if base is int:
            return _Int(names[0])
        raise TypeError(f"{where}: Go(...) names only apply to str and int")
    if hint is str:
        return _String()
    if hint is bool:
        return _Bool()
    if hint is int:
        return _Int()
    if hint is datetime:
        return _Time()
    if origin is typing.Union or origin is types.UnionType:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            inner = rest[0]
            if typing.get_origin(inner) in (list, dict):
                return _type_from_hint(inner, where)  # slices and maps are nil-able
            return _Pointer(_type_from_hint(inner, where))
        raise TypeError(f"{where}: unsupported union {hint!r}")
    if origin is list:
        return _Slice(_type_from_hint(args[0], where))
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"{where}: map keys must be str")
        return _Map(_type_from_hint(args[1], where))
    if origin is tuple:
        if not args or Ellipsis in args or any(a != args[0] for a in args):
            raise TypeError(f"{where}: arrays are tuples of one element type")
        return _Array(_type_from_hint(args[0], where), len(args))
    if isinstance(hint, type) and hint in _DECLS:
        return _Struct(hint)
    raise TypeError(f"{where}: unsupported type {hint!r}")


# ---------------------------------------------------------------------------------------
# Semantic decoding (encoding/json/v2 arshalers with the v1 legacy options).

_KIND_WORDS = {
    "n": "null",
    "t": "bool",
    "f": "bool",
    '"': "string",
    "0": "number",
    "{": "object",
    "[": "array",
}
_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
Path = list[str | int]


class _Decoding:
    def __init__(self, root: str, disallow_unknown: bool) -> None:
        self.root = root
        self.disallow_unknown = disallow_unknown
        self.error: GoJSONError | None = None

    def fail(self, err: GoJSONError) -> None:
        if self.error is None:  # the first error in document order is reported
            self.error = err

    def type_error(self, node: _Node, gotype: _Type, path: Path) -> None:
        self.fail(self.type_error_text(_KIND_WORDS[node.kind], gotype, path))

    def type_error_text(self, value: str, gotype: _Type, path: Path) -> GoJSONError:
        if not path:
            return GoJSONError(
                f"json: cannot unmarshal {value} into Go value of type {gotype.name}"
            )
        # The JSON pointer to the value, "/"-separators replaced by ".".
        field = ".".join(
            str(t) if isinstance(t, int) else t.replace("~", "~0").replace("/", "~1") for t in path
        )
        last = field[field.rfind(".") + 1 :]
        into = "" if last and last.isdigit() and last.isascii() else "Go struct field "
        return GoJSONError(
            f"json: cannot unmarshal {value} into {into}{self.root}.{field} of type {gotype.name}"
        )

    def value(self, node: _Node, gotype: _Type, current: Any, path: Path) -> Any:
        kind = node.kind
        if isinstance(gotype, _Pointer):
            if kind == "n":
                return None
            return self.value(
                node, gotype.elem, gotype.elem.zero() if current is None else current, path
            )
        if kind == "n":
            # null: nil for slices and maps, no change for everything else (v1 merge).
            return None if isinstance(gotype, (_Slice, _Map)) else current
        if isinstance(gotype, _String):
            if kind == '"':
                return node.text
        elif isinstance(gotype, _Bool):
            if kind in "tf":
                return kind == "t"
        elif isinstance(gotype, _Int):
            if kind == "0":
                text = node.text
                if _INT_RE.fullmatch(text):
                    n = int(text)
                    if -(1 << 63) <= n < (1 << 63):
                        return n
                self.fail(self.type_error_text("number " + text, gotype, path))
                return current
        elif isinstance(gotype, _Time):
            if kind == '"':
                try:
                    return parse_time(node.text)
                except GoJSONError as exc:
                    self.fail(exc)  # returned verbatim, not wrapped
                    return current
        elif isinstance(gotype, _Slice):
            if kind == "[":
                existing = current if current is not None else []
                out = []
                for i, elem in enumerate(node.elems):
                    base = existing[i] if i < len(existing) else gotype.elem.zero()
                    out.append(self.value(elem, gotype.elem, base, [*path, i]))
                return out
        elif isinstance(gotype, _Array):
            if kind == "[":
                items = list(current)
                for i, elem in enumerate(node.elems):
                    if i < gotype.length:  # extra elements are skipped unchecked
                        items[i] = self.value(elem, gotype.elem, items[i], [*path, i])
                for i in range(len(node.elems), gotype.length):
                    items[i] = gotype.elem.zero()
                return tuple(items)
        elif isinstance(gotype, _Map):
            if kind == "{":
                out_map = dict(current) if current is not None else {}
                for key, member in node.members:
                    out_map[key] = self.value(member, gotype.elem, gotype.elem.zero(), [*path, key])
                return out_map
        elif isinstance(gotype, _Struct):
            if kind == "{":
                return self.struct(node, gotype.info, current, path)
        else:  # pragma: no cover
            raise TypeError(f"cannot decode into {gotype!r}")
        self.type_error(node, gotype, path)
        return current

    def struct(self, node: _Node, info: _StructInfo, current: Any, path: Path) -> Any:
        values = {f.name: getattr(current, f.name) for f in info.fields}
        for key, member in node.members:
            field = info.lookup(key)
            if field is None:
                if self.disallow_unknown:
                    self.fail(
                        GoJSONError("json: unknown field " + _strconv_quote(key.encode("utf-8")))
                    )
                continue
            values[field.name] = self.value(member, field.type, values[field.name], [*path, key])
        return info.cls(**values)


def _to_bytes(raw: str | bytes) -> bytes:
    if isinstance(raw, bytes):
        return raw
    try:
        return raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return raw.encode("utf-8", "surrogatepass")


def decode(cls: type[_T], raw: str | bytes, *, disallow_unknown: bool = True) -> _T:
    """Decode the first JSON value of *raw* into the :func:`gostruct` class *cls*.

    Behaves like go1.27's ``json.NewDecoder(r)`` (+ ``DisallowUnknownFields()``) and one
    ``Decode``; raises :class:`GoJSONError` with Go's error text.  Invalid UTF-8 in
    strings becomes U+FFFD (a ``str`` *raw* may carry such bytes as surrogate escapes).
    Absent members and JSON ``null`` leave zero values (``null`` makes slices, maps and
    pointers ``None``); an empty JSON array gives ``[]``, an absent one ``None``.
    """
    info = _struct_info(cls)
    node = _parse_first_value(_to_bytes(raw))
    decoding = _Decoding(info.name, disallow_unknown)
    value = decoding.value(node, _Struct(cls), cls(), [])
    if decoding.error is not None:
        raise decoding.error
    return cast(_T, value)


def decode_request(method: str, raw: str | bytes) -> Request:
    """Decode the ``request`` form field of a webapi call to *method* (e.g. ``"Send"``).

    Raises :class:`KeyError` for an unknown method and :class:`GoJSONError` for an
    undecodable request (respond ``protocol``, ``parsing request: <err>``).
    """
    from moxtw.webapi.types import REQUEST_TYPES

    return decode(REQUEST_TYPES[method], raw)


# ---------------------------------------------------------------------------------------
# Encoding (json.Marshal with the v1 options).

_ESCAPE_HTML_RE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\ud800-\udfff]')
_ESCAPE_PLAIN_RE = re.compile('[\x00-\x1f"\\\\\u2028\u2029\ud800-\udfff]')
_JSON_SHORT = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    short = _JSON_SHORT.get(c)
    if short is not None:
        return short
    if "\ud800" <= c <= "\udfff":
        return "\\ufffd"  # invalid UTF-8 (a lone surrogate / surrogate escape)
    return f"\\u{ord(c):04x}"


def _quote(s: str, html: bool) -> str:
    return '"' + (_ESCAPE_HTML_RE if html else _ESCAPE_PLAIN_RE).sub(_escape_char, s) + '"'


def quote(s: str, *, html_escape: bool) -> str:
    """``json.Marshal`` of a Go string (for values that are not structs, e.g. map keys)."""
    return _quote(s, html_escape)


def _encode_value(value: Any, gotype: _Type, out: list[str], html: bool, fill_nil: bool) -> None:
    if isinstance(gotype, _String):
        if not isinstance(value, str):
            raise TypeError(f"expected str for {gotype.name}, got {value!r}")
        out.append(_quote(value, html))
    elif isinstance(gotype, _Bool):
        out.append("true" if value else "false")
    elif isinstance(gotype, _Int):
        if not isinstance(value, int):
            raise TypeError(f"expected int for {gotype.name}, got {value!r}")
        out.append(str(int(value)))
    elif isinstance(gotype, _Time):
        if not isinstance(value, datetime):
            raise TypeError(f"expected datetime for time.Time, got {value!r}")
        out.append('"' + format_time(value) + '"')
    elif isinstance(gotype, _Pointer):
        if value is None:
            out.append("null")
        else:
            _encode_value(value, gotype.elem, out, html, fill_nil)
    elif isinstance(gotype, (_Slice, _Array)):
        if value is None:
            if isinstance(gotype, _Array):
                raise TypeError(f"expected a tuple for {gotype.name}")
            out.append("[]" if fill_nil else "null")
            return
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode_value(item, gotype.elem, out, html, fill_nil)
        out.append("]")
    elif isinstance(gotype, _Map):
        if value is None:
            out.append("{}" if fill_nil else "null")
            return
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if i:
                out.append(",")
            out.append(_quote(key, html))
            out.append(":")
            _encode_value(value[key], gotype.elem, out, html, fill_nil)
        out.append("}")
    elif isinstance(gotype, _Struct):
        if not isinstance(value, gotype.cls):
            raise TypeError(f"expected {gotype.name}, got {value!r}")
        out.append("{")
        for i, f in enumerate(gotype.info.fields):
            if i:
                out.append(",")
            out.append(_quote(f.name, html))
            out.append(":")
            _encode_value(getattr(value, f.name), f.type, out, html, fill_nil)
        out.append("}")
    else:  # pragma: no cover
        raise TypeError(f"cannot encode {gotype!r}")


def encode(obj: object, *, html_escape: bool, fill_nil: bool = False) -> bytes:
    """``json.Marshal`` of a :func:`gostruct` instance (no trailing newline).

    With *html_escape*, ``<``, ``>`` and ``&`` are written as ``\\u003c``, ``\\u003e``,
    ``\\u0026`` (Go's default).  ``None`` slices and maps are ``null``, or ``[]``/``{}``
    with *fill_nil* (mox's ``FillNil``); ``None`` pointers are always ``null``.
    """
    if not is_gostruct(obj) or isinstance(obj, type):
        raise TypeError(f"{obj!r} is not a gostruct instance")
    out: list[str] = []
    _encode_value(obj, _Struct(type(obj)), out, html_escape, fill_nil)
    return "".join(out).encode("utf-8")


def encode_response(obj: object) -> bytes:
    """A webapi JSON response body: nil slices/maps as empty, no HTML escaping, ``\\n``."""
    return encode(obj, html_escape=False, fill_nil=True) + b"\n"


def encode_webhook(obj: object) -> bytes:
    """A webhook payload: ``json.Marshal`` (HTML-escaped, nils as ``null``, no newline)."""
    return encode(obj, html_escape=True)


def field_names(cls: type) -> Mapping[str, str]:
    """Field name to Go type name of a :func:`gostruct` class, in field order."""
    return {f.name: f.type.name for f in _struct_info(cls).fields}
