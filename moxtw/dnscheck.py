"""The DNS records a moxtw domain needs, and ``moxtw dnscheck DOMAIN``.

The record builders (:func:`mx_record`, :func:`spf_record`, :func:`dkim_record`, ...) are
shared with ``moxtw quickstart``, which prints them for a new domain, and with the check,
which prints the record to add for each one that is missing or wrong.

``moxtw dnscheck DOMAIN [--config FILE] [--nameserver HOST:PORT] [--ip IP]`` looks the
records up with dnspython through the configured resolver (``[dns]``, or ``--nameserver``)
and prints one line per check: MX, the host name's A/AAAA, reverse DNS (forward-confirmed),
SPF (evaluated with pyspf for our IPs), each DKIM selector's key, DMARC; TLSRPT and
MTA-STS are optional.  It exits 1 when a required record is missing or wrong.  It is a
command-line tool without a reactor, so the lookups simply block.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from .address import DomainError, domain_to_ascii, parse_domain
from .config import Config, ConfigError, DNSConfig, _nameserver, load_config
from .delivery.mx import make_dns_resolver
from .dkim import DKIMKeyError, PrivateKey, dns_txt_strings, load_private_key

if TYPE_CHECKING:  # imported when checking: pyspf and dkimpy cost every `moxtw` command time
    from .mailauth import Evaluator

__all__ = [
    "DMARC_REPORTS",
    "TLS_REPORTS",
    "Check",
    "Record",
    "add_cli",
    "address_records",
    "check_domain",
    "dkim_record",
    "dmarc_record",
    "helo_spf_record",
    "mta_sts_policy",
    "mta_sts_policy_id",
    "mta_sts_record",
    "mx_record",
    "ptr_record",
    "spf_record",
    "tlsrpt_record",
]

#: Localparts of the addresses that receive DMARC and TLS aggregate reports.
DMARC_REPORTS = "dmarc-reports"
TLS_REPORTS = "tls-reports"

#: ``max_age`` of the MTA-STS policy quickstart suggests (testing mode: one day).
MTA_STS_MAX_AGE = 86400


# --- records ------------------------------------------------------------------------------


@attrs.frozen
class Record:
    """One DNS record in zone-file terms: absolute ``name`` (trailing dot), ``type``,
    and ``data`` as a zone file writes it (TXT data quoted)."""

    name: str
    type: str
    data: str

    def zone_line(self, width: int = 0) -> str:
        return f"{self.name:<{width}} IN {self.type:<5} {self.data}".rstrip()


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def txt_data(value: str) -> str:
    """``value`` as TXT record data: quoted strings of at most 255 bytes."""
    return " ".join(
        '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in dns_txt_strings(value)
    )


def mx_record(domain: str, hostname: str) -> Record:
    return Record(_fqdn(domain), "MX", f"10 {_fqdn(hostname)}")


def address_records(hostname: str, ips: Sequence[str]) -> list[Record]:
    """A and AAAA records of ``hostname`` for ``ips``."""
    return [
        Record(_fqdn(hostname), "AAAA" if ipaddress.ip_address(ip).version == 6 else "A", str(ipaddress.ip_address(ip)))
        for ip in ips
    ]


def ptr_record(ip: str, hostname: str) -> Record:
    """The reverse DNS record for ``ip`` (set by whoever owns the IP range)."""
    return Record(dns.reversename.from_address(ip).to_text(), "PTR", _fqdn(hostname))


def spf_value(ips: Sequence[str]) -> str:
    """``v=spf1 ip4:... ip6:... -all`` for our IPs, or ``v=spf1 mx -all`` without them."""
    terms = [f"ip{ipaddress.ip_address(ip).version}:{ipaddress.ip_address(ip)}" for ip in ips]
    return "v=spf1 " + " ".join(terms or ["mx"]) + " -all"


def spf_record(domain: str, ips: Sequence[str]) -> Record:
    return Record(_fqdn(domain), "TXT", txt_data(spf_value(ips)))


def helo_spf_record(hostname: str) -> Record:
    """SPF for the host name itself: checked for mail with an empty MAIL FROM (DSNs),
    whose SPF identity is the EHLO name."""
    return Record(_fqdn(hostname), "TXT", txt_data("v=spf1 a -all"))


def dkim_record(domain: str, selector: str, key: PrivateKey) -> Record:
    return Record(f"{selector}._domainkey.{_fqdn(domain)}", "TXT", txt_data(key.dns_record()))


def dmarc_value(domain: str) -> str:
    return f"v=DMARC1; p=none; rua=mailto:{DMARC_REPORTS}@{domain}"


def dmarc_record(domain: str) -> Record:
    return Record(f"_dmarc.{_fqdn(domain)}", "TXT", txt_data(dmarc_value(domain)))


def tlsrpt_record(domain: str) -> Record:
    return Record(f"_smtp._tls.{_fqdn(domain)}", "TXT", txt_data(f"v=TLSRPTv1; rua=mailto:{TLS_REPORTS}@{domain}"))


def mta_sts_policy_id(now: datetime.datetime | None = None) -> str:
    """A new MTA-STS policy id: the UTC time, ``20260115T103000``; change it whenever
    the policy file changes, so senders fetch it again."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y%m%dT%H%M%S")


def mta_sts_record(domain: str, policy_id: str) -> Record:
    """``_mta-sts`` TXT; ``policy_id`` (1-32 letters and digits) changes with the policy."""
    return Record(f"_mta-sts.{_fqdn(domain)}", "TXT", txt_data(f"v=STSv1; id={policy_id}"))


def mta_sts_policy(hostnames: Sequence[str], mode: str = "testing", max_age: int = MTA_STS_MAX_AGE) -> str:
    """The policy file served at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``."""
    lines = ["version: STSv1", f"mode: {mode}"]
    lines += [f"mx: {h.rstrip('.')}" for h in hostnames]
    lines.append(f"max_age: {max_age}")
    return "\r\n".join(lines) + "\r\n"


# --- lookups ------------------------------------------------------------------------------


class LookupFailed(Exception):
    """A DNS failure that is not an answer (SERVFAIL, timeout, refused)."""


@attrs.define
class Lookups:
    resolver: dns.resolver.Resolver

    def query(self, name: str, rdtype: str) -> list[Any]:
        """The records of ``rdtype`` at ``name``; [] for NXDOMAIN or no such records."""
        try:
            answer = self.resolver.resolve(
                dns.name.from_text(_fqdn(name)), rdtype, search=False, raise_on_no_answer=False
            )
        except dns.resolver.NXDOMAIN:
            return []
        except dns.exception.DNSException as e:
            raise LookupFailed(f"looking up {rdtype} of {name}: {e}") from None
        return list(answer)

    def txt(self, name: str) -> list[str]:
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self.query(name, "TXT")]

    def addresses(self, name: str) -> list[str]:
        return [r.address for t in ("A", "AAAA") for r in self.query(name, t)]


# --- checks -------------------------------------------------------------------------------

OK, MISSING, WRONG, ERROR = "OK", "MISSING", "WRONG", "ERROR"


@attrs.frozen
class Check:
    """The outcome of one check: ``status`` OK, MISSING, WRONG or ERROR (lookup failed);
    ``fix``: records to add (or, for WRONG, what the record should be)."""

    name: str
    status: str
    detail: str
    fix: tuple[Record, ...] = ()
    optional: bool = False
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status != OK and not self.optional


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            tags.setdefault(key.strip().lower(), value.strip())
    return tags


def _same_ip(a: str, b: str) -> bool:
    return ipaddress.ip_address(a) == ipaddress.ip_address(b)


@attrs.define
class Checker:
    lookups: Lookups
    evaluator: Evaluator
    domain: str
    hostname: str
    ips: tuple[str, ...]
    dkim: tuple[tuple[str, PrivateKey | None, bool], ...] = ()  # (selector, key, signs)
    checks: list[Check] = attrs.field(factory=list)

    def add(self, check: Check) -> None:
        self.checks.append(check)

    def guard(self, name: str, optional: bool, fn: Any) -> None:
        try:
            fn()
        except LookupFailed as e:
            self.add(Check(name, ERROR, str(e), optional=optional))

    def run(self) -> list[Check]:
        self.guard("MX", False, self.check_mx)
        if self.hostname:
            self.guard(f"A/AAAA {self.hostname}", False, self.check_addresses)
        for selector, key, signs in self.dkim:
            self.guard(f"DKIM {selector}", not signs, lambda s=selector, k=key, o=not signs: self.check_dkim(s, k, o))
        self.guard("SPF", False, self.check_spf)
        if self.hostname:
            self.guard(f"SPF {self.hostname}", True, self.check_helo_spf)
        self.guard("DMARC", False, self.check_dmarc)
        self.guard("TLSRPT", True, self.check_tlsrpt)
        self.guard("MTA-STS", True, self.check_mta_sts)
        return self.checks

    # --- MX, addresses, reverse DNS ---

    def check_mx(self) -> None:
        records = self.lookups.query(self.domain, "MX")
        targets = [(r.preference, r.exchange.to_text(omit_final_dot=True).lower()) for r in records]
        expected = (mx_record(self.domain, self.hostname),) if self.hostname else ()
        if not targets:
            self.add(Check("MX", MISSING, f"{self.domain} has no MX record", expected))
            return
        if any(t in ("", ".") for _, t in targets):
            self.add(Check("MX", WRONG, f"{self.domain} has a null MX (it accepts no mail)", expected))
            return
        shown = ", ".join(f"{p} {t}" for p, t in sorted(targets))
        if not self.hostname:
            self.hostname = min(targets)[1]
            self.add(Check("MX", OK, f"{self.domain} MX {shown} (checking {self.hostname})"))
        elif self.hostname in (t for _, t in targets):
            self.add(Check("MX", OK, f"{self.domain} MX {shown}"))
        else:
            self.add(Check("MX", WRONG, f"{self.domain} MX {shown}, not {self.hostname}", expected))

    def check_addresses(self) -> None:
        name = f"A/AAAA {self.hostname}"
        found = self.lookups.addresses(self.hostname)
        if not self.ips:
            if found:
                self.add(Check(name, OK, ", ".join(found)))
                self.ips = tuple(found)
            else:
                self.add(Check(name, MISSING, f"{self.hostname} has no A or AAAA record (pass --ip to see the records to add)"))
            self.check_ptrs(found)
            return
        missing = [ip for ip in self.ips if not any(_same_ip(ip, f) for f in found)]
        extra = [f for f in found if not any(_same_ip(ip, f) for ip in self.ips)]
        if missing:
            have = f" (has {', '.join(found)})" if found else ""
            self.add(Check(name, MISSING, f"no record for {', '.join(missing)}{have}", tuple(address_records(self.hostname, missing))))
        elif extra:
            self.add(Check(name, WRONG, f"also points to {', '.join(extra)}, which is not this server (remove it)"))
        else:
            self.add(Check(name, OK, ", ".join(found)))
        self.check_ptrs(found)

    def check_ptrs(self, forward: Sequence[str]) -> None:
        for ip in self.ips:
            self.guard(f"PTR {ip}", False, lambda ip=ip: self.check_ptr(ip, forward))

    def check_ptr(self, ip: str, forward: Sequence[str]) -> None:
        name = f"PTR {ip}"
        expected = (ptr_record(ip, self.hostname),)
        note = ("reverse DNS is set by whoever owns the IP range: ask your hosting provider",)
        reverse = dns.reversename.from_address(ip).to_text()
        names = [r.target.to_text(omit_final_dot=True).lower() for r in self.lookups.query(reverse, "PTR")]
        if not names:
            self.add(Check(name, MISSING, f"no reverse DNS for {ip}", expected, notes=note))
        elif self.hostname not in names:
            self.add(Check(name, WRONG, f"{ip} has PTR {', '.join(names)}, not {self.hostname}", expected, notes=note))
        elif not any(_same_ip(ip, f) for f in forward):
            self.add(Check(name, WRONG, f"PTR is {self.hostname}, but {self.hostname} does not resolve to {ip}"))
        else:
            self.add(Check(name, OK, f"{self.hostname} (forward-confirmed)"))

    # --- SPF ---

    def _spf(self, name: str, label: str, optional: bool, expected: Record, sender: str) -> None:
        records = [r for r in self.lookups.txt(name) if r.lower().startswith("v=spf1") and r[6:7] in ("", " ")]
        if not records:
            self.add(Check(label, MISSING, f"no SPF record at {name}", (expected,), optional))
            return
        if len(records) > 1:
            self.add(Check(label, WRONG, f"{len(records)} SPF records at {name}; there must be one (merge them)",
                           (expected,), optional))
            return
        if not self.ips:
            self.add(Check(label, OK, f"{records[0]} (no IPs known to evaluate it: pass --ip)", optional=optional))
            return
        results = {ip: self.evaluator.check_spf(ip, sender, self.hostname or name)[0] for ip in self.ips}
        bad = {ip: r for ip, r in results.items() if r != "pass"}
        if bad:
            why = ", ".join(f"{r} for {ip}" for ip, r in bad.items())
            self.add(Check(label, WRONG, f"{records[0]!r} gives {why}", (expected,), optional))
        else:
            self.add(Check(label, OK, f"{records[0]} (pass for {', '.join(self.ips)})", optional=optional))

    def check_spf(self) -> None:
        self._spf(self.domain, "SPF", False, spf_record(self.domain, self.ips), f"postmaster@{self.domain}")

    def check_helo_spf(self) -> None:
        self._spf(self.hostname, f"SPF {self.hostname}", True, helo_spf_record(self.hostname), f"postmaster@{self.hostname}")

    # --- DKIM ---

    def check_dkim(self, selector: str, key: PrivateKey | None, optional: bool) -> None:
        name = f"DKIM {selector}"
        at = f"{selector}._domainkey.{self.domain}"
        if key is None:
            self.add(Check(name, ERROR, "the configured key file cannot be read", optional=optional))
            return
        expected = (dkim_record(self.domain, selector, key),)
        records = [r for r in self.lookups.txt(at) if "p=" in r]
        if not records:
            self.add(Check(name, MISSING, f"no DKIM record at {at}", expected, optional))
            return
        if len(records) > 1:
            self.add(Check(name, WRONG, f"{len(records)} TXT records at {at}; there must be one", expected, optional))
            return
        tags = _tags(records[0])
        public = re.sub(r"\s+", "", tags.get("p", ""))
        if tags.get("v", "DKIM1") != "DKIM1" or tags.get("k", "rsa").lower() != key.key_type:
            self.add(Check(name, WRONG, f"record is not a v=DKIM1 {key.key_type} key", expected, optional))
        elif public != key.public_key:
            what = "is revoked (empty p=)" if not public else "has a different public key than the configured key file"
            self.add(Check(name, WRONG, f"record at {at} {what}", expected, optional))
        else:
            self.add(Check(name, OK, f"{key.key_type} key matches the configured key file", optional=optional))

    # --- DMARC, TLSRPT, MTA-STS ---

    def check_dmarc(self) -> None:
        from .mailauth import organizational_domain

        expected = (dmarc_record(self.domain),)
        where = [self.domain]
        org = organizational_domain(self.domain)
        if org != self.domain:
            where.append(org)
        for domain in where:
            records = [r for r in self.lookups.txt(f"_dmarc.{domain}") if r.lower().startswith("v=dmarc1")]
            if not records:
                continue
            if len(records) > 1:
                self.add(Check("DMARC", WRONG, f"{len(records)} DMARC records at _dmarc.{domain}; there must be one", expected))
                return
            tags = _tags(records[0])
            policy = tags.get("p", "").lower()
            if tags.get("v") != "DMARC1" or policy not in ("none", "quarantine", "reject"):
                self.add(Check("DMARC", WRONG, f"{records[0]!r} does not parse (needs v=DMARC1 first and p=none, quarantine or reject)", expected))
                return
            if domain != self.domain:
                policy = tags.get("sp", policy).lower()
            detail = f"p={policy}" + (f" rua={tags['rua']}" if tags.get("rua") else " (no rua=: no aggregate reports)")
            if domain != self.domain:
                detail += f" (the policy of the organisational domain {domain})"
            self.add(Check("DMARC", OK, detail))
            return
        self.add(Check("DMARC", MISSING, f"no DMARC record at _dmarc.{self.domain}", expected))

    def check_tlsrpt(self) -> None:
        expected = (tlsrpt_record(self.domain),)
        records = [r for r in self.lookups.txt(f"_smtp._tls.{self.domain}") if r.startswith("v=TLSRPTv1")]
        if not records:
            self.add(Check("TLSRPT", MISSING, f"no TLSRPT record at _smtp._tls.{self.domain}", expected, True))
        elif len(records) > 1 or not _tags(records[0]).get("rua"):
            self.add(Check("TLSRPT", WRONG, "there must be one record, with rua=", expected, True))
        else:
            self.add(Check("TLSRPT", OK, f"rua={_tags(records[0])['rua']}", optional=True))

    def check_mta_sts(self) -> None:
        records = [r for r in self.lookups.txt(f"_mta-sts.{self.domain}") if r.startswith("v=STSv1")]
        expected = (mta_sts_record(self.domain, mta_sts_policy_id()),)
        policy = f"https://mta-sts.{self.domain}/.well-known/mta-sts.txt"
        notes = (f"the policy itself ({policy}) is not fetched: check it with a browser",)
        if not records:
            self.add(Check("MTA-STS", MISSING, f"no MTA-STS record at _mta-sts.{self.domain}", expected, True))
            return
        pid = _tags(records[0]).get("id", "")
        if len(records) > 1 or not re.fullmatch(r"[A-Za-z0-9]{1,32}", pid):
            self.add(Check("MTA-STS", WRONG, "there must be one record, with id= of 1 to 32 letters and digits", expected, True, notes))
        else:
            self.add(Check("MTA-STS", OK, f"id={pid}", optional=True, notes=notes))


def check_domain(
    domain: str,
    *,
    resolver: dns.resolver.Resolver,
    timeout: float,
    hostname: str = "",
    ips: Sequence[str] = (),
    dkim: Sequence[tuple[str, PrivateKey | None, bool]] = (),
) -> list[Check]:
    """Run every check of ``domain``; blocking (DNS lookups)."""
    from .mailauth import Evaluator

    checker = Checker(
        Lookups(resolver),
        Evaluator(resolver, timeout=timeout),
        domain.lower().rstrip("."),
        hostname.lower().rstrip("."),
        tuple(str(ipaddress.ip_address(ip)) for ip in ips),
        tuple(dkim),
    )
    return checker.run()


def format_checks(checks: Sequence[Check]) -> str:
    width = max((len(c.name) + (11 if c.optional else 0) for c in checks), default=0)
    lines = []
    for c in checks:
        name = c.name + (" (optional)" if c.optional else "")
        lines.append(f"{c.status:<8} {name:<{width}}  {c.detail}")
        label = "add:" if c.status == MISSING else "expected:"
        for record in c.fix:
            lines.append(f"{'':<8} {label} {record.zone_line()}")
        for note in c.notes:
            lines.append(f"{'':<8} ({note})")
    failed = sum(c.failed for c in checks)
    optional = sum(c.status != OK and c.optional for c in checks)
    if failed:
        lines.append(f"\n{failed} required record(s) missing or wrong" + (f"; {optional} optional" if optional else ""))
    else:
        lines.append("\nall required records are in place" + (f" ({optional} optional missing or wrong)" if optional else ""))
    return "\n".join(lines)


# --- moxtw dnscheck -----------------------------------------------------------------------


def _dkim_from_config(config: Config, domain: str) -> list[tuple[str, PrivateKey | None, bool]]:
    out: list[tuple[str, PrivateKey | None, bool]] = []
    dom = config.domains.get(domain)
    if dom is None:
        return out
    for name, selector in dom.dkim_selectors.items():
        try:
            key: PrivateKey | None = load_private_key(selector.key_file)
        except DKIMKeyError:
            key = None
        out.append((name, key, name in dom.dkim_sign))
    return out


def cmd_dnscheck(args: argparse.Namespace) -> int:
    domain = args.domain.lower().rstrip(".")
    try:
        domain = domain_to_ascii(parse_domain(domain))
    except DomainError as e:
        print(f"moxtw: bad domain {args.domain!r}: {e}", file=sys.stderr)
        return 2
    try:
        ips = [str(ipaddress.ip_address(ip)) for ip in args.ip]
    except ValueError as e:
        print(f"moxtw: --ip: {e}", file=sys.stderr)
        return 2
    dns_config = DNSConfig()
    hostname = ""
    dkim: list[tuple[str, PrivateKey | None, bool]] = []
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as e:
            print(str(e), file=sys.stderr)
            return 2
        if domain not in config.domains:
            known = ", ".join(sorted(config.domains)) or "none"
            print(f"moxtw: domain {domain} is not in {args.config} (configured: {known})", file=sys.stderr)
            return 2
        dns_config = config.dns
        hostname = config.hostname
        ips = ips or list(config.dnsbl_ips)
        dkim = _dkim_from_config(config, domain)
    if args.nameserver:
        try:
            servers = tuple(_nameserver(s) for s in args.nameserver)
        except ValueError:
            print(f"moxtw: --nameserver: expected IP or IP:PORT such as 127.0.0.1:53, got {args.nameserver}", file=sys.stderr)
            return 2
        dns_config = attrs.evolve(dns_config, nameservers=servers)
    resolver = make_dns_resolver(dns_config)
    resolver.cache = None
    checks = check_domain(domain, resolver=resolver, timeout=dns_config.timeout, hostname=hostname, ips=ips, dkim=dkim)
    print(format_checks(checks))
    if not args.config:
        print("(without --config, DKIM selectors are not checked)")
    return 1 if any(c.failed for c in checks) else 0


def add_cli(subparsers: Any) -> None:
    """Register ``moxtw dnscheck`` on the ``moxtw`` command's subparsers."""
    p = subparsers.add_parser(
        "dnscheck",
        help="check a domain's DNS records (MX, SPF, DKIM, DMARC, ...) and print what is missing",
        description="Look up the DNS records DOMAIN needs for sending and receiving with moxtw "
        "and print one line per check (OK, MISSING, WRONG, ERROR) with the record to add. "
        "Exit status 1 when a required record is missing or wrong.",
    )
    p.add_argument("domain", help="the domain, e.g. example.org")
    p.add_argument("--config", "-c", type=Path, default=None,
                   help="moxtw configuration: host name, DKIM selectors and keys, [dns] resolver, [dnsbl] ips")
    p.add_argument("--nameserver", action="append", default=[], metavar="HOST:PORT",
                   help="resolver to ask instead of [dns] nameservers (repeatable)")
    p.add_argument("--ip", action="append", default=[], metavar="IP",
                   help="this server's public IP (repeatable; default: [dnsbl] ips, else the host name's A/AAAA)")
    p.set_defaults(func=cmd_dnscheck)
