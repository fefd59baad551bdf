"""Configuration parsing: every problem is reported at once, each with its key path."""

from __future__ import annotations

import shutil
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from moxtw.config import (
    ConfigError,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)

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


class ExampleTests(SynchronousTestCase):
    def test_example_is_valid(self) -> None:
        """etc/moxtw.toml is valid once the files it names exist."""
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        text = EXAMPLE.read_text().replace("/etc/moxtw/", f"{tmp}/").replace("/var/lib/moxtw", f"{tmp}/data")
        (tmp / "tls").mkdir()
        (tmp / "dkim").mkdir()
        for name in ("tls/fullchain.pem", "tls/privkey.pem", "dkim/example.org-2026a.pem"):
            (tmp / name).write_text("x")
        (tmp / "moxtw.toml").write_text(text)
        config = load_config(tmp / "moxtw.toml")
        self.assertEqual(config.hostname, "mail.example.org")
        self.assertEqual(config.accounts["app"].keep_retired_messages, 72 * 3600)
        self.assertEqual(config.accounts["app"].outgoing_webhook.url, "https://app.example.org/hooks/mail-events")  # type: ignore[union-attr]
        self.assertEqual(config.domains["example.org"].dkim_sign, ("2026a",))

    def test_example_names_missing_files(self) -> None:
        tmp = Path(self.mktemp()).absolute()
        tmp.mkdir()
        shutil.copy(EXAMPLE, tmp / "moxtw.toml")
        with self.assertRaises(ConfigError) as cm:
            load_config(tmp / "moxtw.toml")
        self.assertIn("tls.cert_file: no such file: /etc/moxtw/tls/fullchain.pem", cm.exception.problems)
