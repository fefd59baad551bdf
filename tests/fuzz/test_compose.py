"""MIME composition round trip: random Send contents are composed by moxtw and read back
by Python's email parser (``policy.default``) and by moxtw's own MIME parser (MessageGet,
webhooks); every part, header, decoded body, file name and content id comes back equal,
and the message has CRLF line ends only and no line over 998 octets (RFC 5322 §2.1.1).
"""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from hypothesis import assume, example, given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from moxtw import message as m
from moxtw.address import AddressError, parse_address, parse_domain
from moxtw.smtp.extra import header_fields
from moxtw.webapi import compose as c
from tests.fuzz import FUZZ, counted, scaled
from tests.fuzz.test_parsers import (
    domains,
    localparts,
    quote_localpart,
    quoted_localparts,
    utf8_atoms,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

#: Header-safe text: no control characters (those are refused, see test_header_injection).
safe_chars = st.characters(min_codepoint=0x20, blacklist_categories=("Cs",))
safe_text = st.text(alphabet=safe_chars, max_size=60)
#: Longer text, to reach the folding and line-length limits.
long_words = st.lists(st.text(alphabet=safe_chars, min_size=1, max_size=300), min_size=1, max_size=6).map(" ".join)
names = st.one_of(safe_text, st.sampled_from(["", "Jöhn Dœ", 'a "quoted" name', "a, b", "=?utf-8?q?x?=", "(c)", "\\"]))
body_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), max_size=300)


@st.composite
def addresses(draw: Any) -> Any:
    lp = draw(st.one_of(localparts, localparts, utf8_atoms, quoted_localparts))
    try:
        return parse_address(f"{quote_localpart(lp)}@{draw(domains)}")
    except AddressError:
        assume(False)


name_addresses = st.builds(c.NameAddress, name=names, address=addresses())
token = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=10)
content_types = st.one_of(
    st.just(""),
    st.builds(lambda a, b: f"{a}/{b}", st.sampled_from(["application", "image", "text", "x-custom"]), token),
)
content_ids = st.one_of(st.just(""), st.builds(lambda a, b: f"<{a}@{b}>", token, token))
files = st.builds(
    c.File,
    name=st.one_of(safe_text, st.sampled_from(["report.pdf", "ünïcödé file.txt", 'quo"te.txt', "a;b=c.txt", ""])),
    content_type=content_types,
    content_id=content_ids,
    data=st.binary(max_size=300),
)
header_names = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"), min_size=1, max_size=20).filter(
    lambda n: n.lower() not in c.FORBIDDEN_HEADERS and n.lower() not in ("user-agent", "x-mailer")
)
custom_headers = st.lists(st.tuples(header_names.map(lambda n: "X-" + n), safe_text), max_size=4)
msgids = st.builds(lambda a, b: f"<{a}@{b}>", token, token)


@st.composite
def compose_inputs(draw: Any, long: bool = False) -> c.ComposeInput:
    text, html = draw(body_text), draw(body_text)
    if not text and not html:
        text = "x"
    return c.ComposeInput(
        from_=draw(name_addresses),
        to=draw(st.lists(name_addresses, max_size=3)),
        cc=draw(st.lists(name_addresses, max_size=2)),
        bcc=draw(st.lists(name_addresses, max_size=2)),
        reply_to=draw(st.lists(name_addresses, max_size=2)),
        subject=draw(long_words if long else safe_text),
        text=text,
        html=html,
        message_id=draw(st.one_of(st.just(""), msgids)),
        references=draw(st.lists(msgids, max_size=3)),
        headers=draw(custom_headers),
        alternative_files=draw(st.lists(files, max_size=2)),
        inline_files=draw(st.lists(files, max_size=2)),
        attached_files=draw(st.lists(files, max_size=2)),
    )


def compose(inp: c.ComposeInput) -> c.Composed:
    return c.compose(inp, hostname="mail.example", now=NOW, max_size=0, version="fuzz")


def norm_ws(s: str) -> list[str]:
    return s.split()


def no_ws(s: str) -> str:
    return "".join(s.split())


class ComposeRoundTrip(SynchronousTestCase):
    def check_lines(self, data: bytes) -> None:
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""), "bare CR or LF")
        self.assertNotIn(b"\r", data.replace(b"\r\n", b""), "bare CR")
        for line in data.split(b"\r\n"):
            self.assertLessEqual(len(line), 998, line[:100])

    def check_address(self, got: Any, want: c.NameAddress) -> None:
        self.assertEqual(got.username, want.address.localpart)
        self.assertEqual(parse_domain(got.domain), want.address.domain)
        # Python's parser (like Go's, and so mox's) puts a space between adjacent
        # encoded-words of a display name: compare without whitespace.
        self.assertEqual(no_ws(got.display_name), no_ws(want.name))

    @scaled(2)
    @given(compose_inputs())
    @example(c.ComposeInput(from_=c.NameAddress("", parse_address("a@b")), to=[c.NameAddress("", parse_address("a@b"))],
                            subject="=?utf-8?q?=0D=0ABcc:_x@y?=", text="x"))
    @counted
    def test_round_trip(self, inp: c.ComposeInput) -> None:
        composed = compose(inp)
        data = composed.data
        self.check_lines(data)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.assertEqual(msg.defects, [])
        # Headers from the text: the bytes parser reads 8-bit (SMTPUTF8) header bytes as
        # surrogate escapes.  The composed message is UTF-8 throughout.
        hmsg = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)

        # The header: exactly the fields moxtw writes, in mox's order, plus the custom ones.
        fields = header_fields(data)
        names_written = [n for n, _ in fields]
        expected = ["From"] + (["Reply-To"] if inp.reply_to else []) + (["To"] if inp.to else []) + (
            ["Cc"] if inp.cc else []) + (["Subject"] if inp.subject else []) + ["Date", "Message-Id"] + (
            ["References", "In-Reply-To"] if inp.references else []) + ["MIME-Version"] + [n for n, _ in inp.headers] + [
            "User-Agent"]
        self.assertEqual(names_written[: len(expected)], expected)
        self.assertTrue(set(names_written[len(expected):]) <= {"Content-Type", "Content-Transfer-Encoding", "Content-Disposition", "Content-Id"})
        self.assertNotIn("Bcc", names_written)

        (sender,) = hmsg["From"].addresses
        self.check_address(sender, inp.from_)
        for header, want in (("To", inp.to), ("Cc", inp.cc), ("Reply-To", inp.reply_to)):
            got = hmsg[header].addresses if want else ()
            self.assertEqual(len(got), len(want), header)
            for g, w in zip(got, want, strict=True):
                self.check_address(g, w)
        if inp.subject:
            self.assertEqual(norm_ws(str(hmsg["Subject"])), norm_ws(inp.subject))
        self.assertEqual(hmsg["Message-Id"], composed.message_id)
        if inp.message_id:
            self.assertEqual(composed.message_id, inp.message_id)
        if inp.references:
            self.assertEqual(str(hmsg["References"]).split(), list(inp.references))
            self.assertEqual(hmsg["In-Reply-To"], inp.references[-1])
        custom = fields[len(expected) - 1 - len(inp.headers) : len(expected) - 1]
        self.assertEqual(custom, [(n, v.strip(" \t")) for n, v in inp.headers])

        # Bodies and files, through Python's parser.
        leaves = [p for p in msg.walk() if not p.is_multipart()]
        texts = int(bool(inp.text)) + int(bool(inp.html))
        for part, (subtype, want) in zip(leaves, [t for t in (("plain", inp.text), ("html", inp.html)) if t[1]], strict=False):
            self.assertEqual(part.get_content_type(), f"text/{subtype}")
            self.assertEqual(body(part), with_newline(want))
        got_files = leaves[texts:]
        want_files = [*inp.alternative_files, *inp.inline_files, *inp.attached_files]
        self.assertEqual(len(got_files), len(want_files))
        dispositions = ["inline"] * (len(inp.alternative_files) + len(inp.inline_files)) + ["attachment"] * len(inp.attached_files)
        for part, f, want_disposition in zip(got_files, want_files, dispositions, strict=True):
            self.assertEqual(part.get_payload(decode=True), f.data)
            self.assertEqual(part.get_filename() or "", f.name.strip())  # Python strips it
            self.assertEqual(part["Content-Id"] or "", f.content_id)
            if f.content_type:
                self.assertEqual(part.get_content_type(), f.content_type.lower())
            self.assertEqual(part.get_content_disposition(), want_disposition)

        # The same through moxtw's own parser (MessageGet, webhooks).
        root = m.parse(data)
        env = m.envelope(root)
        self.assertEqual(env.message_id, composed.message_id)
        self.assertEqual([(no_ws(a.name), a.address) for a in env.to], [(no_ws(a.name), str(a.address)) for a in inp.to])
        if inp.subject:
            self.assertEqual(norm_ws(env.subject), norm_ws(inp.subject))
        text, html, _ = m.readable_parts(root)
        if not want_files:  # else a text/* file can be taken for the text, as in mox
            self.assertEqual(text, with_newline(inp.text) if inp.text else "")
            self.assertEqual(html, with_newline(inp.html) if inp.html else "")
        leaves_m = []
        stack = [m.structure(root)]
        while stack:
            node = stack.pop(0)
            if node.parts:
                stack[:0] = node.parts
            else:
                leaves_m.append(node)
        for node, f in zip(leaves_m[texts:], want_files, strict=True):
            self.assertEqual(node.filename, f.name)
            self.assertEqual(node.content_id, f.content_id)
            # Text parts are counted with CRLF line ends (spec §2.1).
            crlf = re.sub(rb"(?<!\r)\n", b"\r\n", f.data) if node.content_type.startswith("text/") else f.data
            self.assertEqual(node.decoded_size, len(crlf))

    @FUZZ
    @given(
        st.lists(st.one_of(st.text(alphabet="abcxyz=?", min_size=1, max_size=1200),
                           st.text(alphabet="日本語ü", min_size=1, max_size=500)), min_size=1, max_size=4).map(" ".join),
        addresses(),
    )
    @example("日" * 400, parse_address("a@b"))
    @example("x" * 1200, parse_address("a@b"))
    @example("日" * 400, parse_address("ü@b"))
    @counted
    def test_long_subject(self, subject: str, address: Any) -> None:
        """Long words in a Subject (a CJK subject has no spaces) are encoded and folded:
        no line over 998 octets, and the subject reads back the same."""
        sender = c.NameAddress("", address)
        data = compose(c.ComposeInput(from_=sender, to=[sender], subject=subject, text="x")).data
        self.check_lines(data)
        msg = email.message_from_bytes(data, policy=email.policy.default)
        self.assertEqual(norm_ws(str(msg["Subject"])), norm_ws(subject))
        self.assertEqual(norm_ws(m.envelope(m.parse(data)).subject), norm_ws(subject))


def body(part: Any) -> str:
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"
