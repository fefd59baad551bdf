"""Configuration parsing: every problem is reported at once, each with its key path."""

from __future__ import annotations

import shutil
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from moxtw.config import (
    ConfigError,
    dkim_header_problem,
    format_duration,
    is_dkim_selector,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from moxtw.dkim import generate_key

EXAMPLE = Path(__file__).parent.parent / "etc" / "moxtw.toml"

MINIMAL = """
hostname = "mail.example.org"
data_dir = "data"
[domains."example.org"]
catchall_separators = ["+"]
[accounts.app]
domain = "example.org"
addresses = ["app@example.org"]
password_hash = "x"
"""


def problems(text: str) -> list[str]:
    try:
        parse_config(text, base_dir=Path("/tmp"))
    except ConfigError as e:
        return e.problems
    raise AssertionError("configuration was accepted")


class DurationTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_duration("72h"), 72 * 3600)
        self.assertEqual(parse_duration("1h30m"), 5400)
        self.assertEqual(parse_duration("90s"), 90)
        self.assertEqual(parse_duration("1.5s"), 1.5)
        self.assertEqual(parse_duration("250ms"), 0.25)
        self.assertEqual(parse_duration("0"), 0)
        for bad in ("soon", "", "5", "h", "5d", "1h x"):
            self.assertRaises(ValueError, parse_duration, bad)

    def test_format(self) -> None:
        self.assertEqual(format_duration(72 * 3600), "72h")
        self.assertEqual(format_duration(5400), "1h30m")
        self.assertEqual(format_duration(0), "0")

    def test_sizes(self) -> None:
        self.assertEqual(parse_size("100MiB"), 100 * 1024 * 1024)
        self.assertEqual(parse_size("10KiB"), 10240)
        self.assertEqual(parse_size(1234), 1234)
        self.assertRaises(ValueError, parse_size, "lots")
        self.assertRaises(ValueError, parse_size, -1)


class ParseTests(SynchronousTestCase):
    def test_minimal(self) -> None:
        config = parse_config(MINIMAL, base_dir=Path("/srv"))
        self.assertEqual(config.hostname, "mail.example.org")
        self.assertEqual(config.data_dir, Path("/srv/data"))
        account = config.accounts["app"]
        self.assertEqual(account.addresses, ("app@example.org",))
        self.assertEqual(account.max_outgoing_messages_per_day, 1000)
        self.assertEqual(account.max_first_time_recipients_per_day, 200)
        self.assertEqual(account.keep_retired_messages, 0)
        self.assertEqual(config.domains["example.org"].catchall_separators, ("+",))
        self.assertEqual(config.queue.port, 25)
        self.assertEqual(config.webapi.path, "/webapi/")
        self.assertEqual(config.webapi.max_request_size, 10 * 1024 * 1024)

    def test_bad_duration_names_key(self) -> None:
        text = MINIMAL + 'keep_retired_messages = "soon"\n'
        self.assertEqual(
            problems(text),
            ['accounts.app.keep_retired_messages: expected a duration such as "72h", got "soon"'],
        )

    def test_all_problems_at_once(self) -> None:
        text = """
hostname = "not a host"
data_dir = 5
colour = "blue"
[listeners]
http = ["bogus:1"]
smtp = "tcp:25"
[queue]
port = 70000
[domains."example.org"]
catchall_separators = ["++"]
[accounts.app]
domain = "example.com"
addresses = ["app@example.net", "nonsense"]
keep_retired_webhooks = "forever"
[accounts.app.outgoing_webhook]
url = "ftp://x"
events = ["exploded"]
"""
        found = problems(text)
        for expected in (
            "hostname: expected a host name",
            "data_dir: expected a directory path, got 5",
            "colour: unknown key",
            'listeners.http[0]: bad endpoint "bogus:1"',
            'listeners.smtp: expected a list of endpoint strings such as ["tcp:25"], got "tcp:25"',
            "queue.port: expected a port number, got 70000",
            'domains.example.org.catchall_separators[0]: expected a single character, got "++"',
            'accounts.app.domain: unknown domain "example.com"',
            'accounts.app.addresses[0]: address domain "example.net" is not a configured domain',
            'accounts.app.addresses[1]: expected an address such as you@example.org (or @example.org for catch-all), got "nonsense"',
            'accounts.app.keep_retired_webhooks: expected a duration such as "72h", got "forever"',
            'accounts.app.outgoing_webhook.url: expected an http or https URL, got "ftp://x"',
            'accounts.app.outgoing_webhook.events[0]: unknown event "exploded"',
        ):
            self.assertTrue(
                any(p.startswith(expected) for p in found),
                f"{expected!r} not among:\n" + "\n".join(found),
            )
        self.assertEqual(len(found), 13, "\n".join(found))

    def test_missing_required(self) -> None:
        self.assertEqual(
            problems(""),
            ["hostname: missing required a host name", "data_dir: missing required a directory path"],
        )

    def test_unknown_nested_keys(self) -> None:
        found = problems(MINIMAL + "colour = 1\n[accounts.app.incoming_webhook]\nurl = \"http://x\"\nevents = []\n")
        self.assertEqual(
            [p.split(" (")[0] for p in found],
            ["accounts.app.colour: unknown key", "accounts.app.incoming_webhook.events: unknown key"],
        )

    def test_fromid_needs_separator(self) -> None:
        text = MINIMAL.replace('catchall_separators = ["+"]', "") + 'fromid_login_addresses = ["app+id@example.org"]\n'
        self.assertEqual(
            problems(text),
            ['accounts.app.fromid_login_addresses[0]: domain "example.org" has no catchall_separators, which FromIDs need'],
        )

    def test_address_owned_twice(self) -> None:
        text = MINIMAL + '[accounts.other]\ndomain = "example.org"\naddresses = ["APP@example.org"]\n'
        self.assertEqual(
            problems(text),
            ['accounts.other.addresses[0]: address "APP@example.org" already belongs to account "app"'],
        )

    def test_not_toml(self) -> None:
        found = problems("hostname = ")
        self.assertEqual(len(found), 1)
        self.assertTrue(found[0].startswith("not valid TOML"))

    def test_hold_rules(self) -> None:
        config = parse_config(
            MINIMAL + '[[hold_rules]]\naccount = "app"\n[[hold_rules]]\nrecipient_domain = "Example.COM"\n',
            base_dir=Path("/tmp"),
        )
        self.assertEqual(len(config.hold_rules), 2)
        self.assertEqual(config.hold_rules[1].recipient_domain, "example.com")
        self.assertEqual(problems(MINIMAL + '[[hold_rules]]\naccount = "nobody"\n'), ['hold_rules[0].account: unknown account "nobody"'])


def _prime(bits: int) -> int:
    """A random prime (Miller-Rabin) with its top two bits set, usable with e = 65537."""
    import secrets

    while True:
        n = secrets.randbits(bits) | (3 << (bits - 2)) | 1
        if (n - 1) % 65537 and all(n % p for p in (3, 5, 7, 11, 13)) and _probably_prime(n):
            return n


def _probably_prime(n: int) -> bool:
    import secrets

    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        x = pow(secrets.randbelow(n - 3) + 2, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


DKIM = """
[domains."example.org".dkim]
sign = ["sel"]
[domains."example.org".dkim.selectors.sel]
key_file = "key.pem"
"""


class DKIMConfigTests(SynchronousTestCase):
    """Key files are read and checked when the configuration is loaded."""

    def setUp(self) -> None:
        self.dir = Path(self.mktemp()).absolute()
        self.dir.mkdir()

    def dkim_problems(self, text: str) -> list[str]:
        try:
            parse_config(MINIMAL + text, base_dir=self.dir)
        except ConfigError as e:
            return e.problems
        raise AssertionError("configuration was accepted")

    def test_good_keys(self) -> None:
        (self.dir / "key.pem").write_bytes(generate_key("rsa", 1024))
        (self.dir / "ed.pem").write_bytes(generate_key("ed25519"))
        text = DKIM.replace('sign = ["sel"]', 'sign = ["sel", "ed"]') + (
            '[domains."example.org".dkim.selectors.ed]\nkey_file = "ed.pem"\nheaders = ["from", "Subject"]\n'
        )
        domain = parse_config(MINIMAL + text, base_dir=self.dir).domains["example.org"]
        self.assertEqual(domain.dkim_sign, ("sel", "ed"))
        self.assertEqual(domain.dkim_selectors["sel"].key_file, self.dir / "key.pem")
        self.assertEqual(domain.dkim_selectors["ed"].headers, ("from", "Subject"))

    def test_not_a_key(self) -> None:
        (self.dir / "key.pem").write_text("x")
        (found,) = self.dkim_problems(DKIM)
        self.assertTrue(
            found.startswith(f'domains.example.org.dkim.selectors.sel.key_file: {self.dir / "key.pem"}: not a PEM private key'),
            found,
        )

    def test_missing_key(self) -> None:
        self.assertEqual(
            self.dkim_problems(DKIM),
            [f"domains.example.org.dkim.selectors.sel.key_file: no such file: {self.dir / 'key.pem'}"],
        )

    def test_unsupported_and_small_keys(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

        def pem(key) -> bytes:
            return key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )

        (self.dir / "key.pem").write_bytes(pem(ec.generate_private_key(ec.SECP256R1())))
        (found,) = self.dkim_problems(DKIM)
        self.assertIn("unsupported key type", found)
        self.assertIn("DKIM keys are RSA or Ed25519", found)
        # cryptography refuses to generate keys below 1024 bits, so build one of 768.
        p, q = _prime(384), _prime(384)
        d = pow(65537, -1, (p - 1) * (q - 1))
        public = rsa.RSAPublicNumbers(65537, p * q)
        numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public)
        (self.dir / "key.pem").write_bytes(pem(numbers.private_key()))
        (found,) = self.dkim_problems(DKIM)
        self.assertIn("RSA key of 768 bits is too small", found)

    def test_encrypted_key(self) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate()
        (self.dir / "key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        (found,) = self.dkim_problems(DKIM)
        self.assertIn("key is encrypted", found)

    def test_headers_and_selector_names(self) -> None:
        (self.dir / "key.pem").write_bytes(generate_key("ed25519"))
        text = DKIM + 'headers = ["Subject", "Received", "Bad Name"]\n'
        self.assertEqual(
            self.dkim_problems(text),
            [
                "domains.example.org.dkim.selectors.sel.headers[1]: header Received must not be signed: it is added or changed in transit",
                'domains.example.org.dkim.selectors.sel.headers[2]: not a header field name: "Bad Name"',
                "domains.example.org.dkim.selectors.sel.headers: must include From (RFC 6376 requires signing it)",
            ],
        )
        text = DKIM.replace('"sel"', '"bad_sel"').replace("selectors.sel", "selectors.bad_sel")
        self.assertEqual(
            self.dkim_problems(text),
            ["domains.example.org.dkim.selectors.bad_sel: selector name is not a DNS label (letters, digits, hyphens)"],
        )

    def test_helpers(self) -> None:
        self.assertTrue(is_dkim_selector("2026a"))
        self.assertTrue(is_dkim_selector("mail.2026-a"))
        self.assertFalse(is_dkim_selector("-a"))
        self.assertFalse(is_dkim_selector("a..b"))
        self.assertIsNone(dkim_header_problem("List-Unsubscribe-Post"))
        self.assertIsNotNone(dkim_header_problem("DKIM-Signature"))
        self.assertIsNotNone(dkim_header_problem("From:"))


class ExampleTests(SynchronousTestCase):
    def test_example_is_valid(self) -> None:
        """etc/moxtw.toml is valid once the files it names exist."""
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        text = EXAMPLE.read_text().replace("/etc/moxtw/", f"{tmp}/").replace("/var/lib/moxtw", f"{tmp}/data")
        (tmp / "tls").mkdir()
        (tmp / "dkim").mkdir()
        for name in ("tls/fullchain.pem", "tls/privkey.pem"):
            (tmp / name).write_text("x")
        (tmp / "dkim/example.org-2026a.pem").write_bytes(generate_key("ed25519"))
        (tmp / "moxtw.toml").write_text(text)
        config = load_config(tmp / "moxtw.toml")
        self.assertEqual(config.hostname, "mail.example.org")
        self.assertEqual(config.accounts["app"].keep_retired_messages, 72 * 3600)
        self.assertEqual(config.accounts["app"].outgoing_webhook.url, "https://app.example.org/hooks/mail-events")  # type: ignore[union-attr]
        self.assertEqual(config.domains["example.org"].dkim_sign, ("2026a",))
        self.assertEqual(config.webhooks.timeout, 60.0)

    def test_example_names_missing_files(self) -> None:
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        shutil.copy(EXAMPLE, tmp / "moxtw.toml")
        with self.assertRaises(ConfigError) as cm:
            load_config(tmp / "moxtw.toml")
        self.assertIn("tls.cert_file: no such file: /etc/moxtw/tls/fullchain.pem", cm.exception.problems)


class WebhookConfigTests(SynchronousTestCase):
    """[webhooks] and the per-account webhook settings."""

    HOOK = '[accounts.app.outgoing_webhook]\nurl = "https://app.example.org/hook"\n'

    def test_defaults(self) -> None:
        config = parse_config(MINIMAL + self.HOOK, base_dir=Path("/srv"))
        self.assertEqual(config.webhooks.timeout, 60.0)
        hook = config.accounts["app"].outgoing_webhook
        assert hook is not None
        self.assertEqual((hook.authorization, hook.events, hook.signing_secret, hook.max_in_flight), ("", (), "", 4))
        self.assertIsNone(config.accounts["app"].incoming_webhook)

    def test_timeout(self) -> None:
        config = parse_config(MINIMAL + '[webhooks]\ntimeout = "2m30s"\n', base_dir=Path("/srv"))
        self.assertEqual(config.webhooks.timeout, 150.0)
        self.assertEqual(
            problems(MINIMAL + '[webhooks]\ntimeout = "soon"\ncolour = 1\n'),
            [
                'webhooks.colour: unknown key (expected one of: timeout)',
                'webhooks.timeout: expected a duration such as "60s", got "soon"',
            ],
        )
        self.assertEqual(problems(MINIMAL + '[webhooks]\ntimeout = "0"\n'), ['webhooks.timeout: expected a positive duration, got "0"'])

    def test_signing_secret(self) -> None:
        good = "whsec_" + "A" * 44
        config = parse_config(MINIMAL + self.HOOK + f'signing_secret = "{good}"\nmax_in_flight = 16\n', base_dir=Path("/srv"))
        hook = config.accounts["app"].outgoing_webhook
        assert hook is not None
        self.assertEqual((hook.signing_secret, hook.max_in_flight), (good, 16))
        for bad, why in (
            ("sekrit", 'expected a secret starting with "whsec_"'),
            ("whsec_not base64!", 'expected base64 after "whsec_"'),
            ("whsec_QUJD", "expected a secret of at least 16 bytes"),
        ):
            (problem,) = problems(MINIMAL + self.HOOK + f'signing_secret = "{bad}"\n')
            self.assertTrue(problem.startswith(f"accounts.app.outgoing_webhook.signing_secret: {why}"), problem)
            self.assertNotIn(bad, problem.split(": ", 1)[1])
        (problem,) = problems(MINIMAL + self.HOOK + "max_in_flight = 0\n")
        self.assertTrue(problem.startswith("accounts.app.outgoing_webhook.max_in_flight: expected a positive integer"))
