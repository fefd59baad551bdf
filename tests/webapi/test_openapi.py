"""The webapi's OpenAPI document (moxtw/webapi/openapi.py) is valid and true.

* The document is valid OpenAPI 3.1 and its schemas valid JSON Schema 2020-12.
* Its paths are exactly the Klein routes of the webapi, the methods those of the method
  registry (``types.REQUEST_TYPES``), the error codes ``errors.CODES``.
* Every value of the request/response types, encoded as the server does, fits the
  schemas; what the decoder refuses, the request schemas refuse too.
* Every golden transcript of the real mox conforms (requests and answers).
* The live webapi answers every method, success and errors, as documented; undocumented
  HTTP methods get 405 with ``Allow``; the document is served at ``<base>openapi.json``
  and the HTML pages link to it.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from moxtw.store.messages import deliver
from moxtw.webapi import types as t
from moxtw.webapi.app import WebAPI
from moxtw.webapi.errors import CODES, WebAPIError
from moxtw.webapi.gojson import (
    GoJSONError,
    _Array,
    _Bool,
    _Int,
    _Map,
    _Pointer,
    _Slice,
    _String,
    _Struct,
    _struct_info,
    _Time,
    _Type,
    decode_request,
    encode,
    encode_response,
    go_type_name,
)
from moxtw.webapi.http import parse_form
from moxtw.webapi.openapi import (
    DOCUMENT,
    FILE_FIELDS,
    INT64_MAX,
    INT64_MIN,
    REF,
    document,
    document_bytes,
    json_schema,
)
from tests.golden import GOLDEN_DIR
from tests.webapi.fixture import LOGIN, Reply, WebAPIFixture

DOC_URI = "urn:moxtw:webapi:openapi"
HTTP_METHODS = ("get", "post", "put", "delete", "patch", "options")

# --- checking against the document ---------------------------------------------------------


def pointer(*parts: str) -> str:
    """A JSON pointer fragment to a place in the document."""
    return "#/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


class Conformance:
    """Checks requests and answers against an OpenAPI document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        resource = Resource.from_contents(doc, default_specification=DRAFT202012)
        self.registry = Registry().with_resource(DOC_URI, resource)

    def errors(self, fragment: str, instance: Any) -> list[str]:
        """Validation errors of ``instance`` against the schema at ``fragment``."""
        validator = Draft202012Validator(
            {"$ref": DOC_URI + fragment}, registry=self.registry, format_checker=FormatChecker()
        )
        return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]

    def operation(self, path: str, method: str) -> dict[str, Any] | None:
        return self.doc["paths"].get(path, {}).get(method.lower())

    def resolve(self, obj: dict[str, Any]) -> dict[str, Any]:
        ref = obj.get("$ref")
        if ref is None:
            return obj
        node: Any = self.doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    @staticmethod
    def media_match(documented: str, actual: str) -> bool:
        actual = actual.split(";", 1)[0].strip().lower()
        if documented == "*/*":
            return True
        if documented.endswith("/*"):
            return actual.startswith(documented[:-1])
        return documented == actual

    def answer_problems(
        self, path: str, method: str, status: int, content_type: str | None, body: bytes
    ) -> list[str]:
        """Why an answer does not conform to the document (empty: it does)."""
        op = self.operation(path, method)
        if op is None:
            return [f"{method.upper()} {path} is not documented"]
        if str(status) not in op["responses"]:
            return [f"status {status} not documented for {method.upper()} {path}"]
        response = self.resolve(op["responses"][str(status)])
        content = response.get("content")
        if not content:
            return []
        if content_type is None:
            return ["no Content-Type"]
        matches = [m for m in content if self.media_match(m, content_type)]
        if not matches:
            return [f"Content-Type {content_type} not documented: {list(content)}"]
        media = matches[0]
        if media != "application/json":
            return []
        try:
            value = json.loads(body)
        except ValueError:
            return [f"body is not JSON: {body[:200]!r}"]
        fragment = pointer("paths", path, method.lower(), "responses", str(status), "content", media, "schema")
        if "$ref" in op["responses"][str(status)]:
            name = op["responses"][str(status)]["$ref"].rsplit("/", 1)[-1]
            fragment = pointer("components", "responses", name, "content", media, "schema")
        return self.errors(fragment, value)

    def request_problems(self, path: str, content_type: str | None, body: bytes) -> list[str]:
        """Why a POST body does not conform to the document's request body (empty: it does).

        The ``request`` field's JSON is checked against the ``contentSchema`` after
        folding its keys to the documented case (the server matches them
        case-insensitively, as Go does).
        """
        op = self.operation(path, "post")
        if op is None:
            return [f"POST {path} is not documented"]
        if content_type is None:
            return ["no Content-Type"]
        content = op["requestBody"]["content"]
        matches = [m for m in content if self.media_match(m, content_type)]
        if not matches:
            return [f"Content-Type {content_type} not documented"]
        media = matches[0]
        request = SimpleNamespace(original_content_type=content_type.encode("latin-1"), content=io.BytesIO(body))
        try:
            form = parse_form(request)
        except WebAPIError as e:
            return [f"form does not parse: {e.message}"]
        fields: dict[str, Any] = {name: values[0] for name, values in form.fields.items()}
        for upload in form.files:  # file parts: the form schema's arrays of binary strings
            fields.setdefault(upload.field, []).append(upload.data.decode("latin-1"))
        form_schema = pointer("paths", path, "post", "requestBody", "content", media, "schema")
        problems = self.errors(form_schema, fields)
        if problems:
            return problems
        try:
            value = json.loads(fields["request"])
        except ValueError as e:
            return [f"request is not JSON: {e}"]
        content_schema = content[media]["schema"]["properties"]["request"]["contentSchema"]
        return self.errors(form_schema + "/properties/request/contentSchema", self.fold(value, content_schema))

    def fold(self, value: Any, schema: dict[str, Any]) -> Any:
        """``value`` with object keys renamed to the schema's properties, ignoring case."""
        schema = self.resolve(schema)
        if "anyOf" in schema:
            schema = self.resolve(schema["anyOf"][0])
        if isinstance(value, dict) and "properties" in schema:
            names = {k.lower(): k for k in schema["properties"]}
            out = {}
            for key, member in value.items():
                name = names.get(key.lower(), key)
                out[name] = self.fold(member, schema["properties"].get(name, {}))
            return out
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [self.fold(v, schema["items"]) for v in value]
        return value


CHECK = Conformance(document("/webapi/"))


def request_fragment(method: str) -> str:
    return pointer(
        "paths", f"/v0/{method}", "post", "requestBody", "content",
        "application/x-www-form-urlencoded", "schema", "properties", "request", "contentSchema",
    )


def response_fragment(method: str) -> str:
    return pointer("paths", f"/v0/{method}", "post", "responses", "200", "content", "application/json", "schema")


def component_name(fragment_schema: dict[str, Any]) -> str:
    return fragment_schema["$ref"].removeprefix(REF)


# --- the document itself -------------------------------------------------------------------


class DocumentTests(SynchronousTestCase):
    def test_valid_openapi_31(self) -> None:
        """The document validates against the OpenAPI 3.1 schema (and its rules)."""
        errors = list(OpenAPIV31SpecValidator(document("/webapi/")).iter_errors())
        self.assertEqual(errors, [])
        self.assertEqual(DOCUMENT["openapi"], "3.1.0")

    def test_schemas_are_json_schema_2020_12(self) -> None:
        """Every component is a valid 2020-12 schema, standalone too; every $ref resolves;
        formats are asserted when bodies are checked here."""
        for name in DOCUMENT["components"]["schemas"]:
            Draft202012Validator.check_schema(json_schema(name))
        send = Draft202012Validator(json_schema("SendRequest"), format_checker=FormatChecker())
        self.assertTrue(send.is_valid({"To": [{"Address": "a@b"}], "Date": None, "Headers": [["A", "b"]]}))
        self.assertFalse(send.is_valid({"To": [{"Address": "a@b", "X": 1}]}))
        self.assertFalse(send.is_valid({"Date": "yesterday"}))
        refs: list[str] = []

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                refs.extend(v for k, v in node.items() if k == "$ref")
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)

        walk(DOCUMENT)
        self.assertGreater(len(refs), 50)
        for ref in refs:
            self.assertIsInstance(CHECK.resolve({"$ref": ref}), dict, ref)
        self.assertIn("date-time", FormatChecker().checkers)

    def test_paths_are_the_routes(self) -> None:
        """Every Klein route (methods expanded from the method registry) is documented,
        and every documented operation is routed."""
        routed: set[tuple[str, str]] = set()
        for rule in WebAPI.app.url_map.iter_rules():
            args = set(rule.arguments)
            self.assertLessEqual(args, {"method"}, rule.rule)
            paths = [re.sub(r"<[^>]+>", m, rule.rule) for m in t.REQUEST_TYPES] if args else [rule.rule]
            # Routes without a method list take any method; they are documented as GET
            # (test_undocumented_methods checks the others).
            methods = {m.lower() for m in rule.methods or {"GET"}} - {"head", "options"}
            routed |= {(p, m) for p in paths for m in methods}
        documented = {(p, m) for p, item in DOCUMENT["paths"].items() for m in item if m in HTTP_METHODS}
        self.assertEqual(documented, routed)
        adapter = WebAPI.app.url_map.bind("localhost")
        for path, method in documented:
            adapter.match(path, method=method.upper())  # raises if not routed

    def test_methods_and_types(self) -> None:
        """Each method's request and response schemas are of its registered types."""
        schemas = DOCUMENT["components"]["schemas"]
        for method, request_type in t.REQUEST_TYPES.items():
            op = DOCUMENT["paths"][f"/v0/{method}"]["post"]
            self.assertEqual(op["operationId"], method)
            self.assertEqual(op["security"], [{"basic": []}])
            for media in ("application/x-www-form-urlencoded", "multipart/form-data"):
                field = op["requestBody"]["content"][media]["schema"]["properties"]["request"]
                self.assertEqual(field["contentMediaType"], "application/json")
                name = component_name(field["contentSchema"])
                self.assertEqual(schemas[name]["x-go-type"], go_type_name(request_type))
            files = set(op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]) - {"request"}
            self.assertEqual(files, set(FILE_FIELDS) if method == "Send" else set())
            response_type = t.RESPONSE_TYPES[method]
            content = op["responses"]["200"]["content"]
            if response_type is None:
                self.assertNotIn("application/json", content)
            else:
                name = component_name(content["application/json"]["schema"])
                self.assertEqual(schemas[name]["x-go-type"], go_type_name(response_type))
            self.assertEqual(set(op["responses"]), {"200", "400", "401", "429"})

    def test_error_codes(self) -> None:
        error = DOCUMENT["components"]["schemas"]["Error"]
        self.assertEqual(error["properties"]["Code"]["enum"], sorted(CODES))
        self.assertEqual(error["required"], ["Code", "Message"])

    def test_info_and_servers(self) -> None:
        from moxtw import __version__

        self.assertEqual(DOCUMENT["info"]["version"], __version__)
        self.assertIn("v0", DOCUMENT["info"]["description"])
        self.assertEqual(document("/api/")["servers"][0]["url"], "/api")
        self.assertEqual(document("/")["servers"][0]["url"], "/")
        self.assertEqual(json.loads(document_bytes("/api/")), document("/api/"))
        self.assertEqual(DOCUMENT["servers"][0]["url"], "/webapi")  # not changed by document()
        self.assertEqual(DOCUMENT["components"]["securitySchemes"]["basic"]["scheme"], "basic")


# --- the types against the schemas ------------------------------------------------------------

OFFSETS = [UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=9, minutes=30))]


def values(gotype: _Type, depth: int = 0) -> st.SearchStrategy[Any]:
    """Any value of a Go type as the gostruct classes hold it."""
    if isinstance(gotype, _String):
        return st.text(max_size=8)
    if isinstance(gotype, _Bool):
        return st.booleans()
    if isinstance(gotype, _Int):
        return st.integers(INT64_MIN, INT64_MAX)
    if isinstance(gotype, _Time):
        return st.datetimes(
            min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from(OFFSETS)
        )
    if isinstance(gotype, _Pointer):
        return st.none() | values(gotype.elem, depth)
    if isinstance(gotype, _Slice):
        if depth > 2:
            return st.none() | st.just([])
        return st.none() | st.lists(values(gotype.elem, depth + 1), max_size=2)
    if isinstance(gotype, _Map):
        return st.none() | st.dictionaries(st.text(max_size=5), values(gotype.elem, depth + 1), max_size=2)
    if isinstance(gotype, _Array):
        return st.tuples(*[values(gotype.elem, depth)] * gotype.length)
    if isinstance(gotype, _Struct):
        fields = {f.name: values(f.type, depth + 1) for f in _struct_info(gotype.cls).fields}
        return st.builds(gotype.cls, **fields)
    raise TypeError(gotype)


def instances(classes: list[tuple[str, type]]) -> st.SearchStrategy[tuple[str, Any]]:
    return st.one_of(*[st.tuples(st.just(m), values(_Struct(cls))) for m, cls in classes])


JSON_RESULTS = [(m, r) for m, r in t.RESPONSE_TYPES.items() if r is not None]


class TypeTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None, database=None)
    @given(instances(JSON_RESULTS))
    def test_every_answer_fits(self, case: tuple[str, Any]) -> None:
        """Every value of a response type, encoded as the server answers, fits the
        method's 200 schema (nil slices and maps are [] and {}, nil pointers null)."""
        method, value = case
        body = json.loads(encode_response(value))
        self.assertEqual(CHECK.errors(response_fragment(method), body), [])

    @settings(max_examples=300, deadline=None, database=None)
    @given(instances(list(t.REQUEST_TYPES.items())))
    def test_every_request_fits_and_decodes(self, case: tuple[str, Any]) -> None:
        """Every value of a request type, as JSON (nil as null), fits the request schema
        and the server decodes it back to the same value."""
        method, value = case
        text = encode(value, html_escape=False).decode()
        self.assertEqual(CHECK.errors(request_fragment(method), json.loads(text)), [])
        self.assertEqual(decode_request(method, text), value)

    def test_error_answers_fit(self) -> None:
        for code in sorted(CODES):
            body = json.loads(encode_response(t.Error(Code=code, Message="m")))
            self.assertEqual(CHECK.errors(pointer("components", "schemas", "Error"), body), [])
        bad = {"Code": "nosuchcode", "Message": "m"}
        self.assertNotEqual(CHECK.errors(pointer("components", "schemas", "Error"), bad), [])

    def test_refused_requests_are_invalid(self) -> None:
        """What the decoder refuses (protocol errors), the request schema refuses."""
        cases = [
            ("Send", {"Bogus": 1}),
            ("Send", {"To": "mox@localhost"}),
            ("Send", {"To": [{"Address": 1}]}),
            ("Send", {"To": [{"Address": "a@b", "Extra": 1}]}),
            ("Send", {"Date": "yesterday"}),
            ("Send", {"Date": "2024-01-02t03:04:05Z"}),
            ("Send", {"Date": "2024-01-02T03:04:60Z"}),
            ("Send", {"Date": "2024-02-30T03:04:05Z"}),
            ("Send", {"FutureRelease": "0000-01-01T00:00:00Z"}),
            ("Send", {"Headers": "X-A: b"}),
            ("Send", {"Extra": {"a": 1}}),
            ("Send", {"SaveSent": "yes"}),
            ("Send", {"RequireTLS": 1}),
            ("Send", {"AttachedFiles": [{"Data": 1}]}),
            ("MessageGet", {"MsgID": 1 << 63}),
            ("MessageGet", {"MsgID": -(1 << 63) - 1}),
            ("MessageGet", {"MsgID": 1.5}),
            ("MessageGet", {"MsgID": "1"}),
            ("MessagePartGet", {"MsgID": 1, "PartPath": [0.5]}),
            ("MessageFlagsAdd", {"MsgID": 1, "Flags": "\\seen"}),
            ("SuppressionList", {"X": 1}),
            ("SuppressionAdd", []),
        ]
        for method, request in cases:
            with self.assertRaises(GoJSONError, msg=f"{method} {request}"):
                decode_request(method, json.dumps(request))
            self.assertNotEqual(CHECK.errors(request_fragment(method), request), [], f"{method} {request}")

    def test_accepted_edges_are_valid(self) -> None:
        """Edge values the decoder takes fit the schema (the schema is not too strict)."""
        cases = [
            ("Send", {"Date": None, "FutureRelease": "0001-01-01T00:00:00Z", "RequireTLS": None}),
            ("Send", {"Date": "2024-01-02T03:04:05.123456789+14:00", "Headers": [["A", "b"]]}),
            ("Send", {"To": None, "Extra": None, "Headers": None, "References": None, "AttachedFiles": None}),
            ("Send", {"To": [], "Extra": {}, "InlineFiles": [{}]}),
            ("MessageGet", {"MsgID": INT64_MAX}),
            ("MessageGet", {"MsgID": INT64_MIN}),
            ("MessagePartGet", {"MsgID": 1, "PartPath": [-1, 0]}),
            ("MessagePartGet", {"MsgID": 1, "PartPath": None}),
            ("SuppressionList", {}),
        ]
        for method, request in cases:
            decode_request(method, json.dumps(request))
            self.assertEqual(CHECK.errors(request_fragment(method), request), [], f"{method} {request}")


# --- the goldens of mox -----------------------------------------------------------------------


def golden_steps() -> list[tuple[str, int, dict[str, Any]]]:
    steps = []
    for path in sorted(GOLDEN_DIR.glob("*.json")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        for i, step in enumerate(doc.get("steps", [])):
            if step["kind"] == "http" and urlsplit(step["request"]["url"]).path.startswith("/webapi"):
                steps.append((path.stem, i, step))
    return steps


def header(headers: list[list[str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name.lower():
            return value
    return None


def body_bytes(message: dict[str, Any]) -> bytes:
    body = message.get("body")
    if body is None:
        return b""
    if "base64" in body:
        import base64

        return base64.b64decode(body["base64"])
    return str(body["text"]).encode("utf-8")


#: A protocol error's message when the request itself is wrong (not its meaning).
MALFORMED = re.compile(r"^(parsing request: |missing/empty request$|unknown content-type|parsing form: )")


class GoldenTests(SynchronousTestCase):
    """Mox's recorded requests and answers conform to the document."""

    def setUp(self) -> None:
        if not GOLDEN_DIR.is_dir():
            raise SkipTest(f"golden transcripts not found at {GOLDEN_DIR} (set MOXTW_GOLDEN_DIR)")

    def test_goldens_conform(self) -> None:
        failures: list[str] = []
        checked = {"answers": 0, "valid requests": 0, "invalid requests": 0, "undocumented": 0}
        methods: dict[str, set[int]] = {}
        for scenario, index, step in golden_steps():
            request, response = step["request"], step["response"]
            where = f"{scenario} step {index} ({request['method']} {urlsplit(request['url']).path})"
            path = urlsplit(request["url"]).path.removeprefix("/webapi")
            status = response["status"]
            op = CHECK.operation(path, request["method"])
            if path == "":
                continue  # <base> without its slash: mox redirects to <base>
            if op is None:
                # Unknown methods and paths, wrong HTTP methods: errors, except the
                # index page, which mox (and moxtw) answer for any HTTP method.
                if status < 400 and path != "/v0/":
                    failures.append(f"{where}: {status} for an undocumented operation")
                checked["undocumented"] += 1
                continue
            content_type = header(response["headers"], "Content-Type")
            for problem in CHECK.answer_problems(path, request["method"], status, content_type, body_bytes(response)):
                failures.append(f"{where}: answer: {problem}")
            checked["answers"] += 1
            if request["method"] != "POST":
                continue
            methods.setdefault(path, set()).add(status)
            problems = CHECK.request_problems(path, header(request["headers"], "Content-Type"), body_bytes(request))
            body = response.get("body_json")
            malformed = status == 400 and body["Code"] == "protocol" and MALFORMED.match(body["Message"])
            if status in (401, 429):
                continue  # answered before the request is read
            if malformed:
                if not problems:
                    failures.append(f"{where}: mox refused the request ({body['Message']}), the document allows it")
                checked["invalid requests"] += 1
            else:
                for problem in problems:
                    failures.append(f"{where}: request: {problem}")
                checked["valid requests"] += 1
        self.assertEqual(failures, [])
        # The goldens cover every method's success and most errors.
        self.assertEqual({p for p, s in methods.items() if 200 in s}, {f"/v0/{m}" for m in t.REQUEST_TYPES})
        self.assertGreater(checked["invalid requests"], 5, checked)
        self.assertGreater(checked["valid requests"], 100, checked)


# --- the live webapi ---------------------------------------------------------------------------

MESSAGE_A = (
    b"From: Alice <alice@example.org>\r\nTo: mox@localhost\r\nSubject: parts\r\n"
    b"Date: Tue, 24 Nov 2026 04:35:29 +0000\r\nMessage-Id: <a@example.org>\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
    b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n"
    b"--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=x.pdf\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b1--\r\n"
)
MESSAGE_B = b"From: bob@example.org\r\nSubject: no date\r\n\r\nplain\r\n"


def multipart(parts: list[tuple[str, str | None, list[tuple[str, str]], bytes]]) -> tuple[str, bytes]:
    """A multipart/form-data body: (field, filename, extra headers, content) per part."""
    boundary = "openapiboundary7MA4YWxkTrZu0gW"
    out = b""
    for name, filename, headers, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        out += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers) + b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", out


class LiveTests(TestCase):
    """The real webapi on loopback, every answer checked against the served document."""

    async def fixture(self, edit: Any = None) -> WebAPIFixture:
        f = await WebAPIFixture(self, edit).start()
        self.path = urlsplit(f.base).path
        served = await f.get("openapi.json")
        self.check = Conformance(json.loads(served.body))
        return f

    async def raw(
        self, f: WebAPIFixture, method: str, path: str, body: bytes = b"", content_type: str | None = None,
        auth: Any = LOGIN,
    ) -> Reply:
        headers = Headers()
        if content_type is not None:
            headers.addRawHeader(b"content-type", content_type.encode())
        kwargs: dict[str, Any] = {"headers": headers, "allow_redirects": False}
        if auth is not None:
            kwargs["auth"] = auth
        if body:
            kwargs["data"] = body
        response = await f.http.request(method, f.base + path.removeprefix("/"), **kwargs)
        return Reply(response.code, response.headers, await response.content())

    def assertConforms(self, path: str, method: str, reply: Reply) -> None:
        ctype = reply.headers.getRawHeaders(b"content-type", [b""])[0].decode() or None
        problems = self.check.answer_problems(path, method, reply.status, ctype, reply.body)
        self.assertEqual(problems, [], f"{method} {path}: {reply.status} {reply.body[:300]!r}")

    async def call(self, f: WebAPIFixture, method: str, request: Any, **kwargs: Any) -> Reply:
        body = "request=" + quote(request if isinstance(request, str) else json.dumps(request))
        reply = await self.raw(f, "POST", f"v0/{method}", body.encode(), "application/x-www-form-urlencoded", **kwargs)
        self.assertConforms(f"/v0/{method}", "post", reply)
        return reply

    async def test_every_method(self) -> None:
        """Each method, successful and failing, answers as the document says; the
        requests that succeed conform, the ones refused as malformed do not."""
        f = await self.fixture()
        a = await deliver(f.parts.store, "mox", "Inbox", MESSAGE_A, received=f.clock.seconds())
        b = await deliver(f.parts.store, "mox", "Inbox", MESSAGE_B, received=f.clock.seconds())
        send = {
            "To": [{"Name": "Mox", "Address": "mox@localhost"}], "CC": None, "Subject": "hi", "Text": "hello",
            "Extra": {"k": "v"}, "Headers": [["X-A", "b"]], "RequireTLS": None, "SaveSent": True,
        }
        cases: list[tuple[str, Any, str | None]] = [
            ("Send", send, None),
            ("Send", {"Text": "x"}, "noRecipients"),
            ("Send", {"To": "mox@localhost", "Text": "x"}, "protocol"),
            ("Send", '{"To": [', "protocol"),
            ("SuppressionAdd", {"EmailAddress": "a@example.org", "Manual": True, "Reason": "r"}, None),
            ("SuppressionAdd", {"EmailAddress": "A@example.org"}, "user"),
            ("SuppressionAdd", {"EmailAddress": "bad"}, "badAddress"),
            ("SuppressionList", {}, None),
            ("SuppressionList", {"Bogus": 1}, "protocol"),
            ("SuppressionPresent", {"EmailAddress": "a@example.org"}, None),
            ("SuppressionPresent", {"EmailAddress": ""}, "badAddress"),
            ("SuppressionRemove", {"EmailAddress": "a@example.org"}, None),
            ("SuppressionRemove", {"EmailAddress": "a@example.org"}, "user"),
            ("MessageGet", {"MsgID": a}, None),
            ("MessageGet", {"MsgID": b}, None),
            ("MessageGet", {"MsgID": 999999}, "messageNotFound"),
            ("MessageGet", {"MsgID": "1"}, "protocol"),
            ("MessageRawGet", {"MsgID": a}, None),
            ("MessageRawGet", {"MsgID": 0}, "messageNotFound"),
            ("MessagePartGet", {"MsgID": a, "PartPath": [1]}, None),
            ("MessagePartGet", {"MsgID": a, "PartPath": [0]}, None),
            ("MessagePartGet", {"MsgID": a, "PartPath": [9]}, "partNotFound"),
            ("MessageFlagsAdd", {"MsgID": a, "Flags": ["\\Seen", "custom"]}, None),
            ("MessageFlagsAdd", {"MsgID": a, "Flags": ["with space"]}, "user"),
            ("MessageFlagsRemove", {"MsgID": a, "Flags": ["custom"]}, None),
            ("MessageFlagsRemove", {"MsgID": 999999, "Flags": []}, "messageNotFound"),
            ("MessageMove", {"MsgID": a, "DestMailboxName": "Archive"}, None),
            ("MessageMove", {"MsgID": a, "DestMailboxName": "Nope"}, "user"),
            ("MessageDelete", {"MsgID": b}, None),
            ("MessageDelete", {"MsgID": b}, "messageNotFound"),
        ]
        ok: set[str] = set()
        failed: set[str] = set()
        replies = []
        for method, request, code in cases:
            reply = await self.call(f, method, request)
            replies.append(reply)
            text = request if isinstance(request, str) else json.dumps(request)
            body = ("request=" + quote(text)).encode()
            problems = self.check.request_problems(f"/v0/{method}", "application/x-www-form-urlencoded", body)
            if code is None:
                self.assertEqual(reply.status, 200, f"{method} {request}: {reply.body!r}")
                self.assertEqual(problems, [], f"{method} {request}")
                ok.add(method)
            else:
                self.assertEqual((reply.status, reply.json["Code"]), (400, code), f"{method} {request}")
                self.assertEqual(problems == [], code != "protocol", f"{method} {request}: {problems}")
                failed.add(method)
        self.assertEqual(ok, set(t.REQUEST_TYPES))
        self.assertEqual(failed, set(t.REQUEST_TYPES))
        # Pointers are null in answers: the message without a Date header.
        dates = [
            r.json["Message"]["Date"]
            for (m, q, _), r in zip(cases, replies, strict=True)
            if m == "MessageGet" and q["MsgID"] in (a, b)
        ]
        self.assertEqual(dates, ["2026-11-24T04:35:29Z", None])

    async def test_multipart_send_with_documented_file_fields(self) -> None:
        """Send as multipart with the documented file fields: each file lands where the
        document says."""
        f = await self.fixture()
        request = {"To": [{"Address": "mox@localhost"}], "Text": "files", "HTML": '<img src="cid:logo">'}
        ctype, body = multipart(
            [
                ("request", None, [], json.dumps(request).encode()),
                ("inlinefile", "logo.png", [("Content-Type", "image/png"), ("Content-ID", "<logo>")], b"\x89PNG..."),
                ("attachedfile", "report.txt", [("Content-Type", "text/plain")], b"report\n"),
                ("alternativefile", "invite.ics", [("Content-Type", "text/calendar")], b"BEGIN:VCALENDAR\r\n"),
            ]
        )
        self.assertEqual(set(FILE_FIELDS), {"inlinefile", "attachedfile", "alternativefile"})
        self.assertEqual(self.check.request_problems("/v0/Send", ctype, body), [])
        reply = await self.raw(f, "POST", "v0/Send", body, ctype)
        self.assertConforms("/v0/Send", "post", reply)
        self.assertEqual(reply.status, 200, reply.body)
        (row,) = await f.queue_rows()
        message = await f.message(row)
        where = {}
        for part in message.walk():
            if part.get_filename():
                where[part.get_filename()] = (message_parent(message, part), part.get("Content-ID"))
        self.assertEqual(
            where,
            {
                "logo.png": ("multipart/related", "<logo>"),
                "report.txt": ("multipart/mixed", None),
                "invite.ics": ("multipart/alternative", None),
            },
        )

    async def test_transport_errors(self) -> None:
        """Malformed requests, bad logins and rate limiting are documented answers."""
        f = await self.fixture()
        path = "/v0/SuppressionList"
        form = "application/x-www-form-urlencoded"
        cases = [
            (b"other=1", form),
            (b"request=", form),
            (b"request=%7B%7D", "text/plain"),
            (b"request=%7B%7D", None),
            (b"--x\r\n", "multipart/form-data"),
            (b"{}", "application/json"),
        ]
        for body, ctype in cases:
            reply = await self.raw(f, "POST", path, body, ctype)
            self.assertConforms(path, "post", reply)
            self.assertEqual((reply.status, reply.json["Code"]), (400, "protocol"), (body, ctype))
            self.assertNotEqual(self.check.request_problems(path, ctype, body), [], (body, ctype))
        reply = await self.raw(f, "POST", path, b"request=%7B%7D", form, auth=None)
        self.assertConforms(path, "post", reply)
        self.assertEqual(reply.status, 401)
        self.assertEqual(reply.headers.getRawHeaders(b"www-authenticate"), [b"Basic realm=webapi"])
        statuses = []
        for _ in range(11):
            reply = await self.raw(f, "POST", path, b"request=%7B%7D", form, auth=("mox@localhost", "wrong"))
            self.assertConforms(path, "post", reply)
            statuses.append(reply.status)
        self.assertEqual(statuses, [401] * 10 + [429])

    async def test_body_too_large(self) -> None:
        f = await self.fixture(lambda text: text.replace('max_request_size = "10MiB"', 'max_request_size = "1KiB"'))
        body = b"request=" + quote(json.dumps({"To": [{"Address": "mox@localhost"}], "Text": "x" * 2000})).encode()
        reply = await self.raw(f, "POST", "v0/Send", body, "application/x-www-form-urlencoded")
        self.assertConforms("/v0/Send", "post", reply)
        self.assertEqual((reply.status, reply.json["Code"]), (400, "protocol"))

    async def test_document_and_pages(self) -> None:
        """The document is served at <base>openapi.json without login; every documented
        GET answers as documented; the index and the method pages link to the document."""
        f = await self.fixture()
        reply = await f.get("openapi.json")
        self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"])
        self.assertEqual(reply.body, document_bytes(self.path))
        self.assertEqual(reply.json, document(self.path))
        self.assertEqual(reply.json["servers"][0]["url"], self.path.rstrip("/"))
        gets = [p for p, item in self.check.doc["paths"].items() if "get" in item]
        self.assertEqual(len(gets), 3 + len(t.REQUEST_TYPES))
        for path in gets:
            reply = await self.raw(f, "GET", path, auth=None)
            self.assertConforms(path, "get", reply)
            self.assertLess(reply.status, 400, path)
            if path.startswith("/v0/"):
                links = re.findall(r'<a href="([^"]+)">OpenAPI document</a>', reply.body.decode())
                page = f.base + path.removeprefix("/")
                self.assertEqual([urljoin(page, link) for link in links], [f.base + "openapi.json"], path)
        reply = await self.raw(f, "GET", "/", auth=None)
        self.assertEqual(reply.status, 303)
        self.assertEqual(reply.headers.getRawHeaders(b"location"), [(self.path + "v0/").encode()])

    async def test_undocumented_methods(self) -> None:
        """An HTTP method not documented for a path gets 405 with an Allow header naming
        the documented ones (except the index page, which answers any method, as mox's)."""
        f = await self.fixture()
        for path, item in self.check.doc["paths"].items():
            if path == "/v0/":
                continue
            documented = {m.upper() for m in item if m in HTTP_METHODS}
            for method in HTTP_METHODS:
                if method in item:
                    continue
                reply = await self.raw(f, method.upper(), path, b"request=%7B%7D", "application/x-www-form-urlencoded")
                self.assertEqual(reply.status, 405, f"{method} {path}")
                allow = reply.headers.getRawHeaders(b"allow", [b""])[0].decode()
                self.assertEqual({m.strip() for m in allow.split(",")}, documented, f"{method} {path}")


def message_parent(message: Any, target: Any) -> str | None:
    """The content type of the multipart that directly contains ``target``."""
    for part in message.walk():
        if part.is_multipart() and any(p is target for p in part.get_payload()):
            return str(part.get_content_type())
    return None
