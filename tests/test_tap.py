"""Command-line options and the service tree, built on a MemoryReactorClock."""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import TestCase

from moxtw import localserve
from moxtw.app import build_service
from moxtw.config import load_config
from moxtw.store import sqlite_store
from moxtw.tap import Options


class OptionsTests(TestCase):
    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_needs_config_or_localserve(self) -> None:
        e = self.assertRaises(usage.UsageError, self.parse)
        self.assertIn("--config", str(e))

    def test_bad_config_lists_problems(self) -> None:
        path = Path(self.mktemp())
        path.write_text('hostname = "x"\ndata_dir = "d"\ncolour = 1\n[queue]\nport = "25"\n')
        e = self.assertRaises(usage.UsageError, self.parse, "--config", str(path))
        self.assertIn("colour: unknown key", str(e))
        self.assertIn('queue.port: expected a port number, got "25"', str(e))

    def test_missing_config_file(self) -> None:
        e = self.assertRaises(usage.UsageError, self.parse, "--config", "/nonexistent/moxtw.toml")
        self.assertIn("cannot read configuration", str(e))

    def test_localserve_creates_then_reads_config(self) -> None:
        directory = Path(self.mktemp()).absolute()
        options = self.parse("localserve", "--dir", str(directory))
        self.assertTrue(options.created)
        self.assertTrue((directory / "moxtw.toml").exists())
        self.assertTrue((directory / "tls" / "localhost.crt").exists())
        config = options.config
        self.assertTrue(config.localserve)
        self.assertEqual(config.hostname, "localhost")
        self.assertEqual(config.data_dir, directory / "data")
        account = config.accounts["mox"]
        self.assertEqual(account.addresses, ("mox@localhost", "@localhost"))
        self.assertEqual(account.fromid_login_addresses, ("mox+fromid@localhost",))
        self.assertEqual(account.keep_retired_messages, 72 * 3600)
        self.assertEqual(account.keep_retired_webhooks, 72 * 3600)
        self.assertEqual(config.domains["localhost"].catchall_separators, ("+",))
        self.assertIn("tcp:1080:interface=127.0.0.1", config.listeners.http)
        self.assertIn("tcp:1025:interface=127.0.0.1", config.listeners.smtp)
        self.assertIn("tcp:1587:interface=127.0.0.1", config.listeners.submission)
        self.assertIn("tcp:1465:interface=127.0.0.1", config.listeners.submissions)
        self.assertIn("tcp:1081:interface=127.0.0.1", config.listeners.metrics)

        # Edits are kept: the second start reads the file.
        path = directory / "moxtw.toml"
        path.write_text(path.read_text().replace('keep_retired_messages = "72h"', 'keep_retired_messages = "1h"'))
        again = self.parse("localserve", "--dir", str(directory))
        self.assertFalse(again.created)
        self.assertEqual(again.config.accounts["mox"].keep_retired_messages, 3600)

    def test_localserve_passwords(self) -> None:
        from moxtw.passwords import verify_password

        options = self.parse("localserve", "--dir", self.mktemp())
        self.assertTrue(verify_password("moxmoxmox", options.config.accounts["mox"].password_hash))
        self.assertTrue(verify_password("moxadmin", options.config.admin_password_hash))

    def test_localserve_flags(self) -> None:
        options = self.parse(
            "localserve",
            "--dir",
            self.mktemp(),
            "--outgoing-webhook",
            "http://127.0.0.1:8089/out",
            "--incoming-webhook",
            "http://127.0.0.1:8089/in",
            "--webhook-authorization",
            "Bearer s3cret",
            "--retry-scale",
            "60",
        )
        account = options.config.accounts["mox"]
        assert account.outgoing_webhook is not None and account.incoming_webhook is not None
        self.assertEqual(account.outgoing_webhook.url, "http://127.0.0.1:8089/out")
        self.assertEqual(account.outgoing_webhook.authorization, "Bearer s3cret")
        self.assertEqual(account.incoming_webhook.url, "http://127.0.0.1:8089/in")
        self.assertEqual(account.incoming_webhook.authorization, "Bearer s3cret")
        self.assertEqual(options.config.queue.retry_scale, 60)

    def test_localserve_bad_flags(self) -> None:
        for argv in (
            ["--retry-scale", "0"],
            ["--retry-scale", "fast"],
            ["--outgoing-webhook", "ftp://x"],
        ):
            self.assertRaises(usage.UsageError, self.parse, "localserve", "--dir", self.mktemp(), *argv)

    def test_localserve_rejects_config(self) -> None:
        self.assertRaises(usage.UsageError, self.parse, "--config", "x.toml", "localserve")

    def test_banner(self) -> None:
        directory = Path(self.mktemp()).absolute()
        options = self.parse("localserve", "--dir", str(directory))
        text = localserve.banner(options.config, directory)
        self.assertIn("http://localhost:1080/webapi/v0/", text)
        self.assertIn("mox@localhost / moxmoxmox", text)
        self.assertIn("moxadmin", text)


class ServiceTreeTests(TestCase):
    def config(self, workers: int = 0):
        directory = Path(self.mktemp()).absolute()
        path, _ = localserve.ensure_config(directory)
        path.write_text(path.read_text().replace("workers = 1", f"workers = {workers}"))
        return load_config(path)

    def test_workers_share_http_listeners(self) -> None:
        """With webapi workers the HTTP listeners use SO_REUSEPORT and workers start last."""
        from moxtw.workers import HTTPWorkers, ReusePortListener

        config = self.config(workers=2)
        service = build_service(config, MemoryReactorClock())
        children = list(service)
        http = [c for c in children if c.name.startswith("http-")]
        self.assertTrue(http)
        self.assertTrue(all(isinstance(c, ReusePortListener) for c in http))
        self.assertIsInstance(children[-1], HTTPWorkers)
        self.assertEqual(children[-1].count, 2)
        self.assertEqual(children[-1].listeners, http)

    def test_tree_and_listeners(self) -> None:
        config = self.config()
        reactor = MemoryReactorClock()
        # Listeners go to the memory reactor; the store (and the queue's first pass
        # over it) needs threads, which only the real reactor serves.
        from twisted.internet import reactor as real_reactor

        service = build_service(config, reactor, store=sqlite_store(config.data_dir, real_reactor))
        names = [s.name for s in service]
        self.assertEqual(names[0], "store")
        http = [n for n in names if n.startswith("http-")]
        self.assertTrue(http)
        # Listeners come after every non-listener service.
        first_listener = min(i for i, n in enumerate(names) if n.startswith(("http-", "metrics-")))
        self.assertTrue(all(n.startswith(("http-", "metrics-")) for n in names[first_listener:]))

        service.privilegedStartService()
        service.startService()
        ports = sorted((port, kw.get("interface", "")) for port, _, _, kw in [(p[0], p[1], p[2], {"interface": p[3]}) for p in reactor.tcpServers])
        for port in (1025, 1587, 1465, 1080, 1081):
            self.assertIn((port, "127.0.0.1"), ports)
        self.assertTrue((config.data_dir / "moxtw.sqlite3").exists())
        return service.stopService()

    def test_stop_order(self) -> None:
        """Listeners stop before the store closes."""
        from twisted.internet import reactor as real_reactor

        config = self.config()
        reactor = MemoryReactorClock()
        service = build_service(config, reactor, store=sqlite_store(config.data_dir, real_reactor))
        stopped: list[str] = []
        for child in service:
            original = child.stopService

            def record(child=child, original=original):
                stopped.append(child.name)
                return original()

            child.stopService = record  # type: ignore[method-assign]
        service.privilegedStartService()
        service.startService()
        d = service.stopService()

        def check(_):
            self.assertEqual(stopped[-1], "store")
            self.assertEqual(stopped, [s.name for s in reversed(list(service))])

        return d.addCallback(check)
