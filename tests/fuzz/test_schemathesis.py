"""The live webapi against its own OpenAPI document: schemathesis, and requests generated
from the document's request schemas (issue 8, item 4).

A real ``twistd moxtw localserve`` daemon is started; its ``<base>openapi.json`` is fetched
and everything is generated from that served document:

* :class:`SchemathesisFuzz`: schemathesis' own generation for every operation of the
  document (its coverage phase, then positive and negative modes; the ``request`` form
  field is an opaque string to it), with its checks ``not_a_server_error``,
  ``status_code_conformance``, ``content_type_conformance`` and
  ``response_schema_conformance``.  The coverage phase also tries HTTP methods the
  document does not list (405, or 200 for ``<base>v0/``, as mox): those answers are only
  checked for a status below 500 and no traceback;
* :class:`DocumentFuzz`: for every method, requests that fit the method's request schema
  (the ``contentSchema`` of ``request``, see ``tests/fuzz/openapi_strategies.py``), so
  that they get through parsing and reach the method (Send with random recipients,
  headers, Extra, FutureRelease, base64 and multipart files...), and mutated variants
  (wrong types, huge values, odd unicode, deep nesting, key changes, broken JSON) in
  bodies with odd form encodings (part charsets, malformed parameters, extra fields).
  Header bytes that make a request invalid HTTP (NUL in Content-Type) are not sent: the
  HTTP server refuses those with a plain 400 before the webapi, as Go's does for mox.

Every answer is checked (:class:`Checker`): status below 500; the status, Content-Type and
JSON body as the document says (200: the response schema; 400: an ``Error`` with a
documented code); never code ``server`` (an internal error); no traceback text; a request
that fits the schema is never refused as ``protocol``.  401 and 429 are plain text, as
in mox (spec §1.4, golden transcripts) and as documented.  At the end the daemon must
still answer and its log hold no "Unhandled Error" or "Traceback".

Login: localserve's ``mox@localhost`` / ``moxmoxmox``.  Short form by default (well under
90 s); ``MOXTW_FUZZ_LONG=1`` (or ``HYPOTHESIS_PROFILE=long``) runs the long form.  The
number of cases is printed, and counted in ``tests.fuzz.COUNTS``.

The regression tests of the bugs these fuzzers found are at the end.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from jsonschema import Draft202012Validator, FormatChecker
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

import tests.fuzz
from moxtw.localserve import LOGIN, PASSWORD
from moxtw.webapi.errors import WebAPIError
from moxtw.webapi.http import parse_form
from moxtw.webapi.openapi import document, json_schema
from tests.fuzz import COUNTS, FUZZ
from tests.fuzz.openapi_strategies import MULTIPART, URLENCODED, RequestStrategies
from tests.helpers import Daemon, localserve_config
from tests.webapi.fixture import WebAPIFixture
from tests.webapi.test_openapi import Conformance

LONG = os.environ.get("MOXTW_FUZZ_LONG") == "1" or tests.fuzz.LONG
#: Examples per operation and generation mode (schemathesis).
SCHEMATHESIS_EXAMPLES = 300 if LONG else 25
#: Examples per method: requests that fit the schema, and mutated ones.
VALID_EXAMPLES = 1000 if LONG else 60
MUTATED_EXAMPLES = 1000 if LONG else 60
#: schemathesis' checks that apply (the issue: no 5xx, answers as documented); not those
#: that would flag mox-compatible leniency (positive_data_acceptance: schema-valid
#: strings in ``request`` are rarely valid JSON requests; negative_data_rejection: the
#: server, as mox, takes keys in any case and ignores trailing data).
SCHEMATHESIS_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Seconds for one HTTP request (the largest bodies are a few MB).
REQUEST_TIMEOUT = 60
#: Log lines that mean an exception escaped somewhere in the daemon.
BAD_LOG = ("Unhandled Error", "Unhandled error", "Traceback")


def fuzz_settings(examples: int) -> settings:
    return settings(
        FUZZ,
        max_examples=examples,
        derandomize=FUZZ.derandomize and not LONG,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


# --- checking answers ------------------------------------------------------------------------


class Checker:
    """Checks answers against the served document and collects what is wrong (so one run
    reports every problem, not only the first)."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.conformance = Conformance(doc)
        self.codes = set(doc["components"]["schemas"]["Error"]["properties"]["Code"]["enum"])
        self.problems: dict[str, str] = {}  # problem -> first request that showed it
        self.cases: Counter[str] = Counter()  # by "kind method status[/code]"
        self.lock = threading.Lock()

    def check(
        self, kind: str, method: str, path: str, sent: str, response: Any, *, schema_valid: bool = False
    ) -> dict[str, Any] | None:
        """Check the answer to ``method`` (HTTP) ``path`` (in the document); counted as
        ``"kind METHOD path status[/code]"``.  The JSON body if there is one.  An HTTP
        method the document does not list for the path is only checked for a status
        below 500 and no traceback (mox's answers to those vary: 405 text or JSON, 200)."""
        status = response.status_code
        ctype = response.headers.get("content-type")
        if isinstance(ctype, list):  # a schemathesis Response
            ctype = ctype[0]
        body = response.content
        problems = []
        value = None
        if status >= 500:
            problems.append(f"status {status}")
        documented = self.conformance.operation(path, method.lower()) is not None
        if documented:
            problems += self.conformance.answer_problems(path, method.lower(), status, ctype, body)
        if b"Traceback" in body or b'File "/' in body:
            problems.append("traceback text in the answer")
        if ctype is not None and ctype.startswith("application/json"):
            try:
                value = json.loads(body)
            except ValueError:
                problems.append("Content-Type JSON, body not JSON")
        label = f"{kind} {method} {path} {status}"
        if status == 400 and documented:
            if not isinstance(value, dict) or value.get("Code") not in self.codes:
                problems.append("400 without a JSON Error with a documented Code")
            else:
                label += "/" + value["Code"]
                if value["Code"] == "server":
                    problems.append(f"internal error (code server): {value.get('Message')}")
                if schema_valid and value["Code"] == "protocol":
                    problems.append(f"schema-valid request refused: {value.get('Message')}")
        if status in (401, 429) and not (ctype or "").startswith("text/plain"):
            problems.append(f"{status} not plain text (mox answers text)")
        with self.lock:
            self.cases[label] += 1
            for p in problems:
                key = f"{method} {path} {status}: {p[:300]}"
                self.problems.setdefault(key, sent[:600])
        return value

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def report(self, title: str) -> str:
        by_status: Counter[str] = Counter()
        for label, n in self.cases.items():
            by_status[label.split(" ")[-1]] += n
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items()))
        text = f"{title}: {self.total} cases ({summary})"
        if os.environ.get("MOXTW_FUZZ_REPORT"):
            text += "".join(f"\n  {label}: {n}" for label, n in sorted(self.cases.items()))
        return text

    def assert_clean(self, testcase: Any) -> None:
        if self.problems:
            lines = [f"{len(self.problems)} problem(s):"]
            for problem, sent in list(self.problems.items())[:30]:
                lines.append(f"- {problem}\n    request: {sent}")
            testcase.fail("\n".join(lines))


# --- the daemon ----------------------------------------------------------------------------


class LiveWebAPI:
    """A localserve daemon and a logged-in HTTP session to its webapi."""

    def __init__(self, testcase: TestCase) -> None:
        self.testcase = testcase
        directory = Path(testcase.mktemp()).resolve()
        directory.mkdir(parents=True)
        self.ports = localserve_config(directory, unlimited=True)
        self.daemon = Daemon(testcase, "localserve", "--dir", str(directory))
        self.base = f"http://127.0.0.1:{self.ports['http']}/webapi/"
        self.session = requests.Session()
        self.session.auth = (LOGIN, PASSWORD)
        testcase.addCleanup(self.session.close)

    async def start(self) -> dict[str, Any]:
        """Start the daemon; the OpenAPI document it serves."""
        self.daemon.start()
        await self.daemon.wait_for_port(self.ports["http"])
        return await deferToThread(self.fetch_document)

    def fetch_document(self) -> dict[str, Any]:
        for _ in range(200):  # the HTTP worker may still be starting
            try:
                r = requests.get(self.base + "openapi.json", timeout=REQUEST_TIMEOUT)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        else:
            self.testcase.fail(f"no answer from {self.base}openapi.json:\n{self.daemon.output[-3000:]}")
        self.testcase.assertEqual(r.status_code, 200)
        doc: dict[str, Any] = r.json()
        return doc

    def post(self, method: str, ctype: str, body: bytes) -> requests.Response:
        return self.session.post(
            self.base + "v0/" + method, data=body, headers={"Content-Type": ctype}, timeout=REQUEST_TIMEOUT
        )

    def call(self, method: str, request: dict[str, Any]) -> requests.Response:
        return self.session.post(self.base + "v0/" + method, data={"request": json.dumps(request)}, timeout=REQUEST_TIMEOUT)

    def seed(self) -> None:
        """Some stored messages (in Sent, and delivered to the Inbox), so that MsgIDs
        of the message methods exist."""
        png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(64))).decode()
        for i in range(4):
            r = self.call("Send", {
                "To": [{"Address": LOGIN}, {"Address": f"mox+{i}@localhost", "Name": "Mox Ünï"}],
                "Subject": f"seed {i}",
                "Text": "text ü\n" * (i + 1),
                "HTML": '<p>html</p><img src="cid:logo@x">',
                "InlineFiles": [{"Name": "logo.png", "ContentType": "image/png", "ContentID": "<logo@x>", "Data": png}],
                "AttachedFiles": [{"Name": "a.txt", "Data": base64.b64encode(b"attached").decode()}],
                "Extra": {"seed": str(i)},
                "SaveSent": True,
            })
            self.testcase.assertEqual(r.status_code, 200, r.text)

    async def finish(self, checker: Checker) -> None:
        """The daemon still answers, stops cleanly, and logged no unhandled exception."""
        self.testcase.assertFalse(self.daemon.proto.ended.called, "daemon died:\n" + self.daemon.output[-3000:])
        r = await deferToThread(self.call, "SuppressionList", {})
        self.testcase.assertEqual(r.status_code, 200, r.text)
        code = await self.daemon.stop()
        self.testcase.assertIn(code, (0, -signal.SIGTERM), self.daemon.output[-3000:])
        output = self.daemon.output
        for bad in BAD_LOG:
            at = output.find(bad)
            if at >= 0:
                checker.problems[f"{bad!r} in the daemon log"] = output[max(0, at - 500) : at + 2500]
        checker.assert_clean(self.testcase)


# --- schemathesis ---------------------------------------------------------------------------


class SchemathesisFuzz(TestCase):
    """schemathesis' generation against every operation of the served document."""

    timeout = 1800

    async def test_schemathesis(self) -> None:
        live = LiveWebAPI(self)
        doc = await live.start()
        checker = Checker(doc)
        await deferToThread(self.run_schemathesis, live, doc, checker)
        print("\n" + checker.report("schemathesis"))
        COUNTS["test_schemathesis.schemathesis"] += checker.total
        await live.finish(checker)
        # Every documented operation was called.
        ops = {" ".join(label.split(" ")[1:3]) for label in checker.cases}
        self.assertLessEqual({f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item}, ops)

    def run_schemathesis(self, live: LiveWebAPI, doc: dict[str, Any], checker: Checker) -> None:
        schema = schemathesis.openapi.from_dict(doc)
        failures: list[str] = []
        for result in schema.get_all_operations():
            op = result.ok()
            modes = [GenerationMode.POSITIVE]
            if op.method.upper() == "POST":
                modes.append(GenerationMode.NEGATIVE)
            self.run_coverage(live, checker, schema, op, modes, failures)
            for mode in modes:
                try:
                    self.run_operation(live, checker, op, mode, failures)
                except Unsatisfiable:
                    pass  # negative data for an operation with nothing to negate
        for f in failures[:10]:
            checker.problems.setdefault(f"schemathesis check: {f[:300]}", f)

    def run_case(self, live: LiveWebAPI, checker: Checker, kind: str, op: Any, case: Any, failures: list[str]) -> None:
        """Send one schemathesis case; check the answer with our checks and (for the
        operation's own HTTP method) schemathesis' checks."""
        response = case.call(
            base_url=live.base.rstrip("/"), session=live.session, allow_redirects=False, timeout=REQUEST_TIMEOUT
        )
        checker.check(kind, case.method.upper(), op.path, case.as_curl_command(), response)
        if case.method.upper() != op.method.upper():
            return
        try:
            case.validate_response(response, checks=SCHEMATHESIS_CHECKS)
        except Exception as e:
            failures.append(f"{kind} {op.label}: {str(e)[:1500]}")

    def run_coverage(
        self, live: LiveWebAPI, checker: Checker, schema: Any, op: Any, modes: list[GenerationMode], failures: list[str]
    ) -> None:
        """schemathesis' coverage phase: deterministic boundary and wrong-type cases, and
        other HTTP methods."""
        config = schema.config.generation_for(operation=op)
        for case in schema.iter_coverage_cases(op, generation_modes=modes, generation_config=config):
            self.run_case(live, checker, "st-coverage", op, case, failures)

    def run_operation(self, live: LiveWebAPI, checker: Checker, op: Any, mode: GenerationMode, failures: list[str]) -> None:
        kind = f"st-{mode.value}"

        @fuzz_settings(SCHEMATHESIS_EXAMPLES)
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            self.run_case(live, checker, kind, op, case, failures)

        run()


# --- requests from the document's request schemas ---------------------------------------


class DocumentFuzz(TestCase):
    """Requests generated from each method's request schema, valid-shaped and mutated."""

    timeout = 1800

    async def test_requests_from_document(self) -> None:
        live = LiveWebAPI(self)
        doc = await live.start()
        checker = Checker(doc)
        await deferToThread(live.seed)
        strategies = RequestStrategies(doc, long=LONG)
        await deferToThread(self.run_requests, live, strategies, checker)
        print("\n" + checker.report("document requests"))
        COUNTS["test_schemathesis.document"] += checker.total
        await live.finish(checker)
        # Valid-shaped requests of every method got through parsing to the method.
        for method in strategies.operations():
            reached = [
                label for label in checker.cases
                if label.startswith(f"valid POST /v0/{method} ") and not label.endswith("/protocol")
            ]
            self.assertTrue(reached, f"no valid-shaped {method} request reached the method")
        self.assertTrue(any(label.startswith("valid POST /v0/Send 200") for label in checker.cases))

    def run_requests(self, live: LiveWebAPI, strategies: RequestStrategies, checker: Checker) -> None:
        plausible = RequestStrategies(strategies.document, plausible=True)
        for method in strategies.operations():
            self.run_method(live, strategies, plausible, checker, method)

    def run_method(
        self, live: LiveWebAPI, strategies: RequestStrategies, plausible: RequestStrategies, checker: Checker, method: str
    ) -> None:
        def send(kind: str, request: str, data: st.DataObject, schema_valid: bool, what: str = "") -> None:
            ctype, body, how = data.draw(strategies.body(method, request, odd=not schema_valid), label="body")
            response = live.post(method, ctype, body)
            sent = f"{what} {how}: {body[:500]!r}".strip()
            checker.check(kind, "POST", f"/v0/{method}", sent, response, schema_valid=schema_valid)

        @fuzz_settings(VALID_EXAMPLES)
        @given(request=st.one_of(strategies.request(method), plausible.request(method)), data=st.data())
        def valid(request: dict[str, Any], data: st.DataObject) -> None:
            send("valid", json.dumps(request, ensure_ascii=data.draw(st.booleans())), data, True)

        @fuzz_settings(MUTATED_EXAMPLES)
        @given(mutation=strategies.mutated(method), data=st.data())
        def mutated(mutation: tuple[str, str], data: st.DataObject) -> None:
            send("mutated", mutation[1], data, False, what=mutation[0])

        valid()
        mutated()


# --- the strategies themselves --------------------------------------------------------------


class StrategiesFitDocument(SynchronousTestCase):
    """The request strategies make what the document describes (no daemon needed)."""

    def setUp(self) -> None:
        self.doc = json.loads(json.dumps(document("/webapi/")))
        self.strategies = RequestStrategies(self.doc)
        self.plausible = RequestStrategies(self.doc, plausible=True)

    def test_every_method_and_hint(self) -> None:
        methods = {p.rsplit("/", 1)[-1] for p, item in self.doc["paths"].items() if "post" in item}
        self.assertEqual(set(self.strategies.operations()), methods)
        # Every hint names a place in the document (none is left over from a rename).
        self.assertEqual(self.strategies.unused_hints(), set())
        self.assertEqual(self.plausible.unused_hints(), set())
        self.assertEqual(self.strategies.file_fields("Send"), ["alternativefile", "inlinefile", "attachedfile"])
        self.assertEqual(self.strategies.file_fields("MessageGet"), [])

    @fuzz_settings(200)
    @given(data=st.data())
    def test_requests_fit_schema(self, data: st.DataObject) -> None:
        strategies = data.draw(st.sampled_from([self.strategies, self.plausible]))
        method = data.draw(st.sampled_from(sorted(strategies.operations())))
        name = strategies.request_schema(method)["$ref"].rsplit("/", 1)[-1]
        validator = Draft202012Validator(json_schema(name), format_checker=FormatChecker())
        request = data.draw(strategies.request(method))
        self.assertEqual([e.message for e in validator.iter_errors(request)], [])

    @fuzz_settings(100)
    @given(data=st.data())
    def test_bodies_carry_request(self, data: st.DataObject) -> None:
        method = data.draw(st.sampled_from(sorted(self.strategies.operations())))
        request = json.dumps(data.draw(self.strategies.request(method)))
        ctype, body, _ = data.draw(self.strategies.body(method, request))
        self.assertIn(ctype.split(";")[0], (URLENCODED, MULTIPART))
        form = parse_form(SimpleNamespace(original_content_type=ctype.encode(), content=io.BytesIO(body)))
        self.assertEqual(form.fields["request"], [request])
        for upload in form.files:
            self.assertIn(upload.field, self.strategies.file_fields(method))


# --- regressions: what these fuzzers found ---------------------------------------------------


def multipart(parts: list[bytes], params: bytes = b"") -> tuple[bytes, bytes]:
    """(Content-Type, body) of a multipart/form-data body with boundary ``B``."""
    body = b"".join(b"--B\r\n" + p + b"\r\n" for p in parts) + b"--B--\r\n"
    return b"multipart/form-data; boundary=B" + params, body


REQUEST_PART = b'Content-Disposition: form-data; name="request"\r\n'
SEND = b'{"To": [{"Address": "mox@localhost"}], "Text": "hi"}'

#: Bodies that made the webapi answer 400 ``server`` ("unhandled error") with a traceback
#: in the log, from the stdlib's header parser and codec lookup in moxtw/webapi/http.py.
CRASHERS = {
    # LookupError: unknown encoding
    "unknown charset of the request part": multipart([REQUEST_PART + b"Content-Type: text/plain; charset=bogus\r\n\r\n" + SEND]),
    # ValueError: embedded null character
    "NUL in the request part's charset": multipart([REQUEST_PART + b'Content-Type: text/plain; charset="utf\x00-8"\r\n\r\n' + SEND]),
    # IndexError in email._header_value_parser (malformed RFC 2231 parameter)
    "RFC 2231 parameter in the request part": multipart([REQUEST_PART + b"Content-Type: text/plain; x*=\"'\r\n\r\n" + SEND]),
    "RFC 2231 parameter in a file part": multipart([
        REQUEST_PART + b"\r\n" + SEND,
        b'Content-Disposition: form-data; name="attachedfile"; filename="a.txt"\r\nContent-Type: text/plain; x*="\'\r\n\r\ndata',
    ]),
    "RFC 2231 parameter in the request's Content-Type": multipart([REQUEST_PART + b"\r\n" + SEND], b"; x*=\"'"),
    # UnicodeEncodeError: boundary*= decoding beyond latin-1
    "RFC 2231 boundary beyond latin-1": (b"multipart/form-data; boundary*=utf-8''%ff", b"--\xff\r\n\r\n--\xff--\r\n"),
}


def parse(ctype: bytes, body: bytes) -> Any:
    return parse_form(SimpleNamespace(original_content_type=ctype, content=io.BytesIO(body)))


class MultipartRegressions(SynchronousTestCase):
    """parse_form on the bodies that crashed it: a form, or a ``protocol`` error."""

    def test_charset_not_applied(self) -> None:
        # As Go's ReadForm: a value part's bytes are kept (read as UTF-8), whatever its
        # charset says, so an unknown or malformed charset is no error.
        for name in ("unknown charset of the request part", "NUL in the request part's charset"):
            self.assertEqual(parse(*CRASHERS[name]).fields, {"request": [SEND.decode()]}, name)
        ctype, body = multipart([REQUEST_PART + b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\n\xc3\xa9"])
        self.assertEqual(parse(ctype, body).fields, {"request": ["é"]})

    def test_malformed_part_content_type(self) -> None:
        # A Content-Type the stdlib cannot parse counts as absent: the field is read, the
        # file kept (its type is then detected).
        form = parse(*CRASHERS["RFC 2231 parameter in the request part"])
        self.assertEqual(form.fields, {"request": [SEND.decode()]})
        form = parse(*CRASHERS["RFC 2231 parameter in a file part"])
        self.assertEqual(form.fields, {"request": [SEND.decode()]})
        self.assertEqual([(f.field, f.filename, f.content_type, f.data) for f in form.files], [("attachedfile", "a.txt", None, b"data")])

    def test_malformed_request_content_type(self) -> None:
        with self.assertRaises(WebAPIError) as e:
            parse(*CRASHERS["RFC 2231 parameter in the request's Content-Type"])
        self.assertEqual((e.exception.code, e.exception.message), ("protocol", "parsing form: no multipart boundary param in Content-Type"))
        with self.assertRaises(WebAPIError) as e:
            parse(*CRASHERS["RFC 2231 boundary beyond latin-1"])
        self.assertEqual((e.exception.code, e.exception.message), ("protocol", "parsing form: multipart: NextPart: EOF"))


class MultipartRegressionsLive(TestCase):
    """The same bodies through the real webapi: JSON answers, no internal error."""

    async def test_answers(self) -> None:
        api = await WebAPIFixture(self).start()
        expected = {
            "unknown charset of the request part": (200, None),
            "NUL in the request part's charset": (200, None),
            "RFC 2231 parameter in the request part": (200, None),
            "RFC 2231 parameter in a file part": (200, None),
            "RFC 2231 parameter in the request's Content-Type": (400, "protocol"),
            "RFC 2231 boundary beyond latin-1": (400, "protocol"),
        }
        for name, (ctype, body) in CRASHERS.items():
            reply = await api.post("v0/Send", data=body, headers={b"Content-Type": [ctype]})
            self.assertEqual(reply.headers.getRawHeaders(b"content-type"), [b"application/json; charset=utf-8"], name)
            status, code = expected[name]
            self.assertEqual((reply.status, reply.json.get("Code")), (status, code), f"{name}: {reply.body!r}")
