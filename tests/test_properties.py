"""Property tests (hypothesis) for the parsers and codecs the webapi depends on."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from moxtw.address import AddressError, base_address, parse_address
from moxtw.webapi import compose as c
from moxtw.webapi.gojson import GoJSONError, decode_request

settings.register_profile("moxtw", deadline=None, max_examples=150)
settings.load_profile("moxtw")

atoms = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~", min_size=1, max_size=12)
localparts = st.lists(atoms, min_size=1, max_size=3).map(".".join)
labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)


class AddressProperties(SynchronousTestCase):
    @given(localparts, domains)
    def test_round_trip(self, local: str, domain: str) -> None:
        address = parse_address(f"{local}@{domain}")
        self.assertEqual(address.domain, domain)
        self.assertEqual(parse_address(str(address)), address)

    @given(localparts, domains)
    def test_base_address_is_idempotent(self, local: str, domain: str) -> None:
        base = base_address(parse_address(f"{local}@{domain}"))
        try:
            again = base_address(parse_address(base))
        except AddressError:
            # Only a localpart that normalises to nothing ("-x", "+x", ".") has no parsable base.
            self.assertTrue(base.startswith("@"), base)
            return
        self.assertEqual(again, base)

    @given(st.text(max_size=40))
    def test_never_crashes(self, text: str) -> None:
        try:
            parse_address(text)
        except AddressError as e:
            self.assertTrue(str(e).startswith("parsing address "))


class ComposeProperties(SynchronousTestCase):
    @given(
        subject=st.text(alphabet=st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), max_size=120),
        text=st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r"), min_size=1, max_size=400),
    )
    def test_text_round_trip(self, subject: str, text: str) -> None:
        sender = c.NameAddress(name="", address=parse_address("mox@localhost"))
        inp = c.ComposeInput(from_=sender, to=[sender], subject=subject, text=text)
        composed = c.compose(
            inp, hostname="localhost", now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), max_size=10**7, version="t"
        )
        msg = email.message_from_bytes(composed.data, policy=email.policy.default)
        self.assertNotIn(b"\n", composed.data.replace(b"\r\n", b""))  # only CRLF line ends
        body = msg.get_content().replace("\r\n", "\n")
        expected = text if text.endswith("\n") else text + "\n"
        self.assertEqual(body, expected)
        if subject.strip():
            self.assertEqual(" ".join(str(msg["Subject"]).split()), " ".join(subject.split()))


class GoJSONProperties(SynchronousTestCase):
    @given(st.text(max_size=60))
    def test_decoder_never_crashes(self, raw: str) -> None:
        try:
            decode_request("Send", raw)
        except GoJSONError as e:
            self.assertTrue(str(e))
