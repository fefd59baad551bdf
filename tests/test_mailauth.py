"""SPF, DKIM and DMARC evaluation against a real twisted.names server on loopback."""

from __future__ import annotations

import base64

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from twisted.internet import reactor
from twisted.names import dns
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import TestCase

from moxtw.delivery.mx import make_dns_resolver
from moxtw.mailauth import Authenticator, AuthResults, Evaluator, aligned, organizational_domain
from tests.delivery.peers import DNSServer

MESSAGE = (
    b"From: App <app@example.test>\r\nTo: <you@moxtw.test>\r\nSubject: hi\r\n"
    b"Message-ID: <m1@example.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\nhello\r\n"
)


def rsa_key() -> tuple[bytes, bytes]:
    """(private key PEM, the p= value of its DKIM record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(der)


class MailAuthTests(TestCase):
    def setUp(self) -> None:
        self.dns = DNSServer(self)
        pool = ThreadPool(minthreads=0, maxthreads=2, name="test-auth")
        pool.start()
        self.addCleanup(pool.stop)
        self.auth = Authenticator(Evaluator(make_dns_resolver(self.dns.config()), timeout=2.0), pool, reactor)
        self.key, self.public = rsa_key()

    def txt(self, name: str, *values: bytes) -> None:
        # One record per value, split into strings of at most 255 bytes.
        self.dns.zone.add(name, dns.TXT, *(dns.Record_TXT(*(v[i : i + 255] for i in range(0, len(v), 255))) for v in values))

    def signed(self, domain: bytes = b"example.test", data: bytes = MESSAGE) -> bytes:
        sig = dkim.sign(data, b"sel", domain, self.key, include_headers=[b"from", b"to", b"subject"])
        return sig + data

    async def evaluate(self, data: bytes, mail_from: str = "bounce@example.test", ip: str = "127.0.0.1") -> AuthResults:
        return await self.auth.evaluate(ip=ip, helo="mta.example.test", mail_from=mail_from, data=data)

    async def test_all_pass(self) -> None:
        self.txt("example.test", b"v=spf1 ip4:127.0.0.0/8 -all")
        self.txt("sel._domainkey.example.test", b"v=DKIM1; k=rsa; p=" + self.public)
        self.txt("_dmarc.example.test", b"v=DMARC1; p=reject")
        r = await self.evaluate(self.signed())
        self.assertEqual((r.spf, r.spf_domain, r.dkim, r.dkim_domains, r.dmarc, r.from_domain),
                         ("pass", "example.test", "pass", ("example.test",), "pass", "example.test"))
        self.assertTrue(r.mail_from_validated)
        self.assertTrue(r.msg_from_validated)
        self.assertEqual(r.header("mx.moxtw.test"),
                         b"Authentication-Results: mx.moxtw.test;\r\n\tspf=pass smtp.mailfrom=example.test;\r\n"
                         b"\tdkim=pass header.d=example.test;\r\n\tdmarc=pass header.from=example.test\r\n")

    async def test_spf_fail_and_tampered_dkim_fail_dmarc(self) -> None:
        self.txt("example.test", b"v=spf1 ip4:192.0.2.0/24 -all")
        self.txt("sel._domainkey.example.test", b"v=DKIM1; k=rsa; p=" + self.public)
        self.txt("_dmarc.example.test", b"v=DMARC1; p=reject")
        tampered = self.signed().replace(b"hello", b"HELLO")
        r = await self.evaluate(tampered)
        self.assertEqual((r.spf, r.dkim, r.dkim_domains, r.dmarc), ("fail", "fail", (), "fail"))
        self.assertFalse(r.mail_from_validated)
        self.assertFalse(r.msg_from_validated)

    async def test_relaxed_alignment_with_subdomain_and_org_policy(self) -> None:
        """MAIL FROM bounces.example.test passes SPF; From example.test aligns in relaxed
        mode; the policy is found at the organisational domain."""
        self.txt("bounces.example.test", b"v=spf1 ip4:127.0.0.1 -all")
        self.txt("_dmarc.example.test", b"v=DMARC1; p=none")
        data = MESSAGE.replace(b"app@example.test", b"app@news.example.test")
        r = await self.evaluate(data, mail_from="x@bounces.example.test")
        self.assertEqual((r.spf, r.dkim, r.dmarc, r.from_domain), ("pass", "none", "pass", "news.example.test"))
        self.assertTrue(r.msg_from_validated)

    async def test_strict_alignment(self) -> None:
        self.txt("bounces.example.test", b"v=spf1 ip4:127.0.0.1 -all")
        self.txt("_dmarc.example.test", b"v=DMARC1; p=reject; aspf=s")
        r = await self.evaluate(MESSAGE, mail_from="x@bounces.example.test")
        self.assertEqual((r.spf, r.dmarc), ("pass", "fail"))
        self.assertTrue(r.mail_from_validated)
        self.assertFalse(r.msg_from_validated)

    async def test_dkim_of_another_domain_does_not_validate_from(self) -> None:
        self.txt("sel._domainkey.other.test", b"v=DKIM1; k=rsa; p=" + self.public)
        self.txt("_dmarc.example.test", b"v=DMARC1; p=reject")
        r = await self.evaluate(self.signed(b"other.test"), mail_from="")
        self.assertEqual((r.dkim, r.dkim_domains, r.dmarc, r.spf_domain), ("pass", ("other.test",), "fail", "mta.example.test"))
        self.assertFalse(r.mail_from_validated)  # null sender: the EHLO identity never validates MAIL FROM

    async def test_nothing_published(self) -> None:
        self.dns.zone.a("example.test", "192.0.2.1")
        r = await self.evaluate(MESSAGE)
        self.assertEqual((r.spf, r.dkim, r.dmarc), ("none", "none", "none"))
        self.assertFalse(r.msg_from_validated)

    async def test_dns_failure_is_temperror(self) -> None:
        self.dns.zone.servfail.update({"example.test", "_dmarc.example.test"})
        r = await self.evaluate(MESSAGE)
        self.assertEqual((r.spf, r.dmarc), ("temperror", "temperror"))


class DomainTests(TestCase):
    def test_organizational_domain(self) -> None:
        self.assertEqual(organizational_domain("mail.example.co.uk"), "example.co.uk")
        self.assertEqual(organizational_domain("a.b.example.com."), "example.com")
        self.assertTrue(aligned("bounces.example.com", "example.com", strict=False))
        self.assertFalse(aligned("bounces.example.com", "example.com", strict=True))
        self.assertFalse(aligned("example.org", "example.com", strict=False))
