"""Tests for moxtw.webapi.gojson: Go encoding/json (go1.27) decoding and encoding.

Expected texts come from the golden mox transcripts (``MOXTW_GOLDEN_DIR``, default
``../shared/golden-mox``) where they cover a case, and otherwise from go1.27's
``encoding/json`` (jsonv2-backed v1) source.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import os
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from moxtw.webapi import types as T
from moxtw.webapi.gojson import (
    ZERO_TIME,
    Duration,
    GoInt,
    GoJSONError,
    NanoDatetime,
    decode,
    decode_request,
    encode,
    encode_response,
    encode_webhook,
    field_names,
    format_time,
    go_type_name,
    gostruct,
    is_gostruct,
    nanosecond,
    parse_time,
    with_nanosecond,
)
from tests.golden import GOLDEN_DIR

# Keep hypothesis' caches out of the source tree; no example database.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "moxtw-test-hypothesis"))
RFC3339 = '"2006-01-02T15:04:05Z07:00"'


def golden(name: str) -> dict[str, Any]:
    path = GOLDEN_DIR / name
    if not path.exists():
        raise SkipTest(f"golden transcript {path} not available")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def golden_files() -> list[Path]:
    if not GOLDEN_DIR.is_dir():
        raise SkipTest(f"golden directory {GOLDEN_DIR} not available")
    return sorted(GOLDEN_DIR.glob("*.json"))


def request_text(request: dict[str, Any]) -> str | None:
    """The ``request`` form field of a golden HTTP request (urlencoded or multipart)."""
    form = request.get("body_form_decoded")
    if form is not None:
        return form.get("request")  # type: ignore[no-any-return]
    body = request.get("body", {})
    if "base64" not in body:
        return None
    content_type = {k.lower(): v for k, v in request["headers"]}["content-type"]
    raw = b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + base64.b64decode(body["base64"])
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    for part in msg.iter_parts():
        if (
            part.get_param("name", header="content-disposition") == "request"
            and not part.get_filename()
        ):
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload.decode()
    return None


def webapi_steps(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(method, request, response) of the POSTs to webapi methods in a transcript."""
    out = []
    for step in doc.get("steps", []):
        if step.get("kind") != "http" or step["request"]["method"] != "POST":
            continue
        url = step["request"]["url"]
        if "/webapi/v0/" not in url:
            continue
        method = url.rsplit("/", 1)[-1]
        if method in T.REQUEST_TYPES:
            out.append((method, step["request"], step["response"]))
    return out


# Test-only structs.


@gostruct("test")
class Folding:
    Abc: str = ""
    ABC: str = ""
    Key: str = ""
    Sub: str = ""


@gostruct("test")
class Everything:
    S: str = ""
    B: bool = False
    Big: int = 0
    N: GoInt = 0
    When: datetime = ZERO_TIME
    PB: bool | None = None
    PT: datetime | None = None
    L: list[str] | None = None
    M: dict[str, str] | None = None
    A: tuple[str, str] = ("", "")
    AL: list[tuple[str, str]] | None = None
    Nested: T.NameAddress = T.NameAddress()
    NL: list[T.NameAddress] | None = None
    D: Duration = 0


class DecodeErrorMixin:
    def assertDecodeError(self, target: str | type, raw: Any, message: str) -> None:
        with self.assertRaises(GoJSONError) as cm:  # type: ignore[attr-defined]
            if isinstance(target, str):
                decode_request(target, raw)
            else:
                decode(target, raw)
        self.assertEqual(str(cm.exception), message)  # type: ignore[attr-defined]


class SyntaxErrorTests(DecodeErrorMixin, SynchronousTestCase):
    """Syntax errors: the texts of go1.27's json.Decoder (jsontext, v1 rendering)."""

    CASES = [
        ("", "EOF"),
        (" \t\r\n ", "EOF"),
        ("{", "unexpected EOF"),
        ('{"To": [{"Address": "mox@localhost"}], "Text": ', "unexpected EOF"),
        ('{"Text": "abc', "unexpected EOF"),
        ('{"Text": "abc\\', "unexpected EOF"),
        ('{"Text": "\\u12', "unexpected EOF"),
        ('{"SaveSent": tr', "unexpected EOF"),
        ('{"MsgID": -', "unexpected EOF"),
        ('{"MsgID": 1.', "unexpected EOF"),
        ('{"MsgID": 1e', "unexpected EOF"),
        ('{"Text" ', "unexpected EOF"),
        ('{"Text": "x"', "unexpected EOF"),
        ('{"Text": "x",', "unexpected EOF"),
        ('{"Flags": ["a"', "unexpected EOF"),
        ("x", "invalid character 'x' looking for beginning of value"),
        ("}", "invalid character '}' looking for beginning of value"),
        (",{}", "invalid character ',' looking for beginning of value"),
        (":", "invalid character ':' looking for beginning of value"),
        ("\ufeff{}", "invalid character '\\ufeff' looking for beginning of value"),
        (b"\xff{}", "invalid character '\\xff' looking for beginning of value"),
        ('{"Text": x}', "invalid character 'x' looking for beginning of value"),
        ("{'Text': 1}", "invalid character '\\'' looking for beginning of object key string"),
        ("{Text: 1}", "invalid character 'T' looking for beginning of object key string"),
        ('{"Text": "x",}', "invalid character '}' looking for beginning of object key string"),
        ('{"To": [{"Address": "a"},]}', "invalid character ']' looking for beginning of value"),
        ('{"Text" "x"}', "invalid character '\"' after object key"),
        ('{"Text": "x" "HTML": "y"}', "invalid character '\"' after object key:value pair"),
        ('{"Text": "x"]', "invalid character ']' after object key:value pair"),
        ('{"Flags": ["a" "b"]}', "invalid character '\"' after array element"),
        ('{"Flags": ["a"}', "invalid character '}' after array element"),
        ('{"SaveSent": tru}', "invalid character '}' in literal true (expecting 'e')"),
        ('{"SaveSent": nul}', "invalid character '}' in literal null (expecting 'l')"),
        ('{"SaveSent": fals3}', "invalid character '3' in literal false (expecting 'e')"),
        ('{"MsgID": -}', "invalid character '}' in numeric literal"),
        ('{"MsgID": 1.}', "invalid character '}' in numeric literal"),
        ('{"MsgID": 1e+}', "invalid character '}' in numeric literal"),
        ('{"MsgID": 01}', "invalid character '1' after object key:value pair"),
        ('{"MsgID": +1}', "invalid character '+' looking for beginning of value"),
        ('{"Text": "a\nb"}', "invalid character '\\n' in string"),
        ('{"Text": "a\tb"}', "invalid character '\\t' in string"),
        ('{"Text": "a\x01b"}', "invalid character '\\x01' in string"),
        ('{"Text": "\\x"}', "invalid escape sequence `\\x` in string"),
        ('{"Text": "\\u12G4"}', "invalid escape sequence `\\u12G4` in string"),
        ('{"Text": "\\u"}', 'invalid escape sequence `\\u"}` in string'),
    ]

    def test_syntax_errors(self) -> None:
        for raw, message in self.CASES:
            with self.subTest(raw=raw):
                self.assertDecodeError("Send", raw, message)

    def test_syntax_error_wins_over_type_errors(self) -> None:
        # The whole first value is validated before decoding it.
        self.assertDecodeError(
            "Send",
            '{"Bogus": 1, "To": "x", "Text": }',
            "invalid character '}' looking for beginning of value",
        )
        self.assertDecodeError("Send", '{"Bogus": 1,', "unexpected EOF")

    def test_max_depth(self) -> None:
        self.assertDecodeError(
            "Send", '{"X":' + "[" * 10000 + "]" * 10000 + "}", "exceeded max depth"
        )
        # 10000 levels in total are fine (here: an unknown field, skipped).
        self.assertDecodeError(
            "Send", '{"X":' + "[" * 9999 + "]" * 9999 + "}", 'json: unknown field "X"'
        )

    def test_golden_syntax_error(self) -> None:
        doc = golden("send_err_malformed_json.json")
        ((method, request, response),) = webapi_steps(doc)
        with self.assertRaises(GoJSONError) as cm:
            decode_request(method, request_text(request) or "")
        self.assertEqual(
            response["body_json"],
            {"Code": "protocol", "Message": f"parsing request: {cm.exception}"},
        )


class TypeErrorTests(DecodeErrorMixin, SynchronousTestCase):
    """Semantic errors: UnmarshalTypeError texts of the jsonv2-backed v1 API."""

    CASES = [
        (
            "Send",
            '{"To": "mox@localhost"}',
            "json: cannot unmarshal string into Go struct field SendRequest.To of type []webapi.NameAddress",
        ),
        (
            "Send",
            '{"To": {}}',
            "json: cannot unmarshal object into Go struct field SendRequest.To of type []webapi.NameAddress",
        ),
        (
            "Send",
            '{"To": [5]}',
            "json: cannot unmarshal number into SendRequest.To.0 of type webapi.NameAddress",
        ),
        (
            "Send",
            '{"To": ["a@b"]}',
            "json: cannot unmarshal string into SendRequest.To.0 of type webapi.NameAddress",
        ),
        (
            "Send",
            '{"To": [{"Address": 5}]}',
            "json: cannot unmarshal number into Go struct field SendRequest.To.0.Address of type string",
        ),
        (
            "Send",
            '{"CC": [{}, {"Name": true}]}',
            "json: cannot unmarshal bool into Go struct field SendRequest.CC.1.Name of type string",
        ),
        (
            "Send",
            '{"Text": 5}',
            "json: cannot unmarshal number into Go struct field SendRequest.Text of type string",
        ),
        (
            "Send",
            '{"Text": ["x"]}',
            "json: cannot unmarshal array into Go struct field SendRequest.Text of type string",
        ),
        (
            "Send",
            '{"SaveSent": "yes"}',
            "json: cannot unmarshal string into Go struct field SendRequest.SaveSent of type bool",
        ),
        (
            "Send",
            '{"SaveSent": 1}',
            "json: cannot unmarshal number into Go struct field SendRequest.SaveSent of type bool",
        ),
        (
            "Send",
            '{"RequireTLS": "yes"}',
            "json: cannot unmarshal string into Go struct field SendRequest.RequireTLS of type bool",
        ),
        (
            "Send",
            '{"Date": 5}',
            "json: cannot unmarshal number into Go struct field SendRequest.Date of type time.Time",
        ),
        (
            "Send",
            '{"FutureRelease": {}}',
            "json: cannot unmarshal object into Go struct field SendRequest.FutureRelease of type time.Time",
        ),
        (
            "Send",
            '{"Extra": []}',
            "json: cannot unmarshal array into Go struct field SendRequest.Extra of type map[string]string",
        ),
        (
            "Send",
            '{"Extra": {"a": 1}}',
            "json: cannot unmarshal number into Go struct field SendRequest.Extra.a of type string",
        ),
        (
            "Send",
            '{"Extra": {"a/b~c": 1}}',
            "json: cannot unmarshal number into Go struct field SendRequest.Extra.a~1b~0c of type string",
        ),
        (
            "Send",
            '{"Headers": "x"}',
            "json: cannot unmarshal string into Go struct field SendRequest.Headers of type [][2]string",
        ),
        (
            "Send",
            '{"Headers": ["x"]}',
            "json: cannot unmarshal string into SendRequest.Headers.0 of type [2]string",
        ),
        (
            "Send",
            '{"Headers": [["a", 1]]}',
            "json: cannot unmarshal number into SendRequest.Headers.0.1 of type string",
        ),
        (
            "Send",
            '{"AttachedFiles": [{"Data": null}, {"Data": 5}]}',
            "json: cannot unmarshal number into Go struct field SendRequest.AttachedFiles.1.Data of type string",
        ),
        ("Send", "[]", "json: cannot unmarshal array into Go value of type webapi.SendRequest"),
        ("Send", '"x"', "json: cannot unmarshal string into Go value of type webapi.SendRequest"),
        ("Send", "5", "json: cannot unmarshal number into Go value of type webapi.SendRequest"),
        ("Send", "true", "json: cannot unmarshal bool into Go value of type webapi.SendRequest"),
        (
            "MessageGet",
            '{"MsgID": "5"}',
            "json: cannot unmarshal string into Go struct field MessageGetRequest.MsgID of type int64",
        ),
        (
            "MessageGet",
            '{"MsgID": 1.5}',
            "json: cannot unmarshal number 1.5 into Go struct field MessageGetRequest.MsgID of type int64",
        ),
        (
            "MessageGet",
            '{"MsgID": 1e3}',
            "json: cannot unmarshal number 1e3 into Go struct field MessageGetRequest.MsgID of type int64",
        ),
        (
            "MessageGet",
            '{"MsgID": -0.0}',
            "json: cannot unmarshal number -0.0 into Go struct field MessageGetRequest.MsgID of type int64",
        ),
        (
            "MessageGet",
            '{"MsgID": 9223372036854775808}',
            "json: cannot unmarshal number 9223372036854775808 into Go struct field MessageGetRequest.MsgID of type int64",
        ),
        (
            "MessageGet",
            '{"MsgID": -9223372036854775809}',
            "json: cannot unmarshal number -9223372036854775809 into Go struct field MessageGetRequest.MsgID of type int64",
        ),
        (
            "MessagePartGet",
            '{"PartPath": [0, 1.5]}',
            "json: cannot unmarshal number 1.5 into MessagePartGetRequest.PartPath.1 of type int",
        ),
        (
            "MessagePartGet",
            '{"PartPath": 0}',
            "json: cannot unmarshal number into Go struct field MessagePartGetRequest.PartPath of type []int",
        ),
        (
            "MessageFlagsAdd",
            '{"Flags": [true]}',
            "json: cannot unmarshal bool into MessageFlagsAddRequest.Flags.0 of type string",
        ),
        (
            "MessageMove",
            '{"DestMailboxName": {"a": 1}}',
            "json: cannot unmarshal object into Go struct field MessageMoveRequest.DestMailboxName of type string",
        ),
        (
            "SuppressionAdd",
            '{"Manual": "true"}',
            "json: cannot unmarshal string into Go struct field SuppressionAddRequest.Manual of type bool",
        ),
        # The path is the JSON path as written, not the Go field name.
        (
            "Send",
            '{"to": "x"}',
            "json: cannot unmarshal string into Go struct field SendRequest.to of type []webapi.NameAddress",
        ),
        (
            "Send",
            '{"TO": [{"ADDRESS": 1}]}',
            "json: cannot unmarshal number into Go struct field SendRequest.TO.0.ADDRESS of type string",
        ),
    ]

    def test_type_errors(self) -> None:
        for method, raw, message in self.CASES:
            with self.subTest(raw=raw):
                self.assertDecodeError(method, raw, message)

    def test_int_range(self) -> None:
        self.assertEqual(
            decode_request("MessageGet", '{"MsgID": 9223372036854775807}'),
            T.MessageGetRequest(MsgID=2**63 - 1),
        )
        self.assertEqual(
            decode_request("MessageGet", '{"MsgID": -9223372036854775808}'),
            T.MessageGetRequest(MsgID=-(2**63)),
        )
        self.assertEqual(
            decode_request("MessageGet", '{"MsgID": -0}'), T.MessageGetRequest(MsgID=0)
        )

    def test_golden_wrong_type(self) -> None:
        doc = golden("send_err_wrong_type.json")
        ((method, request, response),) = webapi_steps(doc)
        with self.assertRaises(GoJSONError) as cm:
            decode_request(method, request_text(request) or "")
        self.assertEqual(response["body_json"]["Message"], f"parsing request: {cm.exception}")


class UnknownFieldTests(DecodeErrorMixin, SynchronousTestCase):
    def test_unknown_field(self) -> None:
        self.assertDecodeError("Send", '{"Bogus": 1}', 'json: unknown field "Bogus"')
        self.assertDecodeError(
            "Send", '{"To": [{"Address": "a", "Mail": 1}]}', 'json: unknown field "Mail"'
        )
        self.assertDecodeError("SuppressionList", '{"x": null}', 'json: unknown field "x"')
        # The name is Go-quoted (%q), after unescaping.
        self.assertDecodeError("Send", '{"a\\"b\\u00e9\\n": 1}', 'json: unknown field "a\\"bé\\n"')

    def test_unknown_field_value_is_not_checked(self) -> None:
        self.assertDecodeError(
            "Send",
            '{"Bogus": {"deep": [1, {"x": tru]}}',
            "invalid character ']' in literal true (expecting 'e')",
        )
        self.assertDecodeError(
            "Send", '{"Bogus": {"deep": "no type errors inside"}}', 'json: unknown field "Bogus"'
        )

    def test_disallow_unknown_off(self) -> None:
        self.assertEqual(
            decode(T.MessageGetRequest, '{"MsgID": 3, "Bogus": 1}', disallow_unknown=False),
            T.MessageGetRequest(MsgID=3),
        )

    def test_first_error_in_document_order(self) -> None:
        # Unknown fields, type errors and time errors do not stop decoding; the first one
        # encountered is reported.
        self.assertDecodeError("Send", '{"Bogus": 1, "Date": "x"}', 'json: unknown field "Bogus"')
        self.assertDecodeError(
            "Send",
            '{"Date": "x", "Bogus": 1}',
            'parsing time "x" as ' + RFC3339 + ': cannot parse "x" as "2006"',
        )
        self.assertDecodeError(
            "Send",
            '{"To": "x", "Bogus": 1}',
            "json: cannot unmarshal string into Go struct field SendRequest.To of type []webapi.NameAddress",
        )
        self.assertDecodeError(
            "Send", '{"To": [{"Bogus": 1}], "Text": 5}', 'json: unknown field "Bogus"'
        )
        self.assertDecodeError(
            "Send",
            '{"To": [{"Name": 1}], "Bogus": 5}',
            "json: cannot unmarshal number into Go struct field SendRequest.To.0.Name of type string",
        )

    def test_golden_unknown_field(self) -> None:
        doc = golden("send_err_unknown_field.json")
        ((method, request, response),) = webapi_steps(doc)
        with self.assertRaises(GoJSONError) as cm:
            decode_request(method, request_text(request) or "")
        self.assertEqual(response["body_json"]["Message"], f"parsing request: {cm.exception}")
        error = T.Error(Code="protocol", Message=f"parsing request: {cm.exception}")
        self.assertEqual(encode_response(error), response["body"]["text"].encode())


class MatchingTests(SynchronousTestCase):
    def test_case_insensitive_keys(self) -> None:
        req = decode_request(
            "Send",
            '{"to": [{"address": "a@b", "NAME": "n"}], "sUbJeCt": "s", "savesent": true, "requiretls": false}',
        )
        self.assertEqual(
            req,
            T.SendRequest(
                To=[T.NameAddress(Name="n", Address="a@b")],
                Subject="s",
                SaveSent=True,
                RequireTLS=False,
            ),
        )
        self.assertEqual(decode_request("MessageGet", '{"msgid": 7}'), T.MessageGetRequest(MsgID=7))

    def test_exact_match_preferred(self) -> None:
        self.assertEqual(decode(Folding, '{"ABC": "x"}'), Folding(ABC="x"))
        self.assertEqual(decode(Folding, '{"Abc": "x"}'), Folding(Abc="x"))
        # Otherwise the first field matching case-insensitively.
        self.assertEqual(decode(Folding, '{"abc": "x"}'), Folding(Abc="x"))
        self.assertEqual(decode(Folding, '{"aBC": "x"}'), Folding(Abc="x"))

    def test_unicode_simple_folding(self) -> None:
        # strings.EqualFold: KELVIN SIGN folds to k, LONG S to s.
        self.assertEqual(
            decode(Folding, '{"\u212aey": "k", "\u017fub": "s"}'), Folding(Key="k", Sub="s")
        )
        self.assertEqual(
            decode_request("Send", '{"\u017fubject": "x"}'), T.SendRequest(Subject="x")
        )
        with self.assertRaises(GoJSONError) as cm:
            decode(Folding, '{"\u0130bc": "x"}')
        self.assertEqual(str(cm.exception), 'json: unknown field "\u0130bc"')

    def test_golden_lowercase_field_names(self) -> None:
        doc = golden("send_lowercase_field_names.json")
        ((method, request, response),) = webapi_steps(doc)
        self.assertEqual(response["status"], 200)
        req = decode_request(method, request_text(request) or "")
        self.assertEqual(
            req,
            T.SendRequest(
                To=[T.NameAddress(Address="mox@localhost")],
                Subject="lowercase keys",
                Text="lowercase keys",
            ),
        )


class ValueTests(SynchronousTestCase):
    def test_zero_values(self) -> None:
        req = decode_request("Send", "{}")
        self.assertEqual(req, T.SendRequest())
        assert isinstance(req, T.SendRequest)
        self.assertIsNone(req.To)
        self.assertIsNone(req.Extra)
        self.assertIsNone(req.Headers)
        self.assertIsNone(req.RequireTLS)
        self.assertIsNone(req.Date)
        self.assertEqual((req.Text, req.SaveSent), ("", False))
        self.assertEqual(decode(Everything, "{}"), Everything())
        self.assertEqual(Everything().When, datetime(1, 1, 1, tzinfo=UTC))
        self.assertEqual(Everything().A, ("", ""))

    def test_null(self) -> None:
        req = decode_request(
            "Send",
            '{"Text": null, "To": null, "RequireTLS": null, "Date": null, "Extra": null, "Headers": null, "SaveSent": null}',
        )
        self.assertEqual(req, T.SendRequest())
        self.assertEqual(decode_request("Send", "null"), T.SendRequest())
        self.assertEqual(decode_request("Send", " null garbage"), T.SendRequest())
        self.assertEqual(
            decode(Everything, '{"When": null, "A": null, "Nested": null, "Big": null}'),
            Everything(),
        )

    def test_null_keeps_earlier_value(self) -> None:
        # Go merges: null does not clear a non-pointer value set by an earlier duplicate key.
        self.assertEqual(
            decode_request("Send", '{"Text": "a", "text": null}'), T.SendRequest(Text="a")
        )
        # ... but nils slices, maps and pointers.
        self.assertEqual(
            decode_request(
                "Send", '{"To": [], "To": null, "RequireTLS": true, "RequireTLS": null}'
            ),
            T.SendRequest(),
        )

    def test_duplicate_keys(self) -> None:
        self.assertEqual(
            decode_request("Send", '{"Text": "a", "TEXT": "b"}'), T.SendRequest(Text="b")
        )
        self.assertEqual(
            decode_request("Send", '{"Extra": {"a": "1"}, "Extra": {"b": "2"}}'),
            T.SendRequest(Extra={"a": "1", "b": "2"}),
        )
        self.assertEqual(
            decode_request("Send", '{"Extra": {"a": "1", "a": "2"}}'),
            T.SendRequest(Extra={"a": "2"}),
        )
        # Slice elements are decoded into the existing ones (Go reuses the backing array).
        self.assertEqual(
            decode_request(
                "Send", '{"To": [{"Name": "n", "Address": "a"}], "To": [{"Address": "b"}]}'
            ),
            T.SendRequest(To=[T.NameAddress(Name="n", Address="b")]),
        )

    def test_empty_versus_absent(self) -> None:
        self.assertEqual(
            decode_request("Send", '{"To": [], "Extra": {}, "Headers": []}'),
            T.SendRequest(To=[], Extra={}, Headers=[]),
        )
        self.assertEqual(
            decode_request("MessagePartGet", '{"MsgID": 1}'), T.MessagePartGetRequest(MsgID=1)
        )
        self.assertEqual(
            decode_request("MessagePartGet", '{"MsgID": 1, "PartPath": [0, 2]}'),
            T.MessagePartGetRequest(MsgID=1, PartPath=[0, 2]),
        )

    def test_headers_array_semantics(self) -> None:
        req = decode_request(
            "Send", '{"Headers": [["a"], [], ["b", "c", "d"], null, ["e", "f", 5, {"x": 1}]]}'
        )
        assert isinstance(req, T.SendRequest)
        self.assertEqual(req.Headers, [("a", ""), ("", ""), ("b", "c"), ("", ""), ("e", "f")])

    def test_all_field_kinds(self) -> None:
        value = decode(
            Everything,
            '{"S": "s", "B": true, "Big": -3, "N": 4, "When": "2024-03-27T01:02:03Z", "PB": false,'
            ' "PT": "2024-03-27T01:02:03.5+01:00", "L": ["x"], "M": {"k": "v"}, "A": ["1", "2"],'
            ' "AL": [["3"]], "Nested": {"Name": "n"}, "NL": [{"Address": "a"}, {}]}',
        )
        self.assertEqual(
            value,
            Everything(
                S="s",
                B=True,
                Big=-3,
                N=4,
                When=datetime(2024, 3, 27, 1, 2, 3, tzinfo=UTC),
                PB=False,
                PT=datetime(2024, 3, 27, 1, 2, 3, 500000, tzinfo=timezone(timedelta(hours=1))),
                L=["x"],
                M={"k": "v"},
                A=("1", "2"),
                AL=[("3", "")],
                Nested=T.NameAddress(Name="n"),
                NL=[T.NameAddress(Address="a"), T.NameAddress()],
            ),
        )

    def test_trailing_data_ignored(self) -> None:
        for raw in [
            '{"MsgID": 5} garbage',
            '{"MsgID": 5}{',
            '{"MsgID": 5}}',
            '  {"MsgID": 5}\n{"MsgID": 6}',
            '{"MsgID":5}"',
        ]:
            with self.subTest(raw=raw):
                self.assertEqual(decode_request("MessageGet", raw), T.MessageGetRequest(MsgID=5))

    def test_strings(self) -> None:
        req = decode_request(
            "Send", r'{"Text": "a\"b\\c\/d\b\f\n\r\t\u00e9\u263a\ud83d\ude00", "HTML": "<é>"}'
        )
        assert isinstance(req, T.SendRequest)
        self.assertEqual(req.Text, 'a"b\\c/d\b\f\n\r\t\u00e9\u263a\U0001f600')
        self.assertEqual(req.HTML, "<é>")

    def test_invalid_utf8_replaced(self) -> None:
        def text(raw: str | bytes) -> str:
            req = decode(T.SendRequest, raw)
            return req.Text

        self.assertEqual(text(b'{"Text": "a\xffb"}'), "a\ufffdb")
        # Go replaces each byte of an invalid sequence.
        self.assertEqual(text(b'{"Text": "\xe2\x82"}'), "\ufffd\ufffd")
        self.assertEqual(text(b'{"Text": "\xed\xa0\x80"}'), "\ufffd\ufffd\ufffd")
        self.assertEqual(text(b'{"Text": "\xf0\x9f\x98\x80"}'), "\U0001f600")
        # Invalid UTF-16 surrogates in escapes.
        self.assertEqual(text(rb'{"Text": "\ud800"}'), "\ufffd")
        self.assertEqual(text(rb'{"Text": "\udc00x"}'), "\ufffdx")
        self.assertEqual(text(rb'{"Text": "\ud800\u0041"}'), "\ufffdA")
        self.assertEqual(text(rb'{"Text": "\ud800\ud800\udc00"}'), "\ufffd\U00010000")
        # A str carrying invalid bytes as surrogate escapes.
        self.assertEqual(text(b'{"Text": "a\xffb"}'.decode("utf-8", "surrogateescape")), "a\ufffdb")

    def test_request_as_bytes_or_str(self) -> None:
        self.assertEqual(
            decode_request("SuppressionAdd", '{"EmailAddress": "é@x"}'),
            decode_request("SuppressionAdd", '{"EmailAddress": "é@x"}'.encode()),
        )

    def test_message_property(self) -> None:
        req = decode_request(
            "Send", '{"To": [{"Address": "a@b"}], "Subject": "s", "Text": "t", "SaveSent": true}'
        )
        assert isinstance(req, T.SendRequest)
        self.assertEqual(
            req.message, T.Message(To=[T.NameAddress(Address="a@b")], Subject="s", Text="t")
        )

    def test_unknown_method(self) -> None:
        self.assertRaises(KeyError, decode_request, "MessageRawPart", "{}")
        self.assertRaises(KeyError, decode_request, "send", "{}")

    def test_decode_needs_gostruct(self) -> None:
        self.assertRaises(TypeError, decode, dict, "{}")


class TimeTests(DecodeErrorMixin, SynchronousTestCase):
    ERRORS = [
        (
            "yesterday",
            'parsing time "yesterday" as ' + RFC3339 + ': cannot parse "yesterday" as "2006"',
        ),
        ("", 'parsing time "" as ' + RFC3339 + ': cannot parse "" as "2006"'),
        (
            "20x4-01-01T00:00:00Z",
            'parsing time "20x4-01-01T00:00:00Z" as '
            + RFC3339
            + ': cannot parse "20x4-01-01T00:00:00Z" as "2006"',
        ),
        (
            "2024/01/01T00:00:00Z",
            'parsing time "2024/01/01T00:00:00Z" as '
            + RFC3339
            + ': cannot parse "/01/01T00:00:00Z" as "-"',
        ),
        (
            "2024-1-01T00:00:00Z",
            'parsing time "2024-1-01T00:00:00Z" as '
            + RFC3339
            + ': cannot parse "1-01T00:00:00Z" as "01"',
        ),
        (
            "2024-01-1T00:00:00Z",
            'parsing time "2024-01-1T00:00:00Z" as '
            + RFC3339
            + ': cannot parse "1T00:00:00Z" as "02"',
        ),
        (
            "2024-01-01 00:00:00Z",
            'parsing time "2024-01-01 00:00:00Z" as '
            + RFC3339
            + ': cannot parse " 00:00:00Z" as "T"',
        ),
        (
            "2024-01-01t00:00:00Z",
            'parsing time "2024-01-01t00:00:00Z" as '
            + RFC3339
            + ': cannot parse "t00:00:00Z" as "T"',
        ),
        (
            "2024-01-01Tx:00:00Z",
            'parsing time "2024-01-01Tx:00:00Z" as '
            + RFC3339
            + ': cannot parse "x:00:00Z" as "15"',
        ),
        (
            "2024-01-01T00:0:00Z",
            'parsing time "2024-01-01T00:0:00Z" as ' + RFC3339 + ': cannot parse "0:00Z" as "04"',
        ),
        (
            "2024-01-01T00:00:0Z",
            'parsing time "2024-01-01T00:00:0Z" as ' + RFC3339 + ': cannot parse "0Z" as "05"',
        ),
        (
            "2024-01-01T00:00:00",
            'parsing time "2024-01-01T00:00:00" as ' + RFC3339 + ': cannot parse "" as "Z07:00"',
        ),
        (
            "2024-01-01T00:00:00z",
            'parsing time "2024-01-01T00:00:00z" as ' + RFC3339 + ': cannot parse "z" as "Z07:00"',
        ),
        (
            "2024-01-01T00:00:00+0100",
            'parsing time "2024-01-01T00:00:00+0100" as '
            + RFC3339
            + ': cannot parse "+0100" as "Z07:00"',
        ),
        (
            "2024-01-01T00:00:00 01:00",
            'parsing time "2024-01-01T00:00:00 01:00" as '
            + RFC3339
            + ': cannot parse " 01:00" as "Z07:00"',
        ),
        (
            "2024-01-01T00:00:00.Z",
            'parsing time "2024-01-01T00:00:00.Z" as '
            + RFC3339
            + ': cannot parse ".Z" as "Z07:00"',
        ),
        ("2024-13-01T00:00:00Z", 'parsing time "2024-13-01T00:00:00Z": month out of range'),
        ("2024-00-01T00:00:00Z", 'parsing time "2024-00-01T00:00:00Z": month out of range'),
        ("2024-02-30T00:00:00Z", 'parsing time "2024-02-30T00:00:00Z": day out of range'),
        ("2023-02-29T00:00:00Z", 'parsing time "2023-02-29T00:00:00Z": day out of range'),
        ("2024-01-00T00:00:00Z", 'parsing time "2024-01-00T00:00:00Z": day out of range'),
        ("2024-01-01T24:00:00Z", 'parsing time "2024-01-01T24:00:00Z": hour out of range'),
        ("2024-01-01T00:60:00Z", 'parsing time "2024-01-01T00:60:00Z": minute out of range'),
        ("2024-01-01T00:00:60Z", 'parsing time "2024-01-01T00:00:60Z": second out of range'),
        (
            "2024-01-01T00:00:00+25:00",
            'parsing time "2024-01-01T00:00:00+25:00": time zone offset hour out of range',
        ),
        (
            "2024-01-01T00:00:00+01:61",
            'parsing time "2024-01-01T00:00:00+01:61": time zone offset minute out of range',
        ),
        ("2024-01-01T00:00:00Zjunk", 'parsing time "2024-01-01T00:00:00Zjunk": extra text: "junk"'),
        (
            "2024-01-01T00:00:00+01:00 ",
            'parsing time "2024-01-01T00:00:00+01:00 ": extra text: " "',
        ),
        ("é", 'parsing time "\\xc3\\xa9" as ' + RFC3339 + ': cannot parse "\\xc3\\xa9" as "2006"'),
        ('"2024', 'parsing time "\\"2024" as ' + RFC3339 + ': cannot parse "\\"2024" as "2006"'),
    ]

    def test_parse_errors(self) -> None:
        for value, message in self.ERRORS:
            with self.subTest(value=value):
                with self.assertRaises(GoJSONError) as cm:
                    parse_time(value)
                self.assertEqual(str(cm.exception), message)

    def test_parse_error_in_request(self) -> None:
        self.assertDecodeError(
            "Send",
            '{"FutureRelease": "2024-13-01T00:00:00Z"}',
            'parsing time "2024-13-01T00:00:00Z": month out of range',
        )
        # Escapes are decoded before parsing (jsonv2 behaviour).
        self.assertEqual(
            decode_request("Send", '{"Date": "\\u0032024-01-01T00:00:00Z"}'),
            T.SendRequest(Date=datetime(2024, 1, 1, tzinfo=UTC)),
        )

    def test_golden_bad_date(self) -> None:
        doc = golden("send_err_bad_date.json")
        ((method, request, response),) = webapi_steps(doc)
        with self.assertRaises(GoJSONError) as cm:
            decode_request(method, request_text(request) or "")
        self.assertEqual(response["body_json"]["Message"], f"parsing request: {cm.exception}")

    def test_parse(self) -> None:
        plus1 = timezone(timedelta(hours=1))
        cases = [
            ("2024-03-27T00:00:00Z", datetime(2024, 3, 27, tzinfo=UTC)),
            ("2024-03-27T01:02:03.5+01:00", datetime(2024, 3, 27, 1, 2, 3, 500000, tzinfo=plus1)),
            ("2024-03-27T01:02:03,5+01:00", datetime(2024, 3, 27, 1, 2, 3, 500000, tzinfo=plus1)),
            ("2024-03-27T1:02:03Z", datetime(2024, 3, 27, 1, 2, 3, tzinfo=UTC)),
            (
                "2024-02-29T23:59:59-07:30",
                datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone(-timedelta(hours=7, minutes=30))),
            ),
            ("2024-03-27T00:00:00-00:00", datetime(2024, 3, 27, tzinfo=UTC)),
            ("0001-01-01T00:00:00Z", ZERO_TIME),
            (
                "9999-12-31T23:59:59.999999999Z",
                datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            ),
        ]
        for text, expected in cases:
            with self.subTest(text=text):
                parsed = parse_time(text)
                self.assertEqual(parsed, expected)
                self.assertEqual(parsed.utcoffset(), expected.utcoffset())

    def test_nanoseconds(self) -> None:
        parsed = parse_time("2026-11-24T04:42:16.235141163Z")
        self.assertIsInstance(parsed, NanoDatetime)
        self.assertEqual(nanosecond(parsed), 235141163)
        self.assertEqual(parsed.microsecond, 235141)
        self.assertEqual(format_time(parsed), "2026-11-24T04:42:16.235141163Z")
        # More than 9 digits are truncated.
        self.assertEqual(nanosecond(parse_time("2024-01-01T00:00:00.1234567891234Z")), 123456789)
        self.assertNotIsInstance(parse_time("2024-01-01T00:00:00.123456Z"), NanoDatetime)
        self.assertEqual(
            format_time(with_nanosecond(datetime(2024, 1, 1, tzinfo=UTC), 1)),
            "2024-01-01T00:00:00.000000001Z",
        )
        self.assertEqual(nanosecond(with_nanosecond(datetime(2024, 1, 1), 5000)), 5000)
        self.assertRaises(ValueError, with_nanosecond, datetime(2024, 1, 1), 10**9)

    def test_offsets_beyond_python(self) -> None:
        # Go accepts offsets up to 24:60; Python cannot represent them: converted to UTC.
        self.assertEqual(parse_time("2024-01-02T00:30:00+24:30"), datetime(2024, 1, 1, tzinfo=UTC))
        with self.assertRaises(GoJSONError) as cm:
            parse_time("0000-01-01T00:00:00Z")
        self.assertEqual(
            str(cm.exception), 'parsing time "0000-01-01T00:00:00Z": year out of range'
        )

    def test_format(self) -> None:
        cases = [
            (datetime(2024, 3, 27, tzinfo=UTC), "2024-03-27T00:00:00Z"),
            (
                datetime(2024, 3, 27, 1, 2, 3, 500000, tzinfo=timezone(timedelta(hours=1))),
                "2024-03-27T01:02:03.5+01:00",
            ),
            (
                datetime(
                    2024, 3, 27, 1, 2, 3, 120, tzinfo=timezone(-timedelta(hours=7, minutes=30))
                ),
                "2024-03-27T01:02:03.00012-07:30",
            ),
            (datetime(2024, 3, 27, tzinfo=timezone(timedelta(0))), "2024-03-27T00:00:00Z"),
            (datetime(2024, 3, 27), "2024-03-27T00:00:00Z"),
            (
                datetime(2024, 3, 27, tzinfo=timezone(timedelta(seconds=-30))),
                "2024-03-27T00:00:00+00:00",
            ),
            (
                datetime(2024, 3, 27, tzinfo=timezone(timedelta(seconds=-90))),
                "2024-03-27T00:00:00-00:01",
            ),
            (ZERO_TIME, "0001-01-01T00:00:00Z"),
        ]
        for dt, text in cases:
            with self.subTest(text=text):
                self.assertEqual(format_time(dt), text)

    @settings(max_examples=300, deadline=None, database=None)
    @given(
        st.datetimes(
            min_value=datetime(1, 1, 2),
            max_value=datetime(9999, 12, 30),
            timezones=st.sampled_from(
                [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=11))]
            ),
        ),
        st.integers(min_value=0, max_value=999),
    )
    def test_round_trip(self, dt: datetime, extra_ns: int) -> None:
        value = with_nanosecond(dt, dt.microsecond * 1000 + extra_ns)
        text = format_time(value)
        parsed = parse_time(text)
        self.assertEqual(format_time(parsed), text)
        self.assertEqual(nanosecond(parsed), nanosecond(value))
        self.assertEqual(parsed, value)


class EncodeTests(SynchronousTestCase):
    def test_html_escaping(self) -> None:
        hook = T.Outgoing(Event="delivered", MessageID="<a&b@x>", Extra={})
        self.assertIn(b'"MessageID":"\\u003ca\\u0026b@x\\u003e"', encode_webhook(hook))
        self.assertIn(b'"MessageID":"\\u003ca\\u0026b@x\\u003e"', encode(hook, html_escape=True))
        self.assertIn(b'"MessageID":"<a&b@x>"', encode(hook, html_escape=False))
        self.assertIn(b'"MessageID":"<a&b@x>"', encode_response(hook))

    def test_string_escaping(self) -> None:
        obj = T.Error(
            Code='\x00\x01\x1f\b\f\n\r\t\x7f"\\/', Message="\u2028\u2029é☺\U0001f600\udcff"
        )
        for html in (True, False):
            self.assertEqual(
                encode(obj, html_escape=html),
                '{"Code":"\\u0000\\u0001\\u001f\\b\\f\\n\\r\\t\x7f\\"\\\\/","Message":"\\u2028\\u2029é☺\U0001f600\\ufffd"}'.encode(),
            )

    def test_nil_handling(self) -> None:
        self.assertEqual(
            encode(T.SendResult(MessageID="<x>"), html_escape=False),
            b'{"MessageID":"<x>","Submissions":null}',
        )
        self.assertEqual(
            encode_response(T.SendResult(MessageID="<x>")),
            b'{"MessageID":"<x>","Submissions":[]}\n',
        )
        self.assertEqual(
            encode_response(T.SendResult(Submissions=[])), b'{"MessageID":"","Submissions":[]}\n'
        )
        self.assertEqual(
            encode_webhook(T.Outgoing()),
            b'{"Version":0,"Event":"","DSN":false,"Suppressing":false,"QueueMsgID":0,"FromID":"","MessageID":"","Subject":"","WebhookQueued":"0001-01-01T00:00:00Z","SMTPCode":0,"SMTPEnhancedCode":"","Error":"","Extra":null}',
        )
        self.assertTrue(encode_webhook(T.Outgoing(Extra={})).endswith(b'"Extra":{}}'))
        # FillNil reaches nested values; pointers stay null.
        body = encode_response(T.MessageGetResult())
        self.assertEqual(
            body,
            b'{"Message":{"From":[],"To":[],"CC":[],"BCC":[],"ReplyTo":[],"MessageID":"","References":[],"Date":null,'
            b'"Subject":"","Text":"","HTML":""},"Structure":{"ContentType":"","ContentTypeParams":{},"ContentID":"",'
            b'"ContentDisposition":"","Filename":"","DecodedSize":0,"Parts":[]},"Meta":{"Size":0,"DSN":false,"Flags":[],'
            b'"MailFrom":"","MailFromValidated":false,"RcptTo":"","MsgFrom":"","MsgFromValidated":false,'
            b'"DKIMVerifiedDomains":[],"RemoteIP":"","MailboxName":""}}\n',
        )
        nested = T.Structure(Parts=[T.Structure(ContentType="text/plain")])
        self.assertEqual(
            encode(nested, html_escape=False),
            b'{"ContentType":"","ContentTypeParams":null,"ContentID":"","ContentDisposition":"","Filename":"",'
            b'"DecodedSize":0,"Parts":[{"ContentType":"text/plain","ContentTypeParams":null,"ContentID":"",'
            b'"ContentDisposition":"","Filename":"","DecodedSize":0,"Parts":null}]}',
        )
        self.assertIn(b'"Parts":[]}]}', encode_response(nested))

    def test_map_keys_sorted(self) -> None:
        hook = T.Outgoing(Extra={"b": "2", "a": "1", "B": "3", "é": "4", "<": "5"})
        self.assertTrue(
            encode_webhook(hook).endswith(
                b'"Extra":{"\\u003c":"5","B":"3","a":"1","b":"2","\xc3\xa9":"4"}}'
            )
        )

    def test_values(self) -> None:
        obj = Everything(
            Big=-(2**63),
            N=5,
            When=datetime(2024, 3, 27, 1, 2, 3, 500000, tzinfo=timezone(timedelta(hours=1))),
            PB=True,
            A=("x", "y"),
            AL=[("a", "b")],
        )
        self.assertEqual(
            encode(obj, html_escape=True),
            b'{"S":"","B":false,"Big":-9223372036854775808,"N":5,"When":"2024-03-27T01:02:03.5+01:00","PB":true,"PT":null,'
            b'"L":null,"M":null,"A":["x","y"],"AL":[["a","b"]],"Nested":{"Name":"","Address":""},"NL":null,"D":0}',
        )

    def test_duration(self) -> None:
        self.assertEqual(decode(Everything, '{"D": 1500000000}'), Everything(D=1500000000))
        self.assertTrue(encode(Everything(D=-5), html_escape=True).endswith(b'"D":-5}'))
        with self.assertRaises(GoJSONError) as cm:
            decode(Everything, '{"D": "1s"}')
        self.assertEqual(
            str(cm.exception),
            "json: cannot unmarshal string into Go struct field Everything.D of type time.Duration",
        )

    def test_round_trip(self) -> None:
        obj = Everything(
            S="s",
            B=True,
            Big=1,
            When=parse_time("2024-01-01T00:00:00.000000001Z"),
            L=[],
            M={},
            NL=[T.NameAddress(Name="x")],
        )
        self.assertEqual(decode(Everything, encode(obj, html_escape=True)), obj)

    def test_type_checks(self) -> None:
        self.assertRaises(TypeError, encode, {"a": 1}, html_escape=True)
        self.assertRaises(TypeError, encode, T.Error, html_escape=True)
        self.assertRaises(TypeError, encode, T.Error(Code=5), html_escape=True)  # type: ignore[arg-type]

    def test_golden_suppression_crud_responses(self) -> None:
        doc = golden("suppression_crud.json")
        seen = 0
        for method, _, response in webapi_steps(doc):
            text = response["body"]["text"]
            cls = T.RESPONSE_TYPES[method] if response["status"] == 200 else T.Error
            assert cls is not None
            self.assertEqual(encode_response(decode(cls, text)), text.encode())
            seen += 1
        self.assertGreaterEqual(seen, 16)
        suppressions = [
            T.Suppression(
                ID=1,
                Created=parse_time("2026-11-24T04:35:35.788132038Z"),
                Account="mox",
                BaseAddress="blockeduser@localhost",
                OriginalAddress="Blocked.User+tag@localhost",
                Manual=True,
                Reason="golden test",
            ),
            T.Suppression(
                ID=2,
                Created=with_nanosecond(datetime(2026, 11, 24, 4, 35, 35, tzinfo=UTC), 790946347),
                Account="mox",
                BaseAddress="other@example.org",
                OriginalAddress="other-list@example.org",
            ),
        ]
        listing = [
            r
            for m, _, r in webapi_steps(doc)
            if m == "SuppressionList" and "ID" in r["body"]["text"]
        ]
        self.assertEqual(
            encode_response(T.SuppressionListResult(Suppressions=suppressions)),
            listing[0]["body"]["text"].encode(),
        )
        self.assertEqual(encode_response(T.SuppressionListResult()), b'{"Suppressions":[]}\n')
        self.assertEqual(encode_response(T.SuppressionAddResult()), b"{}\n")
        self.assertEqual(
            encode_response(T.SuppressionPresentResult(Present=True)), b'{"Present":true}\n'
        )

    def test_golden_webhook_retry_204(self) -> None:
        doc = golden("webhook_retry_204.json")
        hooks = doc["webhooks"]
        self.assertGreaterEqual(len(hooks), 2)
        for hook in hooks:
            cls = T.Incoming if hook["path"].endswith("/incoming") else T.Outgoing
            self.assertEqual(encode_webhook(decode(cls, hook["body"])), hook["body"].encode())
        outgoing = [h for h in hooks if h["path"].endswith("/outgoing")]
        first = json.loads(outgoing[0]["body"])
        built = T.Outgoing(
            Event="delivered",
            QueueMsgID=53,
            MessageID="<VybFNaBKTkQCuJkgol4kDw@localhost>",
            Subject="webhook retry 204",
            WebhookQueued=parse_time(first["WebhookQueued"]),
            Extra={"scenario": "retry204"},
        )
        self.assertEqual(encode_webhook(built), outgoing[0]["body"].encode())


class GoldenSweepTests(SynchronousTestCase):
    """Every webapi request, JSON response and webhook body in the golden transcripts."""

    def test_requests(self) -> None:
        decoded = errors = 0
        for path in golden_files():
            for method, request, response in webapi_steps(json.loads(path.read_text())):
                text = request_text(request)
                if not text:
                    continue
                message = (response.get("body_json") or {}).get("Message", "")
                with self.subTest(file=path.name, request=text):
                    if response.get("body_json", {}).get(
                        "Code"
                    ) == "protocol" and message.startswith("parsing request: "):
                        with self.assertRaises(GoJSONError) as cm:
                            decode_request(method, text)
                        self.assertEqual(f"parsing request: {cm.exception}", message)
                        errors += 1
                    else:
                        self.assertIsInstance(decode_request(method, text), T.REQUEST_TYPES[method])
                        decoded += 1
        self.assertGreater(decoded, 100)
        self.assertEqual(errors, 4)

    def test_responses(self) -> None:
        count = 0
        for path in golden_files():
            for method, _, response in webapi_steps(json.loads(path.read_text())):
                body = response.get("body")
                text = body.get("text") if isinstance(body, dict) else None
                if not text or not text.startswith("{") or response["status"] not in (200, 400):
                    continue
                cls = T.RESPONSE_TYPES[method] if response["status"] == 200 else T.Error
                assert cls is not None
                with self.subTest(file=path.name, method=method):
                    self.assertEqual(encode_response(decode(cls, text)), text.encode())
                count += 1
        self.assertGreater(count, 100)

    def test_webhooks(self) -> None:
        count = 0
        for path in golden_files():
            for hook in json.loads(path.read_text()).get("webhooks", []):
                cls = T.Incoming if hook["path"].endswith("/incoming") else T.Outgoing
                with self.subTest(file=path.name, path=hook["path"]):
                    self.assertEqual(
                        encode_webhook(decode(cls, hook["body"])), hook["body"].encode()
                    )
                count += 1
        self.assertGreater(count, 50)


class SchemaTests(SynchronousTestCase):
    def test_methods(self) -> None:
        self.assertEqual(
            sorted(T.REQUEST_TYPES),
            sorted(
                [
                    "Send",
                    "SuppressionList",
                    "SuppressionAdd",
                    "SuppressionRemove",
                    "SuppressionPresent",
                    "MessageGet",
                    "MessageRawGet",
                    "MessagePartGet",
                    "MessageDelete",
                    "MessageFlagsAdd",
                    "MessageFlagsRemove",
                    "MessageMove",
                ]
            ),
        )
        self.assertEqual(set(T.RESPONSE_TYPES), set(T.REQUEST_TYPES))
        self.assertIsNone(T.RESPONSE_TYPES["MessageRawGet"])
        self.assertIsNone(T.RESPONSE_TYPES["MessagePartGet"])

    def test_go_types(self) -> None:
        self.assertEqual(
            field_names(T.SendRequest),
            {
                "From": "[]webapi.NameAddress",
                "To": "[]webapi.NameAddress",
                "CC": "[]webapi.NameAddress",
                "BCC": "[]webapi.NameAddress",
                "ReplyTo": "[]webapi.NameAddress",
                "MessageID": "string",
                "References": "[]string",
                "Date": "*time.Time",
                "Subject": "string",
                "Text": "string",
                "HTML": "string",
                "Extra": "map[string]string",
                "Headers": "[][2]string",
                "AlternativeFiles": "[]webapi.File",
                "InlineFiles": "[]webapi.File",
                "AttachedFiles": "[]webapi.File",
                "RequireTLS": "*bool",
                "FutureRelease": "*time.Time",
                "SaveSent": "bool",
            },
        )
        self.assertEqual(list(field_names(T.SendRequest))[:11], list(field_names(T.Message)))
        self.assertEqual(
            field_names(T.MessagePartGetRequest), {"MsgID": "int64", "PartPath": "[]int"}
        )
        self.assertEqual(field_names(T.Outgoing)["Event"], "webhook.OutgoingEvent")
        self.assertEqual(field_names(T.Outgoing)["SMTPCode"], "int")
        self.assertEqual(field_names(T.Incoming)["From"], "[]webhook.NameAddress")
        self.assertEqual(
            field_names(T.MessageGetResult),
            {
                "Message": "webapi.Message",
                "Structure": "webhook.Structure",
                "Meta": "webapi.MessageMeta",
            },
        )
        self.assertEqual(go_type_name(T.SuppressionAddRequest), "webapi.SuppressionAddRequest")
        self.assertEqual(go_type_name(T.WebhookNameAddress), "webhook.NameAddress")

    def test_instances(self) -> None:
        self.assertTrue(is_gostruct(T.SendRequest))
        self.assertTrue(is_gostruct(T.SendRequest()))
        self.assertFalse(is_gostruct(object()))
        req = T.MessageMoveRequest(MsgID=1, DestMailboxName="Archive")
        self.assertRaises(AttributeError, setattr, req, "MsgID", 2)
        self.assertRaises(TypeError, T.MessageMoveRequest, 1, "Archive")


class FuzzTests(SynchronousTestCase):
    @settings(max_examples=400, deadline=None, database=None)
    @given(st.binary(max_size=64))
    def test_arbitrary_bytes(self, raw: bytes) -> None:
        for method in ("Send", "MessagePartGet"):
            try:
                decode_request(method, raw)
            except GoJSONError as exc:
                self.assertTrue(str(exc))

    json_values = st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    ["To", "Address", "Name", "Headers", "Extra", "MsgID", "PartPath", "x", "text"]
                )
                | st.text(max_size=4),
                children,
                max_size=4,
            )
        ),
        max_leaves=12,
    )

    @settings(max_examples=400, deadline=None, database=None)
    @given(json_values)
    def test_valid_json(self, value: Any) -> None:
        raw = json.dumps(value)
        for method in ("Send", "MessagePartGet"):
            try:
                decode_request(method, raw)
            except GoJSONError as exc:
                self.assertTrue(str(exc).startswith(("json: ", "parsing time ")), str(exc))

    addresses = st.builds(T.NameAddress, Name=st.text(max_size=5), Address=st.text(max_size=5))

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.text(), st.booleans())
    def test_strings_like_python_json(self, text: str, ascii_only: bool) -> None:
        # Without lone surrogates Go and Python agree; lone surrogates become U+FFFD.
        raw = json.dumps({"Text": text}, ensure_ascii=ascii_only)
        self.assertEqual(decode(T.SendRequest, raw).Text, text)
        surrogate = json.dumps({"Text": "a\ud800-" + text + "-\udfff"}, ensure_ascii=ascii_only)
        # An escaped lone surrogate is one U+FFFD; a raw one in a str stands for its three
        # (invalid) UTF-8 bytes, each replaced.
        bad = "\ufffd" if ascii_only else "\ufffd" * 3
        self.assertEqual(decode(T.SendRequest, surrogate).Text, "a" + bad + "-" + text + "-" + bad)

    @settings(max_examples=200, deadline=None, database=None)
    @given(
        st.builds(
            T.SendRequest,
            To=st.none() | st.lists(addresses, max_size=2),
            Subject=st.text(max_size=10),
            Extra=st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3),
            Headers=st.none()
            | st.lists(st.tuples(st.text(max_size=3), st.text(max_size=3)), max_size=2),
            RequireTLS=st.none() | st.booleans(),
            FutureRelease=st.none()
            | st.datetimes(min_value=datetime(2000, 1, 1), timezones=st.just(UTC)),
            SaveSent=st.booleans(),
        ),
        st.booleans(),
    )
    def test_encode_decode_round_trip(self, req: T.SendRequest, html: bool) -> None:
        raw = encode(req, html_escape=html)
        self.assertEqual(json.loads(raw)["Subject"], req.Subject)  # valid JSON
        back = decode(T.SendRequest, raw)
        self.assertEqual(back, req)
        self.assertEqual(encode(back, html_escape=html), raw)
