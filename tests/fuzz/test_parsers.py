"""Property tests for the parsers: addresses and domains, the webapi JSON decoder,
``X-Mox-Extra-*`` headers, DSN/ARF reports, the MIME parser and the configuration loader.

Each parser either gives a consistent result or raises its documented error type, never
another exception, whatever the input: random text, and mutations of valid inputs (the DSN
corpus, composed messages, the localserve configuration).
"""

from __future__ import annotations

import base64
import math
import quopri
import re
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from moxtw import message as m
from moxtw.address import (
    AddressError,
    DomainError,
    base_address,
    canonical_localpart,
    domain_to_ascii,
    go_lower,
    go_quote,
    parse_address,
    parse_domain,
    parse_localpart,
)
from moxtw.config import Config, ConfigError, parse_config
from moxtw.dsnparse import (
    ACTIONS,
    DeliveryReport,
    FeedbackReport,
    ReportError,
    parse_report,
)
from moxtw.localserve import ensure_config
from moxtw.smtp.extra import DuplicateExtraKey, canonical_header_key, header_fields, parse_extra
from moxtw.webapi.gojson import GoJSONError, decode_request
from tests.fuzz import FUZZ, counted, scaled

CORPUS = Path(__file__).parent.parent / "dsn_corpus"
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.eml"))

# --- strategies ---------------------------------------------------------------------------

ATEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~"
atoms = st.text(alphabet=ATEXT, min_size=1, max_size=12)
localparts = st.lists(atoms, min_size=1, max_size=3).map(".".join)
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)
#: Printable text without surrogates (what a JSON client can send, minus lone surrogates).
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
#: Localparts with non-ASCII letters (SMTPUTF8) and quoted localparts with spaces/specials.
utf8_atoms = st.text(
    alphabet=st.sampled_from("abcxyzäöüßéèçñøåæœ日本語пример☺"), min_size=1, max_size=8
)
quoted_localparts = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=16)
idn_labels = st.sampled_from(["bücher", "пример", "例え", "münchen", "xn--bcher-kva", "ドメイン"])
any_localpart = st.one_of(localparts, utf8_atoms, quoted_localparts)
any_domain = st.one_of(domains, st.lists(st.one_of(labels, idn_labels), min_size=1, max_size=3).map(".".join))


def quote_localpart(lp: str) -> str:
    if re.fullmatch(r"[^.\s\"\\(),:;<>@\[\]\x00-\x1f\x7f]+(\.[^.\s\"\\(),:;<>@\[\]\x00-\x1f\x7f]+)*", lp):
        return lp
    return '"' + lp.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- addresses ----------------------------------------------------------------------------


class AddressProperties(SynchronousTestCase):
    @FUZZ
    @given(localparts, domains)
    @counted
    def test_round_trip(self, local: str, domain: str) -> None:
        address = parse_address(f"{local}@{domain}")
        self.assertEqual(address.domain, domain)
        self.assertEqual(parse_address(str(address)), address)

    @FUZZ
    @given(any_localpart, any_domain)
    @counted
    def test_round_trip_unicode_and_quoted(self, local: str, domain: str) -> None:
        """Format (Unicode and ASCII domain) and parse again: the same address."""
        try:
            address = parse_address(f"{quote_localpart(local)}@{domain}")
        except AddressError:
            assume(False)
        self.assertEqual(address.localpart, __import__("unicodedata").normalize("NFC", local))
        self.assertEqual(parse_address(str(address)), address)
        self.assertEqual(parse_address(address.to_ascii()), address)
        self.assertTrue(address.ascii_domain.isascii())
        self.assertEqual(address.smtp_form(True), str(address))

    @FUZZ
    @given(localparts, domains)
    @counted
    def test_base_address_is_idempotent(self, local: str, domain: str) -> None:
        base = base_address(parse_address(f"{local}@{domain}"))
        try:
            again = base_address(parse_address(base))
        except AddressError:
            # Only a localpart that normalises to nothing ("-x", "+x", ".") has no parsable base.
            self.assertTrue(base.startswith("@"), base)
            return
        self.assertEqual(again, base)

    @FUZZ
    @given(unicode_text, st.lists(st.sampled_from(["+", "-", "_", "."]), max_size=2), st.booleans())
    @counted
    def test_canonical_localpart_is_idempotent(self, local: str, seps: list[str], case: bool) -> None:
        once = canonical_localpart(local, seps, case)
        self.assertEqual(canonical_localpart(once, seps, case), once)
        for sep in seps:
            self.assertNotIn(sep, once)
        self.assertEqual(go_lower(go_lower(local)), go_lower(local))
        self.assertEqual(len(go_lower(local)), len(local))

    @FUZZ
    @given(st.text(max_size=40))
    @example("\udc80@x")
    @example('"\\\x7f"@x')
    @example("a@xn--")
    @example("a@xn--a.b")
    @example("a@1.2.3.4")
    @example("a@b.")
    @example('"' + "a" * 200 + '"@x')
    @counted
    def test_never_crashes(self, text: str) -> None:
        try:
            parse_address(text)
        except AddressError as e:
            self.assertTrue(str(e).startswith("parsing address "))
            self.assertTrue(str(e).endswith(e.detail))

    @FUZZ
    @given(st.text(alphabet=st.sampled_from('ab.@"\\ +-\x00\x7féü日-xn'), max_size=30))
    @counted
    def test_never_crashes_near_valid(self, text: str) -> None:
        """Inputs made of the characters that matter to the grammar."""
        try:
            address = parse_address(text)
        except AddressError:
            return
        self.assertEqual(parse_address(str(address)), address)

    @FUZZ
    @given(st.one_of(st.text(max_size=30), any_domain))
    @counted
    def test_domain_normalisation_is_idempotent(self, text: str) -> None:
        try:
            domain = parse_domain(text)
        except DomainError as e:
            self.assertTrue(str(e))
            return
        self.assertEqual(parse_domain(domain), domain)
        ascii_form = domain_to_ascii(domain)
        self.assertTrue(ascii_form.isascii())
        self.assertEqual(parse_domain(ascii_form), domain)

    @FUZZ
    @given(st.text(max_size=30))
    @counted
    def test_localpart_errors(self, text: str) -> None:
        try:
            lp = parse_localpart(text)
        except ValueError as e:
            self.assertTrue(str(e).startswith("invalid localpart"))
            return
        self.assertEqual(parse_localpart(quote_localpart(lp)), lp)

    @FUZZ
    @given(st.text(max_size=30))
    @counted
    def test_go_quote_is_one_printable_line(self, text: str) -> None:
        quoted = go_quote(text)
        self.assertTrue(quoted.startswith('"') and quoted.endswith('"'))
        self.assertFalse(any(c < " " or c == "\x7f" for c in quoted), quoted)
        quoted.encode("utf-8")


class GoJSONProperties(SynchronousTestCase):
    @FUZZ
    @given(st.text(max_size=60))
    @counted
    def test_decoder_never_crashes(self, raw: str) -> None:
        try:
            decode_request("Send", raw)
        except GoJSONError as e:
            self.assertTrue(str(e))


# --- X-Mox-Extra ------------------------------------------------------------------------------

TOKEN = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
extra_keys = st.one_of(
    st.text(alphabet=TOKEN, max_size=12),
    st.text(alphabet=st.sampled_from("ab-☺é_"), max_size=6),
)
#: Header values as a submitter writes them: no control characters, single spaces inside.
extra_values = st.lists(
    st.text(alphabet=st.characters(min_codepoint=0x21, blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")), min_size=1, max_size=10),
    max_size=5,
).map(" ".join)


def fold(name: str, value: str, folds: list[bool]) -> str:
    """``name: value`` with some of the spaces in value turned into CRLF + space/tab."""
    words = value.split(" ")
    out = words[0]
    for i, w in enumerate(words[1:]):
        out += ("\r\n\t" if folds[i % len(folds)] else " ") if folds else " "
        out += w
    return f"{name}: {out}\r\n"


class ExtraProperties(SynchronousTestCase):
    @FUZZ
    @given(
        st.dictionaries(extra_keys, extra_values, max_size=6),
        st.lists(st.booleans(), max_size=8),
        st.lists(st.sampled_from(["X-Mox-Extra-", "x-mox-extra-", "X-MOX-EXTRA-"]), min_size=1, max_size=3),
    )
    @counted
    def test_round_trip(self, extra: dict[str, str], folds: list[bool], prefixes: list[str]) -> None:
        """Extra → X-Mox-Extra-* headers (any prefix case, folded values) → the same Extra,
        with keys canonicalised as Go's textproto does."""
        canonical: dict[str, str] = {}
        for k, v in extra.items():
            canonical.setdefault(canonical_header_key("X-Mox-Extra-" + k), v)
        assume(len(canonical) == len(extra))
        lines = "From: a@b\r\n"
        expected: dict[str, str] = {}
        for i, (k, v) in enumerate(extra.items()):
            prefix = prefixes[i % len(prefixes)]
            name = prefix + k
            lines += fold(name, v, folds)
            full = canonical_header_key(name)
            if full.startswith("X-Mox-Extra-"):
                expected[full[len("X-Mox-Extra-") :]] = v
            else:
                # A name with a non-token character is not canonicalised: only the exact
                # prefix is recognised (spec §8).
                self.assertNotEqual(prefix, "X-Mox-Extra-")
        data = (lines + "\r\nbody\r\n").encode("utf-8")
        self.assertEqual(parse_extra(header_fields(data)), expected or None)

    @FUZZ
    @given(extra_keys, extra_values, extra_values)
    @counted
    def test_duplicate_key_rejected(self, key: str, v1: str, v2: str) -> None:
        data = f"X-Mox-Extra-{key}: {v1}\r\nX-MOX-EXTRA-{key.upper()}: {v2}\r\n\r\n".encode()
        if canonical_header_key("X-Mox-Extra-" + key) != canonical_header_key("X-MOX-EXTRA-" + key.upper()):
            return  # non-token names are not canonicalised: two different keys (or none)
        with self.assertRaises(DuplicateExtraKey) as cm:
            parse_extra(header_fields(data))
        self.assertIn("duplicate x-mox-extra- key", str(cm.exception))
        self.assertEqual(cm.exception.key, canonical_header_key("X-Mox-Extra-" + key)[len("X-Mox-Extra-") :])

    @FUZZ
    @given(st.binary(max_size=300))
    @example(b"\r\n\r\nX-Mox-Extra-A: b\r\n")
    @example(b" folded first\r\nX-Mox-Extra-A: b")
    @counted
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Any header block gives fields and an Extra or a DuplicateExtraKey, nothing else;
        values are trimmed, single-line and valid UTF-8."""
        fields = header_fields(data)
        for name, value in fields:
            self.assertNotIn("\r\n", value)
            self.assertEqual(value, value.strip(" \t"))
            (name + value).encode("utf-8")
        try:
            extra = parse_extra(fields)
        except DuplicateExtraKey:
            return
        for key, value in (extra or {}).items():
            self.assertIn(("X-Mox-Extra-" + key, value), [(canonical_header_key(n), v) for n, v in fields])


# --- DSN and ARF ------------------------------------------------------------------------------


def xtext(s: str) -> str:
    """RFC 3461 xtext, with RFC 6533's ``\\x{HEX}`` for non-ASCII."""
    out = []
    for c in s:
        if ord(c) > 0x7E:
            out.append(f"\\x{{{ord(c):X}}}")
        elif c in "+=\\" or ord(c) < 0x21:
            out.append(f"+{ord(c):02X}")
        else:
            out.append(c)
    return "".join(out)


statuses = st.tuples(st.sampled_from("245"), st.integers(0, 7), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}.{t[2]}")
words = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="()"), min_size=1, max_size=12)
texts = st.lists(words, max_size=12).map(" ".join)


@st.composite
def recipient_blocks(draw: Any) -> dict[str, Any]:
    status = draw(statuses)
    cls = int(status[0])
    return {
        "address": draw(st.one_of(st.builds(lambda lp, d: f"{lp}@{d}", localparts, domains), st.builds(lambda lp, d: f"{lp}@{d}", utf8_atoms, domains))),
        "action": draw(st.sampled_from(ACTIONS)),
        "action_case": draw(st.sampled_from([str.lower, str.upper, str.title])),
        "status": status,
        "comment": draw(st.sampled_from(["", " (mailbox unavailable)", " (x)"])),
        "code": draw(st.none() | st.integers(0, 99).map(lambda n: cls * 100 + n)),
        "text": draw(texts),
        "diag_type": draw(st.sampled_from(["smtp; ", "smtp;", "X-Postfix; ", "SMTP ; "])),
    }


class DSNProperties(SynchronousTestCase):
    def check_consistent(self, report: object) -> None:
        """What every caller relies on, whatever the input was."""
        if report is None:
            return
        if isinstance(report, DeliveryReport):
            self.assertTrue(report.recipients)
            for r in report.recipients:
                self.assertIn(r.action, ACTIONS)
                self.assertTrue(r.status)
                self.assertTrue(0 <= r.code <= 999)
                enhanced = r.enhanced_code
                if r.secode:
                    self.assertRegex(enhanced, r"^\d\.")
                for s in (r.final_recipient, r.status, r.diagnostic, r.secode, enhanced):
                    s.encode("utf-8")  # storable: no lone surrogates
            self.assertIn(report.primary(), report.recipients)
            report.reporting_mta.encode("utf-8")
            return
        self.assertIsInstance(report, FeedbackReport)
        assert isinstance(report, FeedbackReport)
        self.assertTrue(report.feedback_type)
        for s in (report.feedback_type, report.user_agent, report.original_mail_from, report.original_message_id,
                  report.original_return_path, *report.original_rcpt_to):
            s.encode("utf-8")

    @FUZZ
    @given(
        st.lists(recipient_blocks(), min_size=1, max_size=4),
        domains,
        st.sampled_from(["7bit", "base64", "quoted-printable"]),
        st.sampled_from(["\r\n", "\n"]),
        st.booleans(),
        st.sampled_from(["message/delivery-status", "message/global-delivery-status"]),
    )
    @counted
    def test_generated_dsn_round_trip(self, blocks: list[dict[str, Any]], mta: str, cte: str, eol: str,
                                      with_text: bool, status_type: str) -> None:
        """A DSN built from random recipients parses back to exactly those recipients."""
        status_lines = [f"Reporting-MTA: dns; {mta}", "Arrival-Date: Thu, 16 Nov 2023 13:59:00 +0000", ""]
        for b in blocks:
            status_lines.append(f"Final-Recipient: rfc822; {xtext(b['address'])}")
            status_lines.append(f"Action: {b['action_case'](b['action'])}")
            status_lines.append(f"Status: {b['status']}{b['comment']}")
            if b["code"] is not None:
                diag = f"{b['code']} {b['status']} {b['text']}".strip()
                status_lines.append(f"Diagnostic-Code: {b['diag_type']}{diag}")
            status_lines.append("")
        status_text = "\r\n".join(status_lines).encode("utf-8")
        if cte == "base64":
            body = base64.encodebytes(status_text).replace(b"\n", b"\r\n")
        elif cte == "quoted-printable":
            body = quopri.encodestring(status_text).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        else:
            body = status_text
        parts = []
        if with_text:
            parts.append(b"Content-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n")
        parts.append(f"Content-Type: {status_type}\r\nContent-Transfer-Encoding: {cte}\r\n\r\n".encode() + body)
        parts.append(b"Content-Type: text/rfc822-headers\r\n\r\nMessage-Id: <x@y>\r\n")
        msg = (
            b"From: MAILER-DAEMON@" + mta.encode() + b"\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/report; report-type=delivery-status; boundary="BOUND"\r\n\r\n'
            + b"".join(b"--BOUND\r\n" + p + b"\r\n" for p in parts)
            + b"--BOUND--\r\n"
        )
        report = parse_report(msg.replace(b"\r\n", eol.encode()))
        assert isinstance(report, DeliveryReport), report
        self.check_consistent(report)
        self.assertEqual(report.reporting_mta, mta)
        self.assertEqual(len(report.recipients), len(blocks))
        for got, b in zip(report.recipients, blocks, strict=True):
            self.assertEqual(got.final_recipient, b["address"])
            self.assertEqual(got.action, b["action"])
            self.assertEqual(got.status, b["status"])
            cls = int(b["status"][0])
            if b["code"] is not None:
                self.assertEqual(got.diagnostic, f"{b['code']} {b['status']} {b['text']}".strip())
                self.assertEqual((got.code, got.secode), (b["code"], b["status"][2:]))
            else:
                self.assertEqual(got.diagnostic, "")
                self.assertEqual((got.code, got.secode), (cls * 100, b["status"][2:]) if cls in (4, 5) else (0, ""))
            if got.secode:
                self.assertEqual(got.enhanced_code, b["status"])
        primary = report.primary()
        self.assertEqual(primary.action, min((b["action"] for b in blocks), key=ACTIONS.index))

    @FUZZ
    @given(
        st.sampled_from(["abuse", "fraud", "virus", "other", "not-spam", "Abuse"]),
        texts,
        st.builds(lambda lp, d: f"{lp}@{d}", localparts, domains),
        st.lists(st.builds(lambda lp, d: f"{lp}@{d}", localparts, domains), max_size=3),
        st.builds(lambda lp, d: f"<{lp}@{d}>", localparts, domains),
        st.sampled_from(["message/rfc822", "text/rfc822-headers"]),
    )
    @counted
    def test_generated_arf_round_trip(self, ftype: str, agent: str, mail_from: str, rcpts: list[str],
                                      msgid: str, returned: str) -> None:
        fields = [f"Feedback-Type: {ftype}", f"User-Agent: {agent}".rstrip(), "Version: 1",
                  f"Original-Mail-From: <{mail_from}>"]
        fields += [f"Original-Rcpt-To: <{r}>" for r in rcpts]
        msg = (
            "From: fbl@x.test\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/report; report-type=feedback-report; boundary="B"\r\n\r\n'
            "--B\r\nContent-Type: text/plain\r\n\r\nabuse report\r\n"
            "--B\r\nContent-Type: message/feedback-report\r\n\r\n" + "\r\n".join(fields) + "\r\n\r\n"
            f"--B\r\nContent-Type: {returned}\r\n\r\n"
            f"Return-Path: <{mail_from}>\r\nFrom: a@b\r\nMessage-ID: {msgid}\r\nSubject: hi\r\n\r\nbody\r\n"
            "--B--\r\n"
        ).encode()
        report = parse_report(msg)
        assert isinstance(report, FeedbackReport), report
        self.check_consistent(report)
        self.assertEqual(report.feedback_type, ftype.lower())
        self.assertEqual(report.user_agent, agent.strip())
        self.assertEqual(report.original_mail_from, mail_from)
        self.assertEqual(report.original_rcpt_to, tuple(rcpts))
        self.assertEqual(report.original_message_id, msgid)
        self.assertEqual(report.original_return_path, mail_from)

    @scaled(3)
    @given(st.data())
    @example(("postfix_bounce.eml", [("insert", 0.5, b"\\x{FFFFFF}")]))
    @counted
    def test_mutated_corpus(self, data: Any) -> None:
        """Mutations of the corpus give a consistent result, None, or ReportError."""
        if isinstance(data, tuple):  # the explicit example
            name, mutations = data
        else:
            name = data.draw(st.sampled_from(CORPUS_FILES))
            mutations = data.draw(st.lists(mutation, min_size=1, max_size=6))
        raw = (CORPUS / name).read_bytes().replace(b"FROMID", b"abc").replace(b"\n", b"\r\n")
        for mut in mutations:
            raw = mutate(raw, mut)
        try:
            report = parse_report(raw)
        except ReportError as e:
            self.assertTrue(str(e))
            return
        self.check_consistent(report)


# Byte strings that matter to the DSN/ARF/MIME parsers, spliced into valid messages.
TOKENS = [
    b"\\x{FFFFFF}", b"\\x{D800}", b"\\x{110000}", b"+ZZ", b"+2B", b"=?utf-8?q?a=0D=0Ab?=", b"=?x?b?!!?=",
    b"Content-Transfer-Encoding: base64\r\n", b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Type: message/delivery-status\r\n", b"Content-Type: message/feedback-report\r\n",
    b"Content-Type: multipart/report; boundary=\"x\"\r\n", b"boundary=", b"\r\n--", b"--\r\n", b"\x00", b"\xff\xfe",
    b"\xc3", b": ", b"\r\n\r\n", b"\n\n", b"\r\n ", b"Action: failed\r\n", b"Action: Delayed\r\n", b"Status: 5.",
    b"Status: 4.4.7 (x)\r\n", b"Diagnostic-Code: smtp; 550", b"Diagnostic-Code: smtp;999-9.9.9", b"smtp;",
    b"Final-Recipient: rfc822;", b"Original-Rcpt-To: <", b"Feedback-Type: \r\n", b"charset=hex", b"charset=idna",
    b"=\r\n", b"=ZZ", b"====", b"\xe6\x97\xa5", b"Message-ID: <\xff@x>\r\n", b"Return-Path: <>\r\n",
]

mutation = st.one_of(
    st.tuples(st.just("delete"), st.floats(0, 1), st.integers(1, 40)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.one_of(st.sampled_from(TOKENS), st.binary(min_size=1, max_size=8))),
    st.tuples(st.just("duplicate_line"), st.floats(0, 1), st.integers(1, 3)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("lf"), st.just(0.0), st.just(0)),
    st.tuples(st.just("case"), st.floats(0, 1), st.integers(1, 60)),
    st.tuples(st.just("base64_body"), st.floats(0, 1), st.just(0)),
)


def mutate(raw: bytes, mut: tuple[str, float, Any]) -> bytes:
    kind, where, arg = mut
    pos = int(where * len(raw))
    if kind == "delete":
        return raw[:pos] + raw[pos + arg :]
    if kind == "insert":
        return raw[:pos] + arg + raw[pos:]
    if kind == "duplicate_line":
        lines = raw.split(b"\r\n")
        i = int(where * (len(lines) - 1))
        return b"\r\n".join(lines[: i + 1] + [lines[i]] * arg + lines[i + 1 :])
    if kind == "truncate":
        return raw[:pos]
    if kind == "lf":
        return raw.replace(b"\r\n", b"\n")
    if kind == "case":
        return raw[:pos] + raw[pos : pos + arg].swapcase() + raw[pos + arg :]
    if kind == "base64_body":
        # Base64-encode the rest of the message after a part header, marking it so.
        head, sep, rest = raw[pos:].partition(b"\r\n\r\n")
        if not sep:
            return raw
        return raw[:pos] + head + b"\r\nContent-Transfer-Encoding: base64" + sep + base64.encodebytes(rest)
    raise AssertionError(kind)


# --- the MIME parser (MessageGet, incoming webhooks) ---------------------------------------


class MessageParserProperties(SynchronousTestCase):
    def check_parse(self, data: bytes) -> None:
        root = m.parse(data)
        m.structure(root)
        m.envelope(root)
        m.readable_parts(root)
        m.is_automated(root, "")
        stack = [root]
        while stack:
            p = stack.pop()
            self.assertTrue(p.header_offset <= p.body_offset <= p.end_offset <= len(data))
            p.content()
            p.content_utf8()
            p.disposition_filename()
            stack.extend(p.parts)

    @scaled(2)
    @given(st.data())
    @counted
    def test_mutated_messages(self, data: Any) -> None:
        """Mutated corpus messages: parse, structure, envelope and readable parts never
        raise (a broken structure is one opaque part)."""
        name = data.draw(st.sampled_from(CORPUS_FILES))
        raw = (CORPUS / name).read_bytes().replace(b"\n", b"\r\n")
        for mut in data.draw(st.lists(mutation, min_size=1, max_size=6)):
            raw = mutate(raw, mut)
        self.check_parse(raw)

    @FUZZ
    @given(st.sampled_from(["hex", "rot13", "idna", "punycode", "undefined", "base64", "zlib", "utf-16", "x-unknown",
                            "utf-7", "unicode_escape", "uu", "quopri", "bz2", "utf-8\x00"]),
           st.binary(max_size=40))
    @example("idna", b"\xff")
    @counted
    def test_any_charset(self, charset: str, body: bytes) -> None:
        """Charsets naming Python codecs that are not text encodings (or that cannot
        decode with "replace") leave the text as it is instead of failing."""
        data = (
            f"From: =?{charset}?q?a=FF?= <a@b>\r\nSubject: =?{charset}?b?/w==?=\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n"
            f"Content-Disposition: attachment; filename*={charset}''%FF%FE\r\n\r\n"
        ).encode() + body
        self.check_parse(data)

    @FUZZ
    @given(st.text(max_size=60))
    @example("=?idna?q?=FF?=")
    @example("=?undefined?b?QQ==?=")
    @counted
    def test_decode_words(self, text: str) -> None:
        m.decode_words(text)

    @FUZZ
    @given(st.text(alphabet=st.sampled_from("ab/;=*'\"% \t\\0123x-_utf8idnahex"), max_size=40))
    @example("text/plain; a*=idna''%FF")
    @example("text/plain; a*0*=undefined''%41")
    @counted
    def test_parse_media_type(self, text: str) -> None:
        try:
            mediatype, params = m.parse_media_type(text)
        except ValueError:
            return
        self.assertEqual(mediatype, mediatype.lower())
        for k in params:
            self.assertEqual(k, k.lower())


# --- configuration ---------------------------------------------------------------------------

_TEMP = Path(tempfile.mkdtemp(prefix="moxtw-fuzz-config-"))
_CONFIG_PATH, _ = ensure_config(_TEMP)
BASE_TEXT = _CONFIG_PATH.read_text()


def _toml_string(s: str) -> str:
    out = ['"']
    for c in s:
        if c == '"':
            out.append('\\"')
        elif c == "\\":
            out.append("\\\\")
        elif c < " " or c == "\x7f":
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, datetime | date):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_string(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document: top-level keys, each value inline (tables as inline tables)."""
    return "".join(f"{_toml_string(k)} = {toml_value(v)}\n" for k, v in doc.items())


toml_scalars = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
    st.sampled_from(["", "0", "72h", "1h30m", "-1s", "10MiB", "100 GB", "~", "~nosuchuser_zz/x", "~/x", "/dev/null",
                     "tcp:0", "tcp:99999", "unix:/nonexistent/x", "ssl:443", "whsec_", "whsec_AAAA", "http://x",
                     "ftp://x", "[::1]:53", "127.0.0.1:", "1.2.3.4:99999999", "x@localhost", "@localhost", "@",
                     "localhost", "mox", "xn--", "a\x00b", "1" * 5000, "²", "٣MiB", "5000000000000000000000h"]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, -1, 65535, 65536, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8), children, max_size=3),
    ),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _names(path: tuple[Any, ...]) -> str:
    """A key path as the loader writes it: ``a.b[0].c``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


class ConfigProperties(SynchronousTestCase):
    def load(self, text: str) -> Config:
        return parse_config(text, base_dir=_TEMP, source=_CONFIG_PATH)

    def test_base_config_loads(self) -> None:
        """The documents the mutations start from are valid, also re-serialised."""
        import tomllib

        self.load(BASE_TEXT)
        self.load(to_toml(tomllib.loads(BASE_TEXT)))

    @scaled(3)
    @given(st.data())
    @example(("set", ("data_dir",), "~nosuchuser_zz/x"))
    @example(("set", ("data_dir",), "a\x00b"))
    @example(("set", ("dns", "nameservers"), ["127.0.0.1:99999"]))
    @example(("set", ("webhooks", "timeout"), "1" * 400 + "h"))
    @counted
    def test_mutated_config(self, data: Any) -> None:
        """Random changes to a valid configuration (values of other types, odd strings,
        removed keys, unknown keys, whole tables replaced): the loader gives a Config or a
        ConfigError whose problems each start with a key path of the document, never
        another exception."""
        import tomllib

        doc = tomllib.loads(BASE_TEXT)
        touched: set[str] = set()
        if isinstance(data, tuple):  # explicit example
            self._apply(doc, data)
            touched.add(_names(data[1]))
        else:
            for _ in range(data.draw(st.integers(1, 4))):
                paths = [p for p in _paths(doc) if p]
                path = data.draw(st.sampled_from(paths))
                kind = data.draw(st.sampled_from(["set", "set", "delete", "unknown"]))
                self._apply(doc, (kind, path, data.draw(toml_values)))
                touched.add(_names(path))
        text = to_toml(doc)
        try:
            reparsed = tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            assume(False)  # our serialiser's limits (e.g. a huge integer), not the loader's
        known = {_names(p) for p in _paths(reparsed) if p} | touched
        try:
            self.load(text)
        except ConfigError as e:
            self.assertTrue(e.problems)
            for problem in e.problems:
                path = problem.split(": ", 1)[0]
                self.assertTrue(
                    any(path == k or path.startswith(k + ".") or path.startswith(k + "[") or k.startswith(path) for k in known),
                    (problem, sorted(known)),
                )
        # No other exception type: anything else fails the test with its traceback.

    def _apply(self, doc: dict[str, Any], mut: tuple[str, tuple[Any, ...], Any]) -> None:
        kind, path, value = mut
        try:
            parent = _get(doc, path[:-1])
            key = path[-1]
            if kind == "set":
                parent[key] = value
            elif kind == "delete":
                del parent[key]
            else:
                target = parent[key]
                if isinstance(target, dict):
                    target["unknown_" + str(len(target))] = value
                else:
                    parent[key] = value
        except (KeyError, IndexError, TypeError):
            pass

    @FUZZ
    @given(st.text(max_size=200))
    @counted
    def test_random_text(self, text: str) -> None:
        """Random text (mostly not TOML): ConfigError, never another exception."""
        with self.assertRaises(ConfigError):
            self.load(text)
