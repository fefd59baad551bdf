"""``moxtw quickstart EMAIL``: a complete production configuration for a new domain.

Writes, into ``--dir`` (default ``./moxtw-config``), never overwriting anything:

* ``moxtw.toml``: every setting spelled out and commented, like localserve's file, with
  the domain of EMAIL, an account named after its localpart (EMAIL as its address, plus
  postmaster@, dmarc-reports@ and tls-reports@ so that reports and bounces land in its
  Inbox, and ``LOCALPART+fromid@DOMAIN`` as FromID login address), generated account
  and admin passwords stored only as scrypt hashes, listeners on 25, 587 and 465 and the
  webapi and metrics on 127.0.0.1, and a commented outgoing webhook;
* ``dkim/DOMAIN-YYYYa.pem`` (RSA 2048) and ``dkim/DOMAIN-YYYYb.pem`` (Ed25519), mode
  0600, both used for signing;
* ``tls/fullchain.pem`` and ``tls/privkey.pem``: a self-signed placeholder certificate for
  the host name, so the configuration passes ``moxtw checkconfig`` and the daemon starts
  at once; the operator replaces the two files with a real certificate.

Paths in the file are relative to it, so the directory can be moved (to /etc/moxtw).
It then prints the files, the passwords (once: only hashes are stored) and the DNS
records to add (the record builders are :mod:`moxtw.dnscheck`'s, which checks them).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import re
import secrets
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from .address import AddressError, DomainError, domain_to_ascii, parse_address, parse_domain
from .config import ConfigError, parse_config
from .dkim import generate_key, parse_private_key, write_key_file
from .dnscheck import (
    DMARC_REPORTS,
    TLS_REPORTS,
    Record,
    address_records,
    dkim_record,
    dmarc_record,
    helo_spf_record,
    mta_sts_policy,
    mta_sts_policy_id,
    mta_sts_record,
    mx_record,
    ptr_record,
    spf_record,
    tlsrpt_record,
)
from .localserve import atomic_write, generate_certificate
from .passwords import hash_password

__all__ = ["Plan", "add_cli", "cmd_quickstart", "default_hostname", "render_config"]

DEFAULT_DIR = "moxtw-config"
DEFAULT_DATA_DIR = "/var/lib/moxtw"

# Localparts quickstart accepts: ASCII dot-atoms without the catchall separator "+".
_LOCALPART_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(text, ensure_ascii=False)


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _q(name)


def default_hostname(domain: str, fqdn: str | None = None) -> str:
    """This machine's FQDN if it is a name below ``domain`` (``mx1.example.org``),
    else ``mail.DOMAIN``."""
    name = (socket.getfqdn() if fqdn is None else fqdn).lower().rstrip(".")
    if name.endswith("." + domain):
        return name
    return f"mail.{domain}"


def new_password() -> str:
    """24 characters from the URL-safe base64 alphabet (144 bits)."""
    return secrets.token_urlsafe(18)


@attrs.frozen
class Plan:
    """What quickstart writes, decided from its arguments."""

    email: str
    localpart: str
    domain: str  # ASCII (A-labels)
    hostname: str
    ips: tuple[str, ...]
    directory: Path
    data_dir: str
    year: int

    @property
    def account(self) -> str:
        return self.localpart.lower()

    @property
    def selectors(self) -> tuple[tuple[str, str], ...]:
        """(selector, algorithm): RSA for every verifier, Ed25519 (RFC 8463) next to it."""
        return ((f"{self.year}a", "rsa"), (f"{self.year}b", "ed25519"))

    def key_file(self, selector: str) -> Path:
        return Path("dkim") / f"{self.domain}-{selector}.pem"

    @property
    def addresses(self) -> list[str]:
        out = [self.email]
        for local in ("postmaster", DMARC_REPORTS, TLS_REPORTS):
            address = f"{local}@{self.domain}"
            if address.lower() not in (a.lower() for a in out):
                out.append(address)
        return out

    @property
    def fromid_login(self) -> str:
        return f"{self.localpart}+fromid@{self.domain}"

    def paths(self) -> list[Path]:
        """Every file written, relative to the directory, the configuration last."""
        return [*(self.key_file(s) for s, _ in self.selectors), CERT_FILE, KEY_FILE, CONFIG_FILE]


CONFIG_FILE = Path("moxtw.toml")
CERT_FILE = Path("tls/fullchain.pem")
KEY_FILE = Path("tls/privkey.pem")


def _endpoints(port: int, ips: Sequence[str]) -> str:
    """``tcp:PORT`` (every IPv4 address: also works behind 1:1 NAT, where the public IPv4
    address is not on an interface), plus ``tcp6:PORT:interface=IP`` for each IPv6 address."""
    eps = [f"tcp:{port}"]
    for ip in ips:
        if ipaddress.ip_address(ip).version == 6:
            eps.append(f"tcp6:{port}:interface={ip.replace(':', chr(92) + ':')}")
    return "[" + ", ".join(_q(e) for e in eps) + "]"


def render_config(plan: Plan, *, password_hash: str, admin_password_hash: str) -> str:
    """The commented ``moxtw.toml`` for ``plan``."""
    d, h, acct = plan.domain, plan.hostname, plan.account
    sel_rsa, sel_ed = (s for s, _ in plan.selectors)
    sign = "[" + ", ".join(_q(s) for s, _ in plan.selectors) + "]"
    selector_tables = "\n".join(
        f"[domains.{_q(d)}.dkim.selectors.{_key(s)}]\nkey_file = {_q(str(plan.key_file(s)))}"
        f"{'  # RSA 2048' if alg == 'rsa' else '  # Ed25519 (RFC 8463)'}\nheaders = []"
        for s, alg in plan.selectors
    )
    ips = "[" + ", ".join(_q(ip) for ip in plan.ips) + "]"
    addresses = "[" + ", ".join(_q(a) for a in plan.addresses) + "]"
    return f"""\
# moxtw configuration for {d}, written by `moxtw quickstart {plan.email}`.
# Check it with: moxtw checkconfig moxtw.toml
# Run it with:   twistd --nodaemon --pidfile= moxtw --config moxtw.toml  (see docs/systemd.md)
# Durations are written like "72h", "30m", "5s"; sizes like "100MiB".  Unknown keys are
# errors.  Relative paths are relative to this file.

# Host name of this mail server: EHLO, Message-IDs, Received headers.  The domain's MX
# record points to it, and the reverse DNS (PTR) of this server's IPs must name it.
hostname = {_q(h)}

# Database (SQLite) and message files: must be writable by the user moxtw runs as.
data_dir = {_q(plan.data_dir)}

# Admin password (admin API, `moxtw queue ...`): printed once by quickstart, stored only
# as this hash.  Change it with: moxtw setpassword --admin --config moxtw.toml
admin_password_hash = {_q(admin_password_hash)}

# Largest message accepted through the webapi and SMTP.
max_message_size = "100MiB"

localserve = false

[listeners]
# Endpoint strings (Twisted's serverFromString syntax).  "tcp:25" listens on every IPv4
# address (also behind 1:1 NAT); IPv6 on the addresses given to quickstart with --ip.
# For every IPv6 address too, replace "tcp:25" with "tcp6:25:interface=\\\\:\\\\:" (one
# dual-stack socket on Linux).  Ports below 1024 need CAP_NET_BIND_SERVICE
# (etc/moxtw.service grants it).
smtp = {_endpoints(25, plan.ips)}          # incoming mail (for the account's addresses; bounces)
submission = {_endpoints(587, plan.ips)}   # SMTP submission: STARTTLS, then AUTH
submissions = {_endpoints(465, plan.ips)}  # SMTP submission with implicit TLS
http = ["tcp:1080:interface=127.0.0.1"]    # webapi at /webapi/v0/; put a TLS proxy in front for remote clients
metrics = ["tcp:1081:interface=127.0.0.1"] # Prometheus /metrics

[tls]
# PLACEHOLDER: a self-signed certificate generated by quickstart, so that moxtw starts
# right away.  Sending servers accept it for opportunistic STARTTLS, but submission
# clients and MTA-STS need a real certificate for the host name: replace both files
# and reload (or restart) moxtw.  With Let's Encrypt:
#   certbot certonly --standalone -d {h}
# and a certbot deploy hook that copies fullchain.pem and privkey.pem from
# /etc/letsencrypt/live/{h}/ over these files (readable by the moxtw user).
cert_file = {_q(str(CERT_FILE))}
key_file = {_q(str(KEY_FILE))}

[webapi]
path = "/webapi/"            # the webapi is served below this path: /webapi/v0/Send
max_request_size = "10MiB"   # larger request bodies are refused before parsing
workers = 1                  # extra processes serving the webapi on the same port

[queue]
port = 25                    # port dialled on MX hosts
max_concurrent = 100         # deliveries in flight at once
max_per_domain = 10          # deliveries in flight per destination domain
retry_scale = 1              # divides every retry interval; keep 1 in production

[webhooks]
timeout = "60s"              # for one webhook request: connect, send, read the answer

[dns]
# Resolvers for MX lookups, DNSBL checks, SPF/DKIM/DMARC and `moxtw dnscheck`;
# empty: /etc/resolv.conf.  A local validating resolver (unbound) is a good choice.
nameservers = []             # e.g. ["127.0.0.1:53"]
timeout = "5s"

[dnsbl]
# Monitoring only: our outgoing IPs are checked against these zones; nothing is rejected.
zones = []                   # e.g. ["bl.spamcop.net"]
# This server's public IPs (quickstart --ip); `moxtw dnscheck` checks DNS for them.
ips = {ips}

[domains.{_q(d)}]
# user+anything@{d} is user@{d}; FromIDs go after the "+".
catchall_separators = ["+"]
localpart_case_sensitive = false
disabled = false

[domains.{_q(d)}.dkim]
# Outgoing mail From this domain is signed with both keys: publish both DNS records
# first (`moxtw dnscheck DOMAIN --config moxtw.toml` checks them).  Ed25519 signatures
# (RFC 8463) are not checked by every receiver yet; RSA ones are.
sign = {sign}
{selector_tables}

[accounts.{_key(acct)}]
domain = {_q(d)}
full_name = ""
# Login addresses of this account, and the addresses it receives mail for:
# postmaster@ (RFC 5321 requires it), {DMARC_REPORTS}@ and {TLS_REPORTS}@ (the rua= of
# the DMARC and TLSRPT records) land in its Inbox like any incoming mail.
addresses = {addresses}
# Printed once by quickstart.  Change it with: moxtw setpassword {acct} --config moxtw.toml
password_hash = {_q(password_hash)}
# Sends authenticated as this address get a unique MAIL FROM ({plan.localpart}+<fromid>@{d}),
# so bounces are matched to their message and reported as webhook events.
fromid_login_addresses = [{_q(plan.fromid_login)}]
keep_retired_messages = "72h"
keep_retired_webhooks = "72h"
max_outgoing_messages_per_day = 1000
max_first_time_recipients_per_day = 200

# Delivery events (delivered, failed, delayed, ...) as HTTP POSTs to your application.
# Uncomment and set the URL; `moxtw hooks secret {acct}` prints a signing secret.
# [accounts.{_key(acct)}.outgoing_webhook]
# url = "https://app.{d}/hooks/mail-events"
# authorization = "Bearer change-me"    # sent verbatim as the Authorization header
# events = []                           # empty: all events
# signing_secret = ""                   # "whsec_...": Standard Webhooks signatures
# [accounts.{_key(acct)}.incoming_webhook]
# url = "https://app.{d}/hooks/mail-incoming"
"""


def dns_records(plan: Plan, keys: Sequence[tuple[str, Any]], policy_id: str) -> dict[str, list[Record]]:
    """The records to publish, in groups."""
    groups: dict[str, list[Record]] = {
        "required": [
            mx_record(plan.domain, plan.hostname),
            *address_records(plan.hostname, plan.ips),
            spf_record(plan.domain, plan.ips),
            helo_spf_record(plan.hostname),
            *(dkim_record(plan.domain, selector, key) for selector, key in keys),
            dmarc_record(plan.domain),
        ],
        "optional": [tlsrpt_record(plan.domain), mta_sts_record(plan.domain, policy_id)],
        "ptr": [ptr_record(ip, plan.hostname) for ip in plan.ips],
    }
    return groups


def _zone(records: Sequence[Record]) -> list[str]:
    width = max((len(r.name) for r in records), default=0)
    return [r.zone_line(width) for r in records]


def _fail(message: str, status: int = 1) -> int:
    print(f"moxtw: {message}", file=sys.stderr)
    return status


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan for the command line; raises ValueError with a message."""
    try:
        address = parse_address(args.email)
    except AddressError as e:
        raise ValueError(str(e)) from None
    if not _LOCALPART_RE.match(address.localpart):
        raise ValueError(
            f"localpart {address.localpart!r}: use letters, digits, '.', '-' and '_' "
            "('+' separates FromIDs)"
        )
    domain = address.ascii_domain.lower()
    if "." not in domain:
        raise ValueError(f"domain {domain!r}: expected a registered domain such as example.org")
    if args.hostname:
        try:
            hostname = parse_domain(args.hostname.lower().rstrip("."))
        except DomainError as e:
            raise ValueError(f"--hostname {args.hostname!r}: {e}") from None
        hostname = domain_to_ascii(hostname)
    else:
        hostname = default_hostname(domain)
    ips: list[str] = []
    for ip in args.ip:
        try:
            text = str(ipaddress.ip_address(ip))
        except ValueError:
            raise ValueError(f"--ip {ip!r}: not an IP address") from None
        if text not in ips:
            ips.append(text)
    return Plan(
        email=f"{address.localpart}@{domain}",
        localpart=address.localpart,
        domain=domain,
        hostname=hostname,
        ips=tuple(ips),
        directory=Path(args.dir).absolute(),
        data_dir=args.data_dir,
        year=datetime.datetime.now(datetime.UTC).year,
    )


def cmd_quickstart(args: argparse.Namespace) -> int:
    try:
        plan = make_plan(args)
    except ValueError as e:
        return _fail(str(e), 2)
    directory = plan.directory
    existing = [str(directory / p) for p in plan.paths() if (directory / p).exists()]
    if existing:
        return _fail(f"not overwriting existing files: {', '.join(existing)}")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        (directory / "dkim").mkdir(exist_ok=True, mode=0o750)
        (directory / "tls").mkdir(exist_ok=True, mode=0o750)
        keys = []
        for selector, algorithm in plan.selectors:
            pem = generate_key(algorithm)
            write_key_file(directory / plan.key_file(selector), pem)
            keys.append((selector, parse_private_key(pem)))
        generate_certificate(directory / CERT_FILE, directory / KEY_FILE, plan.hostname)
    except OSError as e:
        return _fail(f"cannot write in {directory}: {e}")
    password, admin_password = new_password(), new_password()
    text = render_config(
        plan, password_hash=hash_password(password), admin_password_hash=hash_password(admin_password)
    )
    config_path = directory / CONFIG_FILE
    try:
        parse_config(text, base_dir=directory, source=config_path)
    except ConfigError as e:  # a bug: never write a file checkconfig refuses
        return _fail(f"refusing to write an invalid configuration:\n{e}")
    try:
        atomic_write(config_path, text.encode("utf-8"), 0o640)
    except OSError as e:
        return _fail(f"cannot write {config_path}: {e}")
    print(report(plan, keys, password, admin_password, mta_sts_policy_id()))
    return 0


def report(plan: Plan, keys: Sequence[tuple[str, Any]], password: str, admin_password: str, policy_id: str) -> str:
    d, h, directory = plan.domain, plan.hostname, plan.directory
    records = dns_records(plan, keys, policy_id)
    key_lines = [
        f"  {directory / plan.key_file(s)}  (DKIM {'RSA 2048' if alg == 'rsa' else 'Ed25519'} key, selector {s})"
        for s, alg in plan.selectors
    ]
    out = [
        f"moxtw quickstart for {d} (host name {h}) wrote:",
        f"  {directory / CONFIG_FILE}  (configuration; check: moxtw checkconfig {directory / CONFIG_FILE})",
        *key_lines,
        f"  {directory / CERT_FILE}, {directory / KEY_FILE}  (self-signed PLACEHOLDER certificate for {h}: replace it)",
        "",
        "Credentials, printed only now (the configuration holds only their hashes):",
        f"  account {plan.account}: login {plan.email}  password {password}",
        f"    also for {plan.fromid_login} (FromID login: a unique MAIL FROM per message, for bounce matching)",
        f"  admin password: {admin_password}",
        "",
        f"DNS records to add (zone-file syntax, absolute names; {h} may be in another zone).",
        "If the domain already has an SPF or DMARC record, merge instead of adding a second one.",
        "",
        *_zone(records["required"]),
        "",
        "Optional: TLS reporting, and MTA-STS (mode testing: senders report TLS problems with your",
        "MX to tls-reports@; with mode enforce they refuse to deliver without verified TLS):",
        "",
        *_zone(records["optional"]),
        "",
        f"MTA-STS also needs this policy file at https://mta-sts.{d}/.well-known/mta-sts.txt",
        f"(moxtw does not serve it: any web server with a valid certificate for mta-sts.{d}):",
        "",
        *("    " + line for line in mta_sts_policy([h]).splitlines()),
        "",
    ]
    if records["ptr"]:
        out += [
            "Reverse DNS: ask your hosting provider (who owns the IP range) to set:",
            "",
            *_zone(records["ptr"]),
            "",
        ]
    else:
        out += [
            f"Reverse DNS: ask your hosting provider to set the PTR record of this server's IPs to {h}.",
            "(run quickstart with --ip to get the A/AAAA, SPF and PTR records for your addresses)",
            "",
        ]
    out += [
        f"DMARC starts with p=none: receivers report (to {DMARC_REPORTS}@{d}) but do not reject. Once",
        "the reports show all your mail passes, change it to p=quarantine, then p=reject.",
        "",
        "Next:",
        f"  1. publish the records, then check them: moxtw dnscheck {d} --config {directory / CONFIG_FILE}",
        f"  2. replace the placeholder certificate with one for {h} (see [tls] in the file)",
        "  3. install it as a service: docs/systemd.md",
        f"  4. send: curl -u {plan.email}:{password} http://127.0.0.1:1080/webapi/v0/Send \\",
        "       --data-urlencode 'request={\"To\": [{\"Address\": \"you@example.com\"}], \"Text\": \"hi\"}'",
    ]
    return "\n".join(out)


def add_cli(subparsers: Any) -> None:
    """Register ``moxtw quickstart`` on the ``moxtw`` command's subparsers."""
    p = subparsers.add_parser(
        "quickstart",
        help="write a production configuration for a new domain and print the DNS records to add",
        description="Write DIR/moxtw.toml for the domain of EMAIL (an account named after its "
        "localpart, generated passwords, DKIM keys, a placeholder TLS certificate) and print "
        "the passwords and the DNS records to add.  Existing files are never overwritten.",
    )
    p.add_argument("email", help="the account's address, e.g. app@example.org")
    p.add_argument("--dir", default=DEFAULT_DIR, help=f"directory to write (default: ./{DEFAULT_DIR})")
    p.add_argument("--hostname", default="",
                   help="this server's host name (default: the machine's FQDN if in the domain, else mail.DOMAIN)")
    p.add_argument("--ip", action="append", default=[], metavar="IP",
                   help="this server's public IPv4/IPv6 address (repeatable): A/AAAA, SPF and PTR records")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"data directory (default: {DEFAULT_DATA_DIR})")
    p.set_defaults(func=cmd_quickstart)
