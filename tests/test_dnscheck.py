"""``moxtw dnscheck``: run as a subprocess against a real twisted.names server on loopback
serving the records ``moxtw quickstart`` printed (all of them; then with some missing or
wrong)."""

from __future__ import annotations

import os
import sys
import tomllib

import dns.rdata
import dns.rdataclass
import dns.rdatatype
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.names import dns as tdns
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw.dkim import load_private_key
from moxtw.dnscheck import Check, Record, dkim_record, format_checks, txt_data
from tests.delivery.peers import DNSServer
from tests.helpers import ROOT
from tests.test_quickstart import quickstart, records, txt_value


def payload(rtype: str, data: str) -> object:
    """A twisted.names record for zone-file ``data`` (parsed by dnspython)."""
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), data)
    if rtype == "MX":
        return tdns.Record_MX(rd.preference, rd.exchange.to_text(omit_final_dot=True).encode())
    if rtype == "A":
        return tdns.Record_A(rd.address)
    if rtype == "AAAA":
        return tdns.Record_AAAA(rd.address)
    if rtype == "PTR":
        return tdns.Record_PTR(rd.target.to_text(omit_final_dot=True).encode())
    if rtype == "TXT":
        return tdns.Record_TXT(*rd.strings)
    raise AssertionError(f"unexpected record type {rtype}")


def serve(server: DNSServer, lines: list[tuple[str, str, str]]) -> None:
    for name, rtype, data in lines:
        server.zone.add(name.rstrip("."), getattr(tdns, rtype), payload(rtype, data))


class DNSCheckTests(TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.dir, self.out = await deferToThread(quickstart, self, "--ip", "127.0.0.1", "--ip", "::1")
        self.config = self.dir / "moxtw.toml"
        self.printed = records(self.out)
        self.server = DNSServer(self)
        self.selectors = tomllib.loads(self.config.read_text())["domains"]["example.org"]["dkim"]["sign"]

    async def dnscheck(self, *args: str) -> tuple[int, str, str]:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        out, err, code = await getProcessOutputAndValue(
            sys.executable,
            ["-m", "moxtw.cli", "dnscheck", *args, "--nameserver", f"127.0.0.1:{self.server.port}"],
            env=env,
            path=str(ROOT),
        )
        return code, out.decode(), err.decode()

    def lines(self, out: str) -> dict[str, str]:
        """Check name -> its line, from dnscheck's output."""
        found = {}
        for line in out.splitlines():
            status, _, rest = line.partition(" ")
            if status in ("OK", "MISSING", "WRONG", "ERROR"):
                name = rest.strip().split("  ")[0].removesuffix(" (optional)")
                found[name] = line
        return found

    async def test_all_printed_records(self) -> None:
        serve(self.server, self.printed)
        code, out, err = await self.dnscheck("example.org", "--config", str(self.config))
        self.assertEqual(code, 0, out + err)
        checks = self.lines(out)
        self.assertEqual(
            sorted(checks),
            sorted(["MX", "A/AAAA mail.example.org", "PTR 127.0.0.1", "PTR ::1",
                    *(f"DKIM {s}" for s in self.selectors), "SPF", "SPF mail.example.org", "DMARC",
                    "TLSRPT", "MTA-STS"]),
        )
        for name, line in checks.items():
            self.assertTrue(line.startswith("OK "), f"{name}: {line}\n{out}")
        self.assertIn("pass for 127.0.0.1, ::1", checks["SPF"])
        self.assertIn("forward-confirmed", checks["PTR 127.0.0.1"])
        for selector in self.selectors:
            self.assertIn("key matches the configured key file", checks[f"DKIM {selector}"])
        self.assertIn("all required records are in place", out)

    async def test_missing_dkim_and_wrong_spf(self) -> None:
        kept = [
            (n, t, d) for n, t, d in self.printed
            if "._domainkey." not in n and not (n == "example.org." and t == "TXT")
        ]
        kept.append(("example.org.", "TXT", '"v=spf1 ip4:192.0.2.1 -all"'))
        serve(self.server, kept)
        code, out, err = await self.dnscheck("example.org", "--config", str(self.config))
        self.assertEqual(code, 1, out + err)
        checks = self.lines(out)
        dkim = [f"DKIM {s}" for s in self.selectors]
        for name in dkim:
            self.assertTrue(checks[name].startswith("MISSING "), out)
        self.assertTrue(checks["SPF"].startswith("WRONG "), out)
        self.assertIn("fail for 127.0.0.1", checks["SPF"])
        for name in ("MX", "A/AAAA mail.example.org", "PTR 127.0.0.1", "DMARC", "TLSRPT", "MTA-STS"):
            self.assertTrue(checks[name].startswith("OK "), f"{name}\n{out}")
        # The records to add are the ones quickstart printed.
        doc_keys = {p.name: p for p in (self.dir / "dkim").iterdir()}
        for name in dkim:
            selector = name.split()[1]
            key = load_private_key(doc_keys[f"example.org-{selector}.pem"])
            self.assertIn(f"add: {dkim_record('example.org', selector, key).zone_line()}", out)
        self.assertIn('expected: example.org. IN TXT   "v=spf1 ip4:127.0.0.1 ip6:::1 -all"', out)
        self.assertIn("3 required record(s) missing or wrong", out)

    async def test_without_config_and_dns_failures(self) -> None:
        """Without --config the MX target is checked; a SERVFAIL is an ERROR line, and
        for an optional record it does not change the exit status."""
        serve(self.server, [r for r in self.printed if r[2] != '"v=spf1 a -all"'])
        self.server.zone.servfail.add("_smtp._tls.example.org")
        code, out, err = await self.dnscheck("example.org")
        self.assertEqual(code, 0, out + err)
        checks = self.lines(out)
        self.assertIn("(checking mail.example.org)", checks["MX"])
        self.assertTrue(checks["SPF mail.example.org"].startswith("MISSING "), out)
        self.assertTrue(checks["TLSRPT"].startswith("ERROR "), out)
        self.assertFalse(any(n.startswith("DKIM") for n in checks), out)
        self.assertIn("without --config, DKIM selectors are not checked", out)

        self.server.zone.servfail.add("_dmarc.example.org")
        code, out, err = await self.dnscheck("example.org")
        self.assertEqual(code, 1, out + err)
        self.assertTrue(self.lines(out)["DMARC"].startswith("ERROR "), out)

    async def test_wrong_mx_and_ptr(self) -> None:
        kept = [r for r in self.printed if r[1] not in ("MX", "PTR")]
        kept.append(("example.org.", "MX", "10 mx.elsewhere.example."))
        kept.append(("1.0.0.127.in-addr.arpa.", "PTR", "localhost."))
        serve(self.server, kept)
        code, out, err = await self.dnscheck("example.org", "--config", str(self.config))
        self.assertEqual(code, 1, out + err)
        checks = self.lines(out)
        self.assertTrue(checks["MX"].startswith("WRONG "), out)
        self.assertIn("expected: example.org. IN MX    10 mail.example.org.", out)
        self.assertTrue(checks["PTR 127.0.0.1"].startswith("WRONG "), out)
        self.assertIn("has PTR localhost, not mail.example.org", checks["PTR 127.0.0.1"])
        self.assertTrue(checks["PTR ::1"].startswith("MISSING "), out)
        self.assertIn("ask your hosting provider", out)

    async def test_usage_errors(self) -> None:
        code, out, err = await self.dnscheck("example.com", "--config", str(self.config))
        self.assertEqual(code, 2, out + err)
        self.assertIn("domain example.com is not in", err)
        code, out, err = await self.dnscheck("example.org", "--ip", "nope")
        self.assertEqual(code, 2, out + err)
        self.assertNotIn("Traceback", err)


class FormatTests(SynchronousTestCase):
    def test_txt_data_splits_long_values(self) -> None:
        value = "v=DKIM1; k=rsa; p=" + "A" * 400
        data = txt_data(value)
        self.assertEqual(data.count('" "'), 1)
        self.assertEqual(txt_value(data), value)

    def test_summary(self) -> None:
        fix = Record("example.org.", "MX", "10 mail.example.org.")
        text = format_checks([
            Check("MX", "MISSING", "example.org has no MX record", (fix,)),
            Check("TLSRPT", "MISSING", "none", optional=True),
        ])
        self.assertIn("MISSING  MX", text)
        self.assertIn("add: example.org. IN MX    10 mail.example.org.", text)
        self.assertIn("TLSRPT (optional)", text)
        self.assertTrue(text.endswith("1 required record(s) missing or wrong; 1 optional"), text)

