"""Hypothesis strategies for webapi requests, built from a served OpenAPI document.

Tools such as schemathesis treat the form field ``request`` as an opaque string: they do
not generate from its ``contentSchema``.  :class:`RequestStrategies` walks the document's
JSON schemas itself (``$ref``, ``anyOf``, type lists for nullables, objects with
``properties``/``additionalProperties``, arrays with ``items``/``prefixItems``, strings
with ``format: date-time``, integers with bounds, booleans) so that the generated requests
get through parsing and reach the methods' logic:

* :meth:`~RequestStrategies.request`: a value that fits the method's request schema;
  leaves named in :data:`HINTS` (addresses, message IDs, MsgIDs, flags, base64 data,
  release times, ...) are drawn from useful values more often than from their type alone;
* :meth:`~RequestStrategies.mutated`: the JSON text of such a value with one mutation:
  a node of the wrong type, a huge value, odd unicode (lone surrogate escapes, NUL, bidi),
  deep nesting, renamed/duplicated/unknown keys, a truncated or trailing-garbage text,
  or another top-level value;
* :meth:`~RequestStrategies.body`: the HTTP body carrying a request, urlencoded or
  ``multipart/form-data`` with the file parts the document lists for the method.

Everything structural comes from the document given to the constructor (the one the
daemon serves), never from moxtw's Python types.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

REF = "#/components/schemas/"
URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

# --- leaf values -------------------------------------------------------------------------

#: Text without lone surrogates (those cannot be sent as UTF-8; mutations send them as
#: JSON escapes).
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
short_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
#: Header-ish text: printable, no CR/LF (CR/LF are tried by mutations and other fuzzers).
line_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=40)
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=12)

localparts = st.one_of(
    st.sampled_from(["mox", "mox+tag", "Mox", "you", "a.b", "mox-x", "x+y+z", '"quoted local"', "ünï", ""]),
    token,
    short_text,
)
domains = st.one_of(
    st.sampled_from(
        ["localhost", "LocalHost", "example.localhost", "sub.localhost", "xn--bcher-kva.localhost",
         "bücher.localhost", "[127.0.0.1]", "localhost.", "-bad-.localhost", ""]
    ),
    st.lists(token, min_size=1, max_size=3).map(".".join),
)
addresses = st.one_of(st.builds(lambda lp, d: f"{lp}@{d}", localparts, domains), short_text)
message_ids = st.one_of(st.builds(lambda a, b: f"<{a}@{b}>", token, token), short_text, st.just("<>"))
content_types = st.one_of(
    st.sampled_from(
        ["", "text/plain", "text/plain; charset=utf-8", "image/png", "application/octet-stream",
         "application/pdf", "text/html; charset=iso-8859-1", "multipart/mixed", "message/rfc822",
         "bogus", "text/", "a/b; c"]
    ),
    short_text,
)
system_flags = [
    "\\Seen", "\\seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "$Junk", "$NotJunk",
    "$Forwarded", "$Phishing", "$MDNSent", "\\Recent", "\\bogus",
]
flags = st.one_of(st.sampled_from(system_flags), token, short_text)
mailboxes = st.one_of(
    st.sampled_from(["Inbox", "INBOX", "inbox", "Sent", "Archive", "Drafts", "Junk", "Trash", "Nope", "Inbox/Sub", ""]),
    short_text,
)
header_names = st.one_of(
    st.sampled_from(
        ["X-Custom", "X-Order", "List-Id", "Subject", "From", "To", "Message-ID", "Content-Type",
         "MIME-Version", "Date", "Bcc", "Auto-Submitted", "x-mixed-CASE", "", "X Space", "X:Colon"]
    ),
    st.builds(lambda t: "X-" + t, token),
    short_text,
)
#: Base64 data for File.Data: standard (valid) most often, sometimes not base64 at all.
base64_data = st.one_of(
    st.binary(max_size=3000).map(lambda b: base64.b64encode(b).decode()),
    st.binary(max_size=200).map(lambda b: base64.urlsafe_b64encode(b).decode().rstrip("=")),
    st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode().replace("=", "")),
    short_text,
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8)),
                         timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))])


def rfc3339(dt: datetime, fraction: bool) -> str:
    """``dt`` as RFC 3339 the way JSON clients write it (upper-case T and Z)."""
    s = dt.isoformat(timespec="microseconds" if fraction else "seconds")
    return s.replace("+00:00", "Z")


def date_times(now: datetime) -> SearchStrategy[str]:
    """RFC 3339 times: around ``now`` (FutureRelease's 60 days and a little past them,
    the recent past) and anywhere in years 0001-9999."""
    near = st.builds(
        lambda secs, tz, frac: rfc3339((now + timedelta(seconds=secs)).astimezone(tz), frac),
        st.integers(-3 * 86400, 65 * 86400), zones, st.booleans(),
    )
    anywhen = st.builds(
        lambda dt, tz, frac: rfc3339(dt.replace(tzinfo=tz), frac),
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), zones, st.booleans(),
    )
    return st.one_of(near, anywhen, st.just("0001-01-01T00:00:00Z"))


def hints(now: datetime) -> dict[str, SearchStrategy[Any]]:
    """Useful values for leaves, by where they are: ``Prop`` for a property, ``Prop[]`` for
    its array items, ``Prop[][0]`` for a tuple member, ``Prop{}`` for map values and
    ``Prop{key}`` for map keys.  Each is used alongside the type's plain strategy."""
    times = date_times(now)
    return {
        "Address": addresses,
        "EmailAddress": addresses,
        "Name": st.one_of(line_text, st.sampled_from(["report.pdf", "a/b\\c.txt", 'quo"te', "=?utf-8?q?x?="])),
        "MessageID": message_ids,
        "References[]": message_ids,
        "Subject": st.one_of(line_text, text),
        "Text": st.one_of(text, st.text(max_size=2000)),
        "HTML": st.one_of(text, st.builds(lambda t, cid: f'<p>{t}</p><img src="cid:{cid}">', text, token)),
        "Extra{key}": st.one_of(token, short_text),
        "Extra{}": st.one_of(token, line_text),
        "Headers[][0]": header_names,
        "Headers[][1]": st.one_of(line_text, st.just("value\r\n injected: yes")),
        "ContentType": content_types,
        "ContentID": message_ids,
        "Data": base64_data,
        "Date": times,
        "FutureRelease": times,
        "Flags[]": flags,
        "DestMailboxName": mailboxes,
        # Stored messages have small IDs; mostly try those.
        "MsgID": st.one_of(st.integers(1, 12), st.integers(0, 60), st.integers(INT64_MIN, INT64_MAX)),
        "PartPath[]": st.one_of(st.integers(-1, 4), st.integers(INT64_MIN, INT64_MAX)),
        "Reason": line_text,
    }


letters = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10).filter(
    # localserve's delivery simulates failures for these localpart endings
    lambda s: not s.endswith(("temperror", "permerror", "timeout"))
)
printable = st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc")), max_size=40)
message_id = st.builds(lambda a, b: f"<{a}@{b}.example>", letters, letters)


def plausible_hints(now: datetime) -> dict[str, SearchStrategy[Any]]:
    """Like :func:`hints`, values the server should accept (used alone, in plausible mode)."""
    address = st.one_of(
        st.sampled_from(["mox@localhost", "mox+tag@localhost", "Mox@LocalHost"]),
        st.builds(lambda lp, d: f"{lp}@{d}", letters, st.sampled_from(["localhost", "example.localhost"])),
    )
    release = st.builds(
        lambda secs, tz: rfc3339((now + timedelta(seconds=secs)).astimezone(tz), False),
        st.integers(-3600, 59 * 86400), zones,
    )
    return {
        "Address": address,
        "EmailAddress": address,
        "Name": printable,
        "MessageID": message_id,
        "References[]": message_id,
        "Subject": printable,
        "Text": st.text(min_size=1, max_size=500),
        "HTML": st.builds(lambda t: f"<p>{t}</p>", printable),
        "Extra{key}": letters,
        "Extra{}": printable,
        "Headers[][0]": letters.map(lambda t: "X-" + t),
        "Headers[][1]": printable,
        "ContentType": st.sampled_from(["", "text/plain", "image/png", "application/octet-stream"]),
        "ContentID": message_id,
        "Data": st.binary(max_size=2000).map(lambda b: base64.b64encode(b).decode()),
        "Date": release,
        "FutureRelease": release,
        "Flags[]": st.one_of(st.sampled_from(system_flags[:10]), letters),
        "DestMailboxName": st.sampled_from(["Inbox", "Sent", "Archive", "Drafts", "Junk", "Trash"]),
        "MsgID": st.integers(1, 15),
        "PartPath[]": st.integers(0, 2),
        "Reason": printable,
    }


#: Array sizes in plausible mode (default 1 to 3 items).
PLAUSIBLE_SIZES = {"From": 1, "PartPath": 2}


# --- mutations ----------------------------------------------------------------------------


class Raw:
    """A piece of JSON text put verbatim into a value when it is written out."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"


def dumps(value: Any) -> str:
    """JSON text of ``value`` (compact, UTF-8 characters as is), :class:`Raw` verbatim."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dumps(v) for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every node of a JSON value, as key/index paths (the root is ``()``)."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += paths(v, (*prefix, i))
    return out


def replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    """``value`` with the node at ``path`` replaced by ``new`` (a copy along the path)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: (replace(v, rest, new) if k == head else v) for k, v in value.items()}
    return [replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


#: Values of every JSON type, for "wrong type" replacements.
any_json = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False, allow_infinity=False),
    short_text, st.just([]), st.just({}), st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(token, st.integers(0, 9), max_size=2),
)


def huge_values(long: bool) -> SearchStrategy[Any]:
    size = 2_000_000 if long else 300_000
    return st.one_of(
        st.integers(10, size).map(lambda n: "x" * n),
        st.integers(10, size // 4).map(lambda n: "é€😀" * n),
        st.sampled_from([
            Raw(str(INT64_MAX + 1)), Raw(str(INT64_MIN - 1)), Raw("1" * 400), Raw("-" + "9" * 400),
            Raw("1e400"), Raw("-1e400"), Raw("1.5"), Raw("1e3"), Raw("-0"), Raw("0.0000001"),
            Raw("1E+2"), Raw("123456789012345678901234567890.5"),
        ]),
        st.integers(100, 20_000).map(lambda n: ["x"] * n),
        st.integers(100, 5_000).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    )


#: JSON string literals with odd unicode, as raw JSON text.
unicode_raw = st.one_of(
    st.sampled_from([
        '"\\ud800"', '"\\udc00\\ud800"', '"a\\ud83d"', '"\\ud83d\\ude00"', '"\\u0000"', '"nul\\u0000byte"',
        '"\\u202eevil"', '"\\ufeffbom"', '"\\uffff\\ufffe"', '"é"', '"e\\u0301"', '"\\u2028\\u2029"',
        '"\x7f\x1f"', '"tab\there"', '"\\/\\b\\f"', '"\\x41"', '"\\u12"', '"\\uZZZZ"', '"unterminated',
    ]).map(Raw),
    st.text(min_size=1, max_size=20).map(lambda s: Raw(json.dumps(s))),  # includes surrogate escapes
)


def nested(depth: int, kind: str) -> Raw:
    if kind == "array":
        return Raw("[" * depth + "]" * depth)
    if kind == "object":
        return Raw('{"a":' * depth + "1" + "}" * depth)
    return Raw('[{"a":' * depth + "1" + "}]" * depth)


deep_values = st.builds(
    nested, st.sampled_from([10, 100, 1000, 10_000, 100_000]), st.sampled_from(["array", "object", "mixed"])
)

#: Whole-text mutations: (name, function of the JSON text).
TextMutation = Callable[[str], str]


def text_mutations() -> SearchStrategy[tuple[str, TextMutation]]:
    def truncate(frac: float) -> tuple[str, TextMutation]:
        return ("truncate", lambda s: s[: int(len(s) * frac)])

    return st.one_of(
        st.floats(0, 1).map(truncate),
        st.sampled_from([
            ("trailing garbage", lambda s: s + "}garbage"),
            ("second value", lambda s: s + " {}"),
            ("leading whitespace", lambda s: " \t\r\n" + s),
            ("BOM", lambda s: "\ufeff" + s),
            ("array", lambda s: "[" + s + "]"),
            ("string", lambda s: json.dumps(s)),
            ("number", lambda s: "12"),
            ("null", lambda s: "null"),
            ("true", lambda s: "true"),
            ("empty object", lambda s: "{}"),
            ("single quotes", lambda s: s.replace('"', "'")),
            ("comment", lambda s: "/*c*/" + s),
            ("NUL", lambda s: s + "\x00"),
        ]),
    )


# --- the document ---------------------------------------------------------------------------


class RequestStrategies:
    """Strategies for the webapi methods of one OpenAPI document (the served one)."""

    def __init__(
        self, document: dict[str, Any], *, now: datetime | None = None, long: bool = False, plausible: bool = False
    ) -> None:
        self.document = document
        self.components: dict[str, Any] = document["components"]["schemas"]
        self.now = now or datetime.now(UTC)
        #: Plausible mode: every property present, no nulls, non-empty arrays, leaves only
        #: from :func:`plausible_hints` (requests the methods mostly accept).
        self.plausible = plausible
        self.hints = plausible_hints(self.now) if plausible else hints(self.now)
        self.long = long
        self._refs: dict[str, SearchStrategy[Any]] = {}
        #: Hints that matched a place in the document (see :meth:`unused_hints`).
        self.used_hints: set[str] = set()

    # -- the document's methods

    def operations(self) -> dict[str, dict[str, Any]]:
        """``{method name: POST operation}`` for every method path (``/v0/<Method>``)."""
        out = {}
        for path, item in self.document["paths"].items():
            post = item.get("post")
            if post is not None and "requestBody" in post:
                out[path.rsplit("/", 1)[-1]] = post
        return out

    def form_schema(self, method: str, media: str) -> dict[str, Any]:
        schema = self.operations()[method]["requestBody"]["content"][media]["schema"]
        return self.resolve(schema)

    def request_schema(self, method: str) -> dict[str, Any]:
        """The ``contentSchema`` of the ``request`` form field of ``method``."""
        schema: dict[str, Any] = self.form_schema(method, URLENCODED)["properties"]["request"]["contentSchema"]
        return schema

    def file_fields(self, method: str) -> list[str]:
        """The multipart form's file fields of ``method`` (arrays of binary strings)."""
        media = self.operations()[method]["requestBody"]["content"]
        if MULTIPART not in media:
            return []
        props = self.resolve(media[MULTIPART]["schema"]).get("properties", {})
        return [name for name, p in props.items() if name != "request" and p.get("type") == "array"]

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.components[schema["$ref"].removeprefix(REF)]
        return schema

    # -- values

    def schema(self, schema: dict[str, Any], where: str = "") -> SearchStrategy[Any]:
        """Values that fit ``schema``; ``where`` names the place (for :func:`hints`)."""
        ref = schema.get("$ref")
        if ref is not None:
            name = ref.removeprefix(REF)
            if name not in self._refs:
                self._refs[name] = st.deferred(lambda: self.schema(self.components[name], ""))
            return self._refs[name]
        if "anyOf" in schema:
            options = [s for s in schema["anyOf"] if not (self.plausible and s.get("type") == "null")]
            return st.one_of([self.schema(s, where) for s in options])
        types = schema.get("type")
        if types is None:
            return any_json
        if isinstance(types, list):
            types = [t for t in types if not (self.plausible and t == "null")]
            return st.one_of([self.schema({**schema, "type": t}, where) for t in types])
        hint = self.hints.get(where) if types != "null" else None
        if hint is not None:
            self.used_hints.add(where)
            return hint if self.plausible else st.one_of(hint, self._plain(schema, types, where))
        return self._plain(schema, types, where)

    def _plain(self, schema: dict[str, Any], type_: str, where: str) -> SearchStrategy[Any]:
        if type_ == "null":
            return st.none()
        if type_ == "boolean":
            return st.booleans()
        if type_ == "integer":
            return st.integers(schema.get("minimum"), schema.get("maximum"))
        if type_ == "number":
            return st.floats(allow_nan=False, allow_infinity=False)
        if type_ == "string":
            if schema.get("format") == "date-time":
                return date_times(self.now)
            return text
        if type_ == "array":
            if "prefixItems" in schema:
                return st.tuples(*[
                    self.schema(s, f"{where}[{i}]") for i, s in enumerate(schema["prefixItems"])
                ]).map(list)
            items = self.schema(schema.get("items", {}), f"{where}[]")
            low, high = schema.get("minItems", 0), min(schema.get("maxItems", 4), 4)
            if self.plausible:
                low, high = max(low, 1), PLAUSIBLE_SIZES.get(where, 3)
            return st.lists(items, min_size=low, max_size=high)
        if type_ == "object":
            props = {k: self.schema(v, k) for k, v in schema.get("properties", {}).items()}
            required = set(props) if self.plausible else set(schema.get("required", []))
            base = st.fixed_dictionaries(
                {k: v for k, v in props.items() if k in required},
                optional={k: v for k, v in props.items() if k not in required},
            )
            extra = schema.get("additionalProperties", True)
            if extra is False:
                return base
            values = any_json if extra is True else self.schema(extra, f"{where}{{}}")
            keys = st.one_of(self.hints.get(f"{where}{{key}}", text), text)
            if f"{where}{{key}}" in self.hints:
                self.used_hints.add(f"{where}{{key}}")
            more = st.dictionaries(keys.filter(lambda k: k not in props), values, max_size=3)
            return st.builds(lambda a, b: {**b, **a}, base, more)
        raise ValueError(f"no strategy for schema type {type_!r}")

    def request(self, method: str) -> SearchStrategy[dict[str, Any]]:
        """Requests of ``method`` that fit its request schema."""
        return self.schema(self.request_schema(method))

    def unused_hints(self) -> set[str]:
        """Hints that no place of the document used (after building every request)."""
        for method in self.operations():
            self.request(method).validate()
        for name in list(self._refs):
            self._refs[name].validate()
        return set(self.hints) - self.used_hints

    # -- mutations

    def mutated(self, method: str) -> SearchStrategy[tuple[str, str]]:
        """``(mutation, JSON text)``: a request of ``method`` with one mutation."""
        return _mutated(self, method)

    def body(self, method: str, request: str, odd: bool = False) -> SearchStrategy[tuple[str, bytes, str]]:
        """``(Content-Type, body, description)`` carrying ``request`` in form field
        ``request``: urlencoded, or multipart with the method's file parts (if any).
        ``odd``: also with odd Content-Type parameters, part headers and form fields."""
        return _body(self, method, request, odd)


@st.composite
def _mutated(draw: Any, strategies: RequestStrategies, method: str) -> tuple[str, str]:
    value = draw(strategies.request(method))
    kind = draw(st.sampled_from(["type", "huge", "unicode", "deep", "keys", "text"]))
    nodes = paths(value)
    if kind == "text":
        name, f = draw(text_mutations())
        return name, f(dumps(value))
    if kind == "keys":
        objects = [p for p in nodes if isinstance(get(value, p), dict)]
        path = draw(st.sampled_from(objects))
        obj = get(value, path)
        op = draw(st.sampled_from(["case", "unknown", "duplicate", "null", "empty key"]))
        if op == "case" and obj:
            key = draw(st.sampled_from(sorted(obj)))
            new = draw(st.sampled_from([key.lower(), key.upper(), key.swapcase(), key + " ", "\u212a" + key[1:]]))
            obj = {(new if k == key else k): v for k, v in obj.items()}
            return f"key case {new!r}", dumps(replace(value, path, obj))
        if op == "duplicate" and obj:
            key = draw(st.sampled_from(sorted(obj)))
            extra = draw(any_json)
            inner = dumps(obj)[1:-1]
            raw = "{" + inner + ("," if inner else "") + json.dumps(key) + ":" + dumps(extra) + "}"
            return f"duplicate key {key!r}", dumps(replace(value, path, Raw(raw)))
        if op == "null" and obj:
            key = draw(st.sampled_from(sorted(obj)))
            return f"null {key!r}", dumps(replace(value, path, {**obj, key: None}))
        name = "" if op == "empty key" else draw(text)
        return f"unknown key {name!r}", dumps(replace(value, path, {**obj, name: draw(any_json)}))
    path = draw(st.sampled_from(nodes))
    if kind == "type":
        new = draw(any_json.filter(lambda v: type(v) is not type(get(value, path))))
    elif kind == "huge":
        new = draw(huge_values(strategies.long))
    elif kind == "unicode":
        new = draw(unicode_raw)
    else:
        new = draw(deep_values)
    where = "/".join(map(str, path)) or "(root)"
    return f"{kind} at {where}", dumps(replace(value, path, new))


@st.composite
def _body(draw: Any, strategies: RequestStrategies, method: str, request: str, odd: bool) -> tuple[str, bytes, str]:
    media = draw(st.sampled_from(list(strategies.operations()[method]["requestBody"]["content"])))
    params = draw(st.sampled_from(HTTP_CONTENT_TYPE_PARAMS)) if odd and draw(st.booleans()) else ""
    if media == URLENCODED:
        fields = [("request", request)]
        if draw(st.integers(0, 9)) == 0:
            fields.append((draw(short_text), draw(short_text)))  # an unknown form field
        body = urlencode(fields).encode()
        if odd and draw(st.booleans()):
            body += draw(st.sampled_from([b"&request=second", b"&%zz=%", b"&\xff\xfe=\x00", b";a=b", b"&&&="]))
        return URLENCODED + params, body, f"urlencoded{params}"
    boundary = secrets.token_hex(12)
    ctype = draw(st.sampled_from([None, "application/json", "text/plain; charset=utf-8"]))
    part = _part("request", request.encode(), ctype)
    described = []
    if odd and draw(st.booleans()):
        header = draw(st.one_of(st.sampled_from(ODD_PART_HEADERS), st.binary(max_size=30).filter(lambda b: b"\r\n" not in b)))
        part = header + b"\r\n" + part
        described.append(f"request part header {header!r}")
    parts = [part]
    for field in strategies.file_fields(method):
        for f in draw(st.lists(uploads(odd), max_size=2)):
            parts.append(_file_part(field, *f))
            described.append(field)
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    body += b"--" + boundary.encode() + b"--\r\n"
    return f"{MULTIPART}; boundary={boundary}{params}", body, f"multipart{params} {described}"


#: Odd parameters after a request's media type (and boundary).
ODD_CONTENT_TYPE_PARAMS = [
    "; charset=bogus", "; charset=utf-16", '; charset="utf\x00-8"', "; x*=\"'", "; x*=utf-8''%ff",
    "; boundary*=utf-8''%ff", "; boundary=", "; boundary", "; =", ";;;", "; a=\"unterminated",
    "; x*0*=utf-8''a; x*1*=%ff", "; name=(comment)", " ; charset=UTF-8 ",
]
#: Those that can be sent in an HTTP header: a NUL byte makes the request invalid HTTP,
#: refused by the HTTP server before the webapi (Twisted and Go alike: a plain 400).
HTTP_CONTENT_TYPE_PARAMS = [p for p in ODD_CONTENT_TYPE_PARAMS if "\x00" not in p]
#: Odd header lines for the request's part (before its own headers).
ODD_PART_HEADERS = [
    b"Content-Type: text/plain; charset=bogus", b'Content-Type: text/plain; charset="utf\x00-8"',
    b"Content-Type: text/plain; x*=\"'", b"Content-Type: text/plain; charset*=utf-8''%ff",
    b"Content-Type: ;;", b"Content-Transfer-Encoding: base64", b"Content-Transfer-Encoding: quoted-printable",
    b"Content-Disposition: form-data; name*=utf-8''request", b"Content-Disposition: attachment",
    b"Content-Disposition: form-data; x*=\"'", b"X-Bytes: \xff\xfe\x00", b"no colon", b": empty name",
    b" folded continuation", b"Content-ID: <a@b>",
]


@st.composite
def uploads(draw: Any, odd: bool = False) -> tuple[str, str | None, str | None, bytes]:
    """(filename, Content-Type, Content-ID, data) of one uploaded file (``odd``: also odd
    header values)."""
    filename = draw(st.one_of(
        st.sampled_from(["report.pdf", "logo.png", "ünïcödé.txt", "dir/sub/name.txt", "C:\\x\\y.doc", ".", ""]),
        line_text,
    ))
    ctype = draw(st.one_of(st.none(), content_types.filter(lambda s: "\r" not in s and "\n" not in s)))
    cid = draw(st.one_of(st.none(), message_ids.filter(lambda s: "\r" not in s and "\n" not in s)))
    if odd and draw(st.booleans()):
        ctype = (ctype or "text/plain") + draw(st.sampled_from(ODD_CONTENT_TYPE_PARAMS))
        cid = draw(st.sampled_from(["<a@b> (comment)", "=?utf-8?q?=ff?=", "\x00", "<", "a*=\"'"]))
    if odd and draw(st.booleans()):
        filename = draw(st.sampled_from(["=?utf-8?b?/w==?=", "x\x00y", "%ff", "a\\", "../../etc/passwd"]))
    data = draw(st.one_of(st.binary(max_size=2000), st.just(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20), st.just(b"%PDF-1.4\n")))
    return filename, ctype, cid, data


def _part(name: str, data: bytes, ctype: str | None) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"\r\n'
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    return head.encode() + b"\r\n" + data


def _file_part(field: str, filename: str, ctype: str | None, cid: str | None, data: bytes) -> bytes:
    # As browsers do (RFC 7578 §4.2): percent-encode quote, CR and LF in the filename.
    fname = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
    head = f'Content-Disposition: form-data; name="{field}"; filename="{fname}"\r\n'
    if ctype:
        head += f"Content-Type: {ctype}\r\n"
    if cid:
        head += f"Content-ID: {cid}\r\n"
    return head.encode() + b"\r\n" + data


__all__ = ["RequestStrategies", "Raw", "dumps", "paths", "replace"]
