"""DKIM signing at submission, checked with dkimpy's verifier, and ``moxtw dkim generate``."""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import os
import re
import stat
from pathlib import Path
from typing import Any

import dkim
from cryptography.hazmat.primitives import serialization
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw import dkim as dkim_module
from moxtw.address import parse_address
from moxtw.config import ConfigError, load_config, parse_config
from moxtw.dkim import (
    DEFAULT_HEADERS,
    DKIMKeyError,
    DKIMSignError,
    SelectorKey,
    add_cli,
    build_signer,
    dns_txt_strings,
    from_header_address,
    generate_key,
    load_private_key,
    parse_private_key,
    sign_message,
    signed_headers,
)
from tests.smtp.fixture import SMTPFixture
from tests.smtp.test_protocol import plain
from tests.webapi.fixture import WebAPIFixture

MESSAGE = (
    b"From: Me <me@example.org>\r\n"
    b"To: you@example.com\r\n"
    b"Subject: hello\r\n"
    b"Message-Id: <1@example.org>\r\n"
    b"\r\n"
    b"the body\r\n"
)


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``moxtw dkim ...`` through a parser like moxtw.cli's; returns (status, out, err)."""
    parser = argparse.ArgumentParser(prog="moxtw")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = args.func(args)
    return status, out.getvalue(), err.getvalue()


def published_records(output: str) -> dict[bytes, bytes]:
    """The TXT records printed by ``moxtw dkim generate``, by DNS name, strings joined."""
    records = {}
    for line in output.splitlines():
        m = re.match(r"^(\S+\._domainkey\.\S+\.) TXT ((?:\"[^\"]*\" ?)+)$", line)
        if m:
            strings = re.findall(r'"([^"]*)"', m.group(2))
            assert all(len(s) <= 255 for s in strings), strings
            records[m.group(1).encode()] = "".join(strings).encode()
    return records


class DNS:
    """dkimpy's ``dnsfunc``: serves the given TXT records, records the names asked."""

    def __init__(self, records: dict[bytes, bytes]) -> None:
        self.records = records
        self.asked: list[bytes] = []

    def __call__(self, name: bytes, timeout: float = 5) -> bytes | None:
        self.asked.append(name)
        return self.records.get(name)


def dns_for(selectors: dict[str, Any], domain: str = "example.org") -> DNS:
    return DNS({f"{s}._domainkey.{domain}.".encode(): k.dns_record().encode() for s, k in selectors.items()})


def verify(message: bytes, dns: DNS, idx: int = 0) -> bool:
    d = dkim.DKIM(message)
    try:
        return bool(d.verify(idx=idx, dnsfunc=dns))
    except dkim.DKIMException:
        return False


def signature_tags(message: bytes, idx: int = 0) -> dict[str, str]:
    values = [v for n, v in dkim.DKIM(message).headers if n.lower() == b"dkim-signature"]
    tags = dkim.util.parse_tag_value(values[idx])
    return {k.decode(): re.sub(r"\s+", "", v.decode()) for k, v in tags.items()}


class KeyTests(SynchronousTestCase):
    def test_rsa_record_matches_private_key(self) -> None:
        pem = generate_key("rsa", 1024)
        key = parse_private_key(pem)
        self.assertEqual((key.algorithm, key.key_type, key.bits), ("rsa-sha256", "rsa", 1024))
        pk, keysize, ktag, _ = dkim.evaluate_pk(b"x", key.dns_record().encode())
        private = serialization.load_pem_private_key(pem, password=None)
        self.assertEqual(pk["modulus"], private.private_numbers().public_numbers.n)  # type: ignore[union-attr]
        self.assertEqual((keysize, ktag), (1024, b"rsa"))
        self.assertTrue(key.dns_record().startswith("v=DKIM1; k=rsa; p=MIG"))

    def test_ed25519_record_matches_private_key(self) -> None:
        pem = generate_key("ed25519")
        key = parse_private_key(pem)
        self.assertEqual((key.algorithm, key.key_type), ("ed25519-sha256", "ed25519"))
        pk, _, ktag, _ = dkim.evaluate_pk(b"x", key.dns_record().encode())
        private = serialization.load_pem_private_key(pem, password=None)
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.assertEqual((bytes(pk), ktag), (raw, b"ed25519"))
        self.assertEqual(len(base64.b64decode(key.public_key)), 32)

    def test_pkcs1_rsa_file_accepted(self) -> None:
        private = serialization.load_pem_private_key(generate_key("rsa", 1024), password=None)
        pkcs1 = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
        self.assertIn(b"BEGIN RSA PRIVATE KEY", pkcs1)
        self.assertEqual(parse_private_key(pkcs1).bits, 1024)

    def test_load_errors(self) -> None:
        path = Path(self.mktemp())
        with self.assertRaises(DKIMKeyError) as cm:
            load_private_key(path)
        self.assertIn(f"cannot read {path}", str(cm.exception))
        path.write_text("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
        with self.assertRaises(DKIMKeyError) as cm:
            load_private_key(path)
        self.assertTrue(str(cm.exception).startswith(f"{path}: not a PEM private key"), str(cm.exception))

    def test_txt_strings(self) -> None:
        record = parse_private_key(generate_key("rsa", 4096)).dns_record()
        strings = dns_txt_strings(record)
        self.assertEqual("".join(strings), record)
        self.assertEqual([len(s) for s in strings[:-1]], [255] * (len(strings) - 1))
        self.assertGreater(len(strings), 2)
        self.assertEqual(dns_txt_strings("short"), ["short"])

    def test_generate_refuses_bad_parameters(self) -> None:
        self.assertRaises(ValueError, generate_key, "rsa", 512)
        self.assertRaises(ValueError, generate_key, "dsa")


class SignTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.rsa = parse_private_key(generate_key("rsa", 1024))
        self.ed = parse_private_key(generate_key("ed25519"))
        self.dns = dns_for({"r": self.rsa, "e": self.ed})

    def sign(self, message: bytes = MESSAGE, **kwargs: Any) -> bytes:
        keys = kwargs.pop("keys", [SelectorKey("r", self.rsa), SelectorKey("e", self.ed)])
        return sign_message(message, "example.org", kwargs.pop("identity", "me@example.org"), keys)

    def test_rsa_and_ed25519_signatures_verify(self) -> None:
        headers = self.sign()
        signed = headers + MESSAGE
        self.assertTrue(headers.startswith(b"DKIM-Signature: "))
        self.assertEqual(headers.count(b"DKIM-Signature: "), 2)
        self.assertTrue(headers.endswith(b"\r\n"))
        self.assertTrue(verify(signed, self.dns, 0))
        self.assertTrue(verify(signed, self.dns, 1))
        self.assertEqual(self.dns.asked, [b"r._domainkey.example.org.", b"e._domainkey.example.org."])
        rsa_tags, ed_tags = signature_tags(signed, 0), signature_tags(signed, 1)
        self.assertEqual((rsa_tags["a"], ed_tags["a"]), ("rsa-sha256", "ed25519-sha256"))
        self.assertEqual(rsa_tags["c"], "relaxed/relaxed")
        self.assertEqual((rsa_tags["d"], rsa_tags["s"], rsa_tags["i"]), ("example.org", "r", "me@example.org"))

    def test_tampering_fails(self) -> None:
        headers = self.sign()
        self.assertFalse(verify(headers + MESSAGE.replace(b"the body", b"the bodY"), self.dns, 0))
        self.assertFalse(verify(headers + MESSAGE.replace(b"the body", b"the bodY"), self.dns, 1))
        self.assertFalse(verify(headers + MESSAGE.replace(b"hello", b"hellO"), self.dns))
        # Oversigned: adding a header that is signed breaks the signature, even one the
        # message did not have; an unsigned header may be added.
        self.assertFalse(verify(headers + b"Subject: other\r\n" + MESSAGE, self.dns))
        self.assertFalse(verify(headers + b"Reply-To: x@evil.example\r\n" + MESSAGE, self.dns))
        self.assertTrue(verify(headers + b"X-Added: yes\r\n" + MESSAGE, self.dns))
        # The key in DNS must be the signer's.
        other = dns_for({"r": parse_private_key(generate_key("rsa", 1024)), "e": self.ed})
        self.assertFalse(verify(headers + MESSAGE, other, 0))

    def test_relaxed_canonicalization(self) -> None:
        headers = self.sign()
        rewrapped = MESSAGE.replace(b"Subject: hello", b"subject:   hello ").replace(b"the body", b"the   body")
        self.assertTrue(verify(headers + rewrapped, self.dns, 0))
        self.assertTrue(verify(headers + rewrapped, self.dns, 1))

    def test_signed_headers(self) -> None:
        self.assertEqual(
            signed_headers(["From", "Received", "To", "to"], ["From", "To", "Subject", "from"]),
            [b"from", b"from", b"to", b"to", b"to", b"subject"],
        )
        tags = signature_tags(self.sign() + MESSAGE)
        h = tags["h"].split(":")
        self.assertEqual(h.count("from"), 2)
        self.assertEqual(h.count("subject"), 2)
        self.assertEqual(h.count("cc"), 1)
        self.assertEqual(set(h), {name.lower() for name in DEFAULT_HEADERS})

    def test_selector_headers_and_default_identity(self) -> None:
        keys = [SelectorKey("e", self.ed, ("From", "Subject"))]
        signed = self.sign(keys=keys, identity=None) + MESSAGE
        tags = signature_tags(signed)
        self.assertEqual((tags["h"], tags["i"]), ("from:from:subject:subject", "@example.org"))
        self.assertTrue(verify(signed, self.dns))
        self.assertTrue(verify(signed.replace(b"To: you@", b"To: them@"), self.dns))

    def test_rsa_signed_by_openssl_as_dkimpy_would(self) -> None:
        """moxtw's keys are signed with OpenSSL; the bytes are those of dkimpy's own code."""
        keys = [SelectorKey("r", self.rsa)]
        # The same t= tag in every signature (dkimpy reads the time itself).
        self.patch(dkim, "time", type("FixedTime", (), {"time": staticmethod(lambda: 1_700_000_000)}))
        fast = self.sign(keys=keys)
        calls: list[Any] = []
        python_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign

        def counting(hash: Any, private_key: Any) -> bytes:
            calls.append(private_key)
            return python_sign(hash, private_key)

        self.patch(dkim.crypto, "RSASSA_PKCS1_v1_5_sign", counting)
        fast_again = self.sign(keys=keys)
        self.assertEqual(calls, [])
        # A key moxtw did not load goes to dkimpy's Python code, which gives the same bytes.
        self.patch(dkim_module, "_openssl_rsa_keys", {})
        self.patch(dkim_module, "_register_rsa_key", lambda key: None)
        slow = self.sign(keys=keys)
        self.assertEqual(len(calls), 1)
        self.assertIn(b"t=1700000000;", fast)
        self.assertEqual(fast, slow)
        self.assertEqual(fast_again, slow)
        self.assertTrue(verify(fast + MESSAGE, self.dns))

    def test_malformed_header_is_an_error(self) -> None:
        with self.assertRaises(DKIMSignError):
            self.sign(b"From: me@example.org\r\nno colon here\r\n\r\nbody\r\n")

    def test_from_header_address(self) -> None:
        self.assertEqual(from_header_address(MESSAGE), parse_address("me@example.org"))
        folded = b"To: x@y.example\r\nFROM:\r\n \"A, B\"\r\n <a@B.Example>\r\nSubject: s\r\n\r\nFrom: b@c.example\r\n"
        self.assertEqual(from_header_address(folded), parse_address("a@b.example"))
        self.assertIsNone(from_header_address(b"From: a@b.example\r\nFrom: c@d.example\r\n\r\n"))
        self.assertIsNone(from_header_address(b"From: a@b.example, c@d.example\r\n\r\n"))
        self.assertIsNone(from_header_address(b"To: a@b.example\r\n\r\nFrom: c@d.example\r\n"))
        self.assertIsNone(from_header_address(b"From: not an address\r\n\r\n"))


class BuildSignerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).absolute()
        self.dir.mkdir()
        self.pool = ThreadPool(minthreads=0, maxthreads=1)

    def config_text(self, sign: str = '["sel"]') -> str:
        return (
            'hostname = "mail.example.org"\ndata_dir = "data"\n'
            '[domains."example.org"]\n[domains."example.org".dkim]\n'
            f"sign = {sign}\n"
            '[domains."example.org".dkim.selectors.sel]\nkey_file = "key.pem"\n'
            '[domains."other.example"]\n'
        )

    def test_no_signing_domain(self) -> None:
        (self.dir / "key.pem").write_bytes(generate_key("ed25519"))
        config = parse_config(self.config_text("[]"), base_dir=self.dir)
        self.assertIsNone(build_signer(config, self.pool, reactor))

    def test_keys_loaded_once(self) -> None:
        (self.dir / "key.pem").write_bytes(generate_key("ed25519"))
        config = parse_config(self.config_text(), base_dir=self.dir)
        signer = build_signer(config, self.pool, reactor)
        assert signer is not None
        self.assertEqual(set(signer.domains), {"example.org"})
        (key,) = signer.domains["example.org"].keys
        self.assertEqual((key.selector, key.key.algorithm, key.headers), ("sel", "ed25519-sha256", DEFAULT_HEADERS))
        # The key is in memory: the file is not read again when signing.
        os.remove(self.dir / "key.pem")
        signed = sign_message(MESSAGE, "example.org", None, [key]) + MESSAGE
        self.assertTrue(verify(signed, dns_for({"sel": key.key})))

    def test_bad_key_is_a_startup_error(self) -> None:
        """A key file that went bad after the configuration was checked stops startup."""
        (self.dir / "key.pem").write_bytes(generate_key("ed25519"))
        (self.dir / "moxtw.toml").write_text(self.config_text())
        config = load_config(self.dir / "moxtw.toml")
        (self.dir / "key.pem").write_text("garbage")
        with self.assertRaises(ConfigError) as cm:
            build_signer(config, self.pool, reactor)
        (problem,) = cm.exception.problems
        self.assertTrue(
            problem.startswith(f"domains.example.org.dkim.selectors.sel.key_file: {self.dir / 'key.pem'}: not a PEM private key"),
            problem,
        )
        self.assertIn(str(self.dir / "moxtw.toml"), str(cm.exception))


class GenerateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).absolute()
        self.dir.mkdir()

    def test_rsa(self) -> None:
        status, out, err = run_cli("dkim", "generate", "Example.ORG", "2026a", "--dir", str(self.dir))
        self.assertEqual((status, err), (0, ""))
        path = self.dir / "example.org-2026a.pem"
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)
        key = load_private_key(path)
        self.assertEqual((key.algorithm, key.bits), ("rsa-sha256", 2048))
        records = published_records(out)
        record = records[b"2026a._domainkey.example.org."]
        self.assertEqual(record, key.dns_record().encode())
        self.assertIn(' TXT "v=DKIM1; k=rsa; p=', out)
        self.assertEqual(len(re.findall(r'"[^"]*"', out.split(" TXT ")[1].splitlines()[0])), 2)
        # The public key in the printed record is the file's.
        pk, _, _, _ = dkim.evaluate_pk(b"x", record)
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        self.assertEqual(pk["modulus"], private.private_numbers().public_numbers.n)  # type: ignore[union-attr]

    def test_ed25519_snippet_is_valid_configuration(self) -> None:
        status, out, _ = run_cli("dkim", "generate", "example.org", "ed1", "--algorithm", "ed25519", "--dir", str(self.dir))
        self.assertEqual(status, 0)
        self.assertIn('ed1._domainkey.example.org. TXT "v=DKIM1; k=ed25519; p=', out)
        snippet = out[out.index('[domains."example.org".dkim]'):]
        config = parse_config(
            'hostname = "h.example.org"\ndata_dir = "d"\n[domains."example.org"]\n' + snippet, base_dir=self.dir
        )
        self.assertEqual(config.domains["example.org"].dkim_sign, ("ed1",))
        signer = build_signer(config, ThreadPool(), reactor)
        assert signer is not None
        keys = signer.domains["example.org"].keys
        signed = sign_message(MESSAGE, "example.org", None, keys) + MESSAGE
        self.assertTrue(verify(signed, DNS(published_records(out))))

    def test_refuses_to_overwrite(self) -> None:
        self.assertEqual(run_cli("dkim", "generate", "example.org", "s", "--dir", str(self.dir), "--algorithm", "ed25519")[0], 0)
        path = self.dir / "example.org-s.pem"
        before = path.read_bytes()
        status, out, err = run_cli("dkim", "generate", "example.org", "s", "--dir", str(self.dir))
        self.assertEqual((status, out), (1, ""))
        self.assertIn(f"{path} exists; not overwriting it", err)
        self.assertEqual(path.read_bytes(), before)

    def test_bad_arguments(self) -> None:
        for args, message in [
            (("bad_domain!", "s"), "bad domain"),
            (("example.org", "bad_selector"), "bad selector"),
            (("example.org", "s", "--bits", "512"), "between 1024 and 4096"),
        ]:
            status, _, err = run_cli("dkim", "generate", *args, "--dir", str(self.dir))
            self.assertEqual(status, 2, args)
            self.assertIn(message, err)
        self.assertEqual(list(self.dir.iterdir()), [])


def add_dkim(directory: Path) -> Any:
    """A localserve configuration edit: domain localhost signs with an RSA and an Ed25519
    key (made by ``moxtw dkim generate``); domain nosign.example (also account mox's) does
    not sign.  Returns the edit and the DNS serving the printed records."""
    directory.mkdir(parents=True)
    records: dict[bytes, bytes] = {}
    for selector, algorithm in [("rsa1", "rsa"), ("ed1", "ed25519")]:
        status, out, _ = run_cli(
            "dkim", "generate", "localhost", selector, "--algorithm", algorithm, "--bits", "1024", "--dir", str(directory)
        )
        assert status == 0
        records.update(published_records(out))

    def edit(text: str) -> str:
        text = text.replace('"@localhost"]', '"@localhost", "@nosign.example"]')
        return text + (
            '\n[domains.localhost.dkim]\nsign = ["rsa1", "ed1"]\n'
            f'[domains.localhost.dkim.selectors.rsa1]\nkey_file = "{directory}/localhost-rsa1.pem"\n'
            f'[domains.localhost.dkim.selectors.ed1]\nkey_file = "{directory}/localhost-ed1.pem"\n'
            '\n[domains."nosign.example"]\n'
        )

    return edit, DNS(records)


class WebAPISendTests(TestCase):
    async def start(self) -> WebAPIFixture:
        edit, self.dns = add_dkim(Path(self.mktemp()).absolute())
        return await WebAPIFixture(self, edit=edit).start()

    async def test_send_is_signed_once_for_all_recipients(self) -> None:
        f = await self.start()
        reply = await f.call(
            "Send",
            {"To": [{"Address": "a@example.org"}, {"Address": "b@example.com"}], "Subject": "signed", "Text": "hi"},
        )
        self.assertEqual(reply.status, 200, reply.body)
        rows = await f.queue_rows()
        self.assertEqual(len(rows), 2)
        self.assertEqual(rows[0]["prefix"], rows[1]["prefix"])
        raw = await f.raw(rows[0])
        # Received first, then the signatures in `sign` order (spec §2.2.3).
        names = [line.split(b":")[0] for line in bytes(rows[0]["prefix"]).split(b"\r\n") if line[:1] not in (b"", b" ", b"\t")]
        self.assertEqual(names, [b"Received", b"DKIM-Signature", b"DKIM-Signature"])
        self.assertEqual(rows[0]["size"], len(raw))
        self.assertTrue(verify(raw, self.dns, 0))
        self.assertTrue(verify(raw, self.dns, 1))
        self.assertEqual(self.dns.asked, [b"rsa1._domainkey.localhost.", b"ed1._domainkey.localhost."])
        tags = signature_tags(raw, 0)
        self.assertEqual((tags["a"], tags["d"], tags["i"]), ("rsa-sha256", "localhost", "mox@localhost"))
        self.assertEqual(signature_tags(raw, 1)["a"], "ed25519-sha256")
        self.assertFalse(verify(raw.replace(b"hi", b"hI"), self.dns, 0))
        self.assertFalse(verify(raw.replace(b"hi", b"hI"), self.dns, 1))

    async def test_fromid_login_identity_is_the_base_address(self) -> None:
        f = await self.start()
        reply = await f.call(
            "Send", {"To": [{"Address": "a@example.org"}], "Text": "hi"}, auth=("mox+fromid@localhost", "moxmoxmox")
        )
        self.assertEqual(reply.status, 200, reply.body)
        (row,) = await f.queue_rows()
        raw = await f.raw(row)
        self.assertTrue(verify(raw, self.dns))
        self.assertEqual(signature_tags(raw)["i"], "mox@localhost")

    async def test_domain_without_dkim_is_not_signed(self) -> None:
        f = await self.start()
        reply = await f.call(
            "Send", {"From": [{"Address": "app@nosign.example"}], "To": [{"Address": "a@example.org"}], "Text": "hi"}
        )
        self.assertEqual(reply.status, 200, reply.body)
        (row,) = await f.queue_rows()
        self.assertTrue(bytes(row["prefix"]).startswith(b"Received: "))
        self.assertNotIn(b"DKIM-Signature", await f.raw(row))

    async def test_no_dkim_configuration(self) -> None:
        f = await WebAPIFixture(self).start()
        reply = await f.call("Send", {"To": [{"Address": "a@example.org"}], "Text": "hi"})
        self.assertEqual(reply.status, 200, reply.body)
        (row,) = await f.queue_rows()
        self.assertNotIn(b"DKIM-Signature", await f.raw(row))


class SMTPSubmissionTests(TestCase):
    """SMTP submission signs with the From header's domain, not MAIL FROM's."""

    def setUp(self) -> None:
        edit, self.dns = add_dkim(Path(self.mktemp()).absolute())
        self.f = SMTPFixture(self, edit=edit, plaintext_auth=False)
        pool = ThreadPool(minthreads=0, maxthreads=1, name="test-dkim")
        pool.start()
        self.addCleanup(pool.stop)
        self.f.factories.submission.backend.submitter.signer = build_signer(self.f.config, pool, reactor)

    async def submit(self, mail_from: str, header_from: str, body: str = "hello") -> bytes:
        c = self.f.connect(self.f.factories.submission)
        await c.command("EHLO client.example")
        await c.command("STARTTLS")
        await c.command("EHLO client.example")
        self.assertEqual(await c.command(f"AUTH PLAIN {plain()}"), b"235 2.7.0 nice")
        self.assertEqual((await c.command(f"MAIL FROM:<{mail_from}>"))[:3], b"250")
        self.assertEqual((await c.command("RCPT TO:<you@example.org>"))[:3], b"250")
        self.assertEqual(await c.command("DATA"), b"354 see you at the bare dot")
        have = len(c.client.replies)
        c.send(f"From: {header_from}", "To: you@example.org", "Subject: smtp", "", body, ".")
        return (await c.replies(have + 1))[-1]

    async def raw(self, row: dict[str, Any]) -> bytes:
        return bytes(row["prefix"]) + await self.f.store.blobs.get(row["blob"])

    async def test_from_header_domain_signs(self) -> None:
        reply = await self.submit("mox@nosign.example", "Mox <mox@localhost>")
        self.assertEqual(reply[:3], b"250", reply)
        (row,) = await self.f.queue_rows()
        raw = await self.raw(row)
        # Message-Id and Date were added (to the prefix) before signing, so they are signed.
        prefix_names = [line.split(b":")[0] for line in bytes(row["prefix"]).split(b"\r\n") if line[:1] not in (b"", b" ", b"\t")]
        self.assertEqual(prefix_names, [b"Received", b"Message-Id", b"Date", b"DKIM-Signature", b"DKIM-Signature"])
        self.assertTrue(verify(raw, self.dns, 0))
        self.assertTrue(verify(raw, self.dns, 1))
        self.assertEqual(signature_tags(raw)["d"], "localhost")
        self.assertIn("message-id", signature_tags(raw)["h"].split(":"))
        self.assertFalse(verify(raw.replace(b"Date: ", b"Date:  1"), self.dns))

    async def test_from_header_domain_without_dkim(self) -> None:
        reply = await self.submit("mox@localhost", "mox@nosign.example")
        self.assertEqual(reply[:3], b"250", reply)
        (row,) = await self.f.queue_rows()
        self.assertNotIn(b"DKIM-Signature", await self.raw(row))

    async def test_unsignable_message_is_refused(self) -> None:
        """A header line dkimpy cannot parse: a temporary error, nothing queued."""
        reply = await self.submit("mox@localhost", "mox@localhost\r\nno colon in this header line")
        self.assertEqual(reply, b"451 4.3.0 error queueing message, try again later")
        self.assertEqual(await self.f.queue_rows(), [])
        self.flushLoggedErrors(DKIMSignError)
