"""moxtw.settings: editing account settings in the TOML file, validation, atomic and
serialised writes, secrets, and applying a configuration to a running process."""

from __future__ import annotations

import contextlib
import difflib
import fcntl
import io
import json
import os
import signal
import stat
import threading
from pathlib import Path
from typing import Any

import attrs
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from moxtw import settings as st
from moxtw.accounts import Accounts
from moxtw.address import parse_address
from moxtw.cli import main as cli_main
from moxtw.config import Config, load_config
from moxtw.localserve import ensure_config
from moxtw.settings import (
    REMOVE,
    AccountSettings,
    ConfigReloader,
    LiveSettings,
    ReloadError,
    ReloadResult,
    SettingsConflict,
    SettingsError,
    WorkerSettingsLink,
    edit_account_text,
    parse_assignments,
    plan_edits,
    redact,
    update_account,
)
from tests.admin.fixture import AdminFixture

SECRET = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # 26 bytes after whsec_
SECRET2 = "whsec_MDEyMzQ1Njc4OWFiY2RlZmdoaWprbG1ub3A="

#: A configuration with comments, two accounts, an inline table and trailing comments.
CONFIG = """\
# Top comment: kept.
hostname = "mail.example.org"   # the host
data_dir = "data"

[domains."example.org"]
catchall_separators = ["+"]

[domains."example.net"]

# --- accounts -------------------------------------------------------------
[accounts.alice]
domain = "example.org"
addresses = ["alice@example.org"]   # her address
password_hash = ""
keep_retired_messages = "72h"   # three days
max_outgoing_messages_per_day = 1000

# Webhook (disabled):
# [accounts.alice.outgoing_webhook]
# url = "http://127.0.0.1:1/x"

[accounts.bob]
domain = "example.net"
addresses = ["bob@example.net", "@example.net"]
keep_retired_webhooks = "1h"
incoming_webhook = { url = "http://127.0.0.1:2/in", authorization = "Bearer 0123456789abcdefXYZW" }

[accounts.bob.outgoing_webhook]
url = "http://127.0.0.1:3/out"   # bob's receiver
events = [
    "delivered",  # the good news
    "failed",
]
signing_secret = "SECRET"
"""


def write_config(testcase: Any, text: str = CONFIG) -> Path:
    directory = Path(testcase.mktemp())
    directory.mkdir(parents=True)
    path = directory / "moxtw.toml"
    path.write_text(text.replace("SECRET", SECRET))
    return path


def changed_lines(before: str, after: str) -> tuple[list[str], list[str]]:
    """(lines removed, lines added) between two texts."""
    removed, added = [], []
    for line in difflib.ndiff(before.splitlines(), after.splitlines()):
        if line.startswith("- "):
            removed.append(line[2:])
        elif line.startswith("+ "):
            added.append(line[2:])
    return removed, added


class RedactTests(SynchronousTestCase):
    def test_redact(self) -> None:
        self.assertEqual(redact(""), "")
        self.assertEqual(redact(SECRET), "whsec_\u2026WVo=")
        self.assertEqual(redact("Bearer 0123456789abcdefXYZW"), "Bearer \u2026XYZW")
        # Short values show nothing of themselves.
        self.assertEqual(redact("Bearer short"), "Bearer \u2026")
        self.assertEqual(redact("hunter2"), "\u2026")
        self.assertNotIn("QUJD", redact(SECRET))

    def test_redacted_settings_hide_secrets(self) -> None:
        path = write_config(self)
        settings = AccountSettings.from_config(load_config(path), "bob")
        shown = json.dumps(settings.redacted().to_json())
        self.assertNotIn(SECRET, shown)
        self.assertNotIn("0123456789abcdef", shown)
        self.assertIn("whsec_\u2026WVo=", settings.redacted().to_json()["outgoing_webhook"]["signing_secret"])
        self.assertEqual(settings.redacted().to_json()["keep_retired_webhooks"], "1h")
        # The version covers the real secret: another secret is another version.
        self.assertEqual(settings.version(), AccountSettings.from_config(load_config(path), "bob").version())
        hook = settings.outgoing_webhook
        assert hook is not None
        other = attrs.evolve(settings, outgoing_webhook=attrs.evolve(hook, signing_secret=SECRET[:-5] + "XXXX="))
        self.assertNotEqual(settings.version(), other.version())


class EditTests(SynchronousTestCase):
    def test_edits_change_only_their_lines(self) -> None:
        path = write_config(self)
        before = path.read_text()
        result = update_account(
            path,
            "alice",
            {"keep_retired_messages": "24h", "max_outgoing_messages_per_day": 50, "login_disabled": "paused"},
        )
        after = path.read_text()
        self.assertEqual(
            set(result.changed), {"keep_retired_messages", "max_outgoing_messages_per_day", "login_disabled"}
        )
        removed, added = changed_lines(before, after)
        self.assertEqual(removed, ['keep_retired_messages = "72h"   # three days', "max_outgoing_messages_per_day = 1000"])
        self.assertEqual(
            added,
            [
                'keep_retired_messages = "24h"   # three days',
                "max_outgoing_messages_per_day = 50",
                'login_disabled = "paused"',
            ],
        )
        # The new key goes after the table's last key, before its trailing comments.
        self.assertIn('max_outgoing_messages_per_day = 50\nlogin_disabled = "paused"\n\n# Webhook (disabled):', after)
        config = load_config(path)
        self.assertEqual(config.accounts["alice"].keep_retired_messages, 24 * 3600)
        self.assertEqual(config.accounts["bob"], load_config(write_config(self)).accounts["bob"])

    def test_creates_and_removes_webhook_table(self) -> None:
        path = write_config(self)
        before = path.read_text()
        update_account(path, "alice", {"outgoing_webhook": {"url": "http://127.0.0.1:9/hook", "events": ["failed"]}})
        after = path.read_text()
        removed, added = changed_lines(before, after)
        self.assertEqual(removed, [])
        self.assertEqual(len(added), 4)
        # Alice's new table, between her trailing comments and bob's table.
        self.assertEqual(
            after,
            before.replace(
                '# url = "http://127.0.0.1:1/x"\n\n[accounts.bob]',
                '# url = "http://127.0.0.1:1/x"\n\n[accounts.alice.outgoing_webhook]\n'
                'url = "http://127.0.0.1:9/hook"\nevents = ["failed"]\n\n[accounts.bob]',
            ),
        )
        hook = load_config(path).accounts["alice"].outgoing_webhook
        assert hook is not None
        self.assertEqual((hook.url, hook.events), ("http://127.0.0.1:9/hook", ("failed",)))
        update_account(path, "alice", {"outgoing_webhook": None})
        self.assertIsNone(load_config(path).accounts["alice"].outgoing_webhook)
        removed, added = changed_lines(before, path.read_text())
        self.assertEqual((removed, [a for a in added if a.strip()]), ([], []))

    def test_edits_multiline_array_inline_table_and_table(self) -> None:
        path = write_config(self)
        before = path.read_text()
        update_account(
            path,
            "bob",
            {
                "outgoing_webhook": {"events": ["delivered"], "max_in_flight": 2},
                "incoming_webhook.url": "http://127.0.0.1:4/in",
            },
        )
        after = path.read_text()
        self.assertIn('url = "http://127.0.0.1:3/out"   # bob\'s receiver\nevents = ["delivered"]\n', after)
        self.assertIn('incoming_webhook = { url = "http://127.0.0.1:4/in", authorization = "Bearer 0123456789abcdefXYZW" }', after)
        # Everything before bob's table is as it was, byte for byte.
        start = before.index("[accounts.bob]")
        self.assertEqual(after[:start], before[:start])
        bob = load_config(path).accounts["bob"]
        assert bob.outgoing_webhook is not None and bob.incoming_webhook is not None
        self.assertEqual(bob.outgoing_webhook.events, ("delivered",))
        self.assertEqual(bob.outgoing_webhook.max_in_flight, 2)
        self.assertEqual(bob.outgoing_webhook.signing_secret, SECRET)
        self.assertEqual(bob.incoming_webhook.authorization, "Bearer 0123456789abcdefXYZW")

    def test_secrets_kept_when_blank_or_redacted(self) -> None:
        path = write_config(self)
        for value in ("", redact(SECRET), SECRET):
            result = update_account(path, "bob", {"outgoing_webhook": {"signing_secret": value, "url": "http://127.0.0.1:5/o"}})
            self.assertEqual(result.settings.outgoing_webhook.signing_secret, SECRET)  # type: ignore[union-attr]
        result = update_account(path, "bob", {"incoming_webhook.authorization": redact("Bearer 0123456789abcdefXYZW")})
        self.assertEqual(result.changed, ())
        result = update_account(path, "bob", {"outgoing_webhook.signing_secret": SECRET2})
        self.assertEqual(result.changed, ("outgoing_webhook.signing_secret",))
        self.assertEqual(load_config(path).accounts["bob"].outgoing_webhook.signing_secret, SECRET2)  # type: ignore[union-attr]
        # None removes it.
        update_account(path, "bob", {"outgoing_webhook.signing_secret": None})
        self.assertEqual(load_config(path).accounts["bob"].outgoing_webhook.signing_secret, "")  # type: ignore[union-attr]
        self.assertNotIn("signing_secret", path.read_text())

    def test_removing_from_a_missing_webhook_changes_nothing(self) -> None:
        path = write_config(self)
        before = path.read_bytes()
        result = update_account(path, "alice", {"outgoing_webhook.signing_secret": None, "incoming_webhook": None})
        self.assertEqual(result.changed, ())
        self.assertEqual(path.read_bytes(), before)

    def test_lock_file_readable_by_the_daemon(self) -> None:
        # Created by root's CLI with a strict umask, the daemon's user must still open it.
        path = write_config(self)
        old = os.umask(0o077)
        try:
            update_account(path, "alice", {"keep_retired_messages": "1h"})
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(st.lock_path(path).stat().st_mode), 0o644)

    def test_owner_may_change_webhooks_and_keep_periods_only(self) -> None:
        path = write_config(self)
        result = update_account(
            path, "bob",
            {"outgoing_webhook": {"url": "http://127.0.0.1:6/o"}, "incoming_webhook": None,
             "keep_retired_messages": "1h", "keep_retired_webhooks": "2h"},
            allowed=st.OWNER_EDITABLE,
        )  # fmt: skip
        self.assertEqual(len(result.changed), 4)
        before = path.read_bytes()
        for changes in ({"max_outgoing_messages_per_day": 1}, {"fromid_login_addresses": []}, {"login_disabled": "x"},
                        {"max_first_time_recipients_per_day": 1, "keep_retired_messages": "3h"}):  # fmt: skip
            with self.assertRaises(SettingsError) as e:
                update_account(path, "bob", changes, allowed=st.OWNER_EDITABLE)
            self.assertIn("cannot be changed here", str(e.exception))
        self.assertEqual(path.read_bytes(), before)

    def test_empty_url_removes_webhook(self) -> None:
        path = write_config(self)
        update_account(path, "bob", {"outgoing_webhook": {"url": "", "events": ["failed"]}})
        self.assertIsNone(load_config(path).accounts["bob"].outgoing_webhook)
        self.assertNotIn("[accounts.bob.outgoing_webhook]", path.read_text())

    def test_invalid_change_refused_file_untouched(self) -> None:
        path = write_config(self)
        before = path.read_bytes()
        mtime = path.stat().st_mtime_ns
        cases = [
            ({"outgoing_webhook.url": "ftp://x"}, 'accounts.bob.outgoing_webhook.url: expected an http or https URL, got "ftp://x"'),
            ({"keep_retired_messages": "soon"}, 'accounts.bob.keep_retired_messages: expected a duration such as "72h", got "soon"'),
            ({"outgoing_webhook.events": ["sent"]}, 'accounts.bob.outgoing_webhook.events[0]: unknown event "sent"'),
            ({"outgoing_webhook.signing_secret": "nope"}, 'expected a secret starting with "whsec_"'),
            ({"max_outgoing_messages_per_day": 0}, "accounts.bob.max_outgoing_messages_per_day: expected a positive integer"),
            # FromIDs need a catchall separator: example.net has none.
            ({"fromid_login_addresses": ["bob+id@example.net"]}, "has no catchall_separators, which FromIDs need"),
        ]
        for changes, message in cases:
            with self.assertRaises(SettingsError) as e:
                update_account(path, "bob", changes)
            self.assertIn("not saved, the change makes the configuration invalid", str(e.exception))
            self.assertIn(message, str(e.exception))
        # Refused before the loader: not editable, wrong type, no such account.
        for changes, message in [
            ({"password_hash": "x"}, "accounts.bob.password_hash: not an editable setting"),
            ({"outgoing_webhook.bogus": 1}, "accounts.bob.outgoing_webhook.bogus: not an editable setting"),
            ({"max_outgoing_messages_per_day": "10"}, "expected an integer"),
            ({"fromid_login_addresses": "a@b"}, "expected a list of strings"),
        ]:
            with self.assertRaises(SettingsError) as e:
                update_account(path, "bob", changes)
            self.assertIn(message, str(e.exception))
        with self.assertRaises(SettingsError) as e:
            update_account(path, "carol", {"keep_retired_messages": "1h"})
        self.assertIn("no account 'carol'", str(e.exception))
        self.assertEqual(path.read_bytes(), before)
        self.assertEqual(path.stat().st_mtime_ns, mtime)
        self.assertEqual([p.name for p in path.parent.iterdir() if p.name.startswith(".moxtw.toml.") and p.name != ".moxtw.toml.lock"], [])

    def test_invalid_file_refused(self) -> None:
        path = write_config(self, CONFIG + "\nbogus = 1\n")
        with self.assertRaises(SettingsError) as e:
            update_account(path, "alice", {"keep_retired_messages": "1h"})
        self.assertIn("bogus: unknown key", str(e.exception))

    def test_no_change_no_write(self) -> None:
        path = write_config(self)
        mtime = path.stat().st_mtime_ns
        result = update_account(path, "alice", {"keep_retired_messages": "72h", "max_outgoing_messages_per_day": 1000})
        self.assertFalse(result.written)
        self.assertEqual(path.stat().st_mtime_ns, mtime)

    def test_atomic_write_keeps_mode_owner_group(self) -> None:
        path = write_config(self)
        os.chmod(path, 0o640)
        owner = (os.geteuid(), os.getegid())
        if os.geteuid() == 0:
            owner = (4321, 5432)
            os.chown(path, *owner)
        inode = path.stat().st_ino
        update_account(path, "alice", {"keep_retired_messages": "1h"})
        s = path.stat()
        self.assertEqual(stat.S_IMODE(s.st_mode), 0o640)
        self.assertEqual((s.st_uid, s.st_gid), owner)
        self.assertNotEqual(s.st_ino, inode)  # replaced by rename, not rewritten in place
        if os.geteuid() != 0:
            raise self.skipTest("owner and group kept only where allowed (tested as root)")

    def test_expect_version(self) -> None:
        path = write_config(self)
        version = AccountSettings.from_config(load_config(path), "alice").version()
        update_account(path, "alice", {"keep_retired_messages": "1h"}, expect_version=version)
        with self.assertRaises(SettingsConflict):
            update_account(path, "alice", {"keep_retired_messages": "2h"}, expect_version=version)
        self.assertEqual(load_config(path).accounts["alice"].keep_retired_messages, 3600)
        # Another account's change does not conflict.
        bob = AccountSettings.from_config(load_config(path), "bob").version()
        update_account(path, "alice", {"keep_retired_messages": "3h"})
        update_account(path, "bob", {"keep_retired_webhooks": "2h"}, expect_version=bob)

    def test_concurrent_writers_serialised(self) -> None:
        path = write_config(self)
        keys = [
            ("alice", "keep_retired_messages", "11h"),
            ("alice", "keep_retired_webhooks", "12h"),
            ("alice", "max_outgoing_messages_per_day", 13),
            ("alice", "max_first_time_recipients_per_day", 14),
            ("alice", "login_disabled", "15"),
            ("bob", "keep_retired_messages", "16h"),
            ("bob", "max_outgoing_messages_per_day", 17),
            ("bob", "outgoing_webhook.max_in_flight", 18),
        ]
        errors: list[BaseException] = []
        start = threading.Barrier(len(keys))

        def write(account: str, key: str, value: Any) -> None:
            try:
                start.wait()
                update_account(path, account, {key: value})
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=write, args=k) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        config = load_config(path)
        for account, key, value in keys:
            acc = config.accounts[account]
            got = acc.outgoing_webhook.max_in_flight if key.startswith("outgoing") else getattr(acc, key)  # type: ignore[union-attr]
            expected = value if isinstance(value, int) or key == "login_disabled" else int(value[:-1]) * 3600
            self.assertEqual(got, expected, key)

    def test_lock_held_elsewhere(self) -> None:
        path = write_config(self)
        fd = os.open(st.lock_path(path), os.O_RDONLY | os.O_CREAT, 0o644)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with self.assertRaises(SettingsError) as e:
            update_account(path, "alice", {"keep_retired_messages": "1h"}, lock_timeout=0.1)
        self.assertIn("being changed by another writer", str(e.exception))
        fcntl.flock(fd, fcntl.LOCK_UN)
        update_account(path, "alice", {"keep_retired_messages": "1h"}, lock_timeout=0.1)

    def test_file_changed_under_us_is_applied_again(self) -> None:
        path = write_config(self)
        real = st._load_text
        calls = [0]

        def load(p: Path, text: str) -> Config:
            calls[0] += 1
            if calls[0] == 2:
                # An editor that takes no lock saves while our change is being validated.
                path.write_text(path.read_text().replace('keep_retired_webhooks = "1h"', 'keep_retired_webhooks = "5h"'))
            return real(p, text)

        self.patch(st, "_load_text", load)
        update_account(path, "alice", {"keep_retired_messages": "1h"})
        config = load_config(path)
        self.assertEqual(config.accounts["alice"].keep_retired_messages, 3600)
        self.assertEqual(config.accounts["bob"].keep_retired_webhooks, 5 * 3600)  # the editor's change survives
        self.assertEqual(calls[0], 4)  # read + validate, twice

    def test_layout_that_cannot_be_edited_is_refused(self) -> None:
        # tomlkit output is checked against the expected document: a broken edit never
        # reaches the file.
        text = 'hostname = "h"\n[accounts.a]\ndomain = "x"\n'

        self.patch(st, "_apply_plain", lambda doc, account, edits: {"something": "else"})
        with self.assertRaises(SettingsError) as e:
            edit_account_text(text, "a", [(("keep_retired_messages",), "1h")])
        self.assertIn("edit the file by hand", str(e.exception))


class PlanTests(SynchronousTestCase):
    def test_plan_and_assignments(self) -> None:
        account = load_config(write_config(self)).accounts["bob"]
        changes = parse_assignments(
            [
                "outgoing_webhook.events=delivered, failed",
                "max_outgoing_messages_per_day=5",
                "keep_retired_messages=2h",
                ("fromid_login_addresses", ""),
                "outgoing_webhook.signing_secret=",
            ],
            unset=["incoming_webhook"],
        )
        self.assertEqual(
            changes,
            {
                "outgoing_webhook.events": ["delivered", "failed"],
                "max_outgoing_messages_per_day": 5,
                "keep_retired_messages": "2h",
                "fromid_login_addresses": [],
                "outgoing_webhook.signing_secret": "",
                "incoming_webhook": None,
            },
        )
        self.assertEqual(
            plan_edits(account, changes),
            [
                (("outgoing_webhook", "events"), ["delivered", "failed"]),
                (("max_outgoing_messages_per_day",), 5),
                (("keep_retired_messages",), "2h"),
                (("fromid_login_addresses",), REMOVE),
                (("incoming_webhook",), REMOVE),
            ],
        )
        # Keep periods as seconds.
        self.assertEqual(plan_edits(account, {"keep_retired_messages": 5400}), [(("keep_retired_messages",), "1h30m")])
        self.assertEqual(plan_edits(account, {"keep_retired_messages": 0.5}), [(("keep_retired_messages",), "500ms")])
        for bad, message in [
            (["max_outgoing_messages_per_day=many"], "expected an integer"),
            (["nokey"], "expected KEY=VALUE"),
            (["domain=x"], "not an editable setting"),
        ]:
            with self.assertRaises(SettingsError) as e:
                parse_assignments(bad)
            self.assertIn(message, str(e.exception))


def small_config(testcase: Any, extra: str = "") -> Path:
    directory = Path(testcase.mktemp()).absolute()
    path, _ = ensure_config(directory)
    path.write_text(path.read_text() + extra)
    return path


class LiveTests(SynchronousTestCase):
    """LiveSettings.apply: account changes in place, the rest needs a restart."""

    def live(self, path: Path) -> tuple[Config, LiveSettings, Accounts]:
        config = load_config(path)
        accounts = Accounts.from_config(config)
        return config, LiveSettings(config, accounts), accounts

    def test_account_changes_applied_in_place(self) -> None:
        path = small_config(self)
        config, live, accounts = self.live(path)
        shared = config.accounts
        self.assertFalse(accounts.login("mox+app@localhost").fromid)  # type: ignore[union-attr]
        applied: list[Config] = []
        live.on_applied.append(applied.append)
        update_account(
            path, "mox",
            {"fromid_login_addresses": ["mox+fromid@localhost", "mox+app@localhost"], "max_outgoing_messages_per_day": 3,
             "outgoing_webhook": {"url": "http://127.0.0.1:7/h"}},
        )  # fmt: skip
        result = live.apply(load_config(path))
        self.assertEqual(
            set(result.applied),
            {"accounts.mox.fromid_login_addresses", "accounts.mox.max_outgoing_messages_per_day",
             "accounts.mox.outgoing_webhook"},
        )  # fmt: skip
        self.assertEqual(result.needs_restart, ())
        self.assertIs(config.accounts, shared)
        self.assertEqual(config.accounts["mox"].max_outgoing_messages_per_day, 3)
        self.assertTrue(accounts.login("mox+app@localhost").fromid)  # type: ignore[union-attr]
        self.assertEqual(len(applied), 1)
        # Applying the same again changes nothing.
        self.assertEqual(live.apply(load_config(path)), ReloadResult())

    def test_accounts_added_removed_addresses_moved(self) -> None:
        path = small_config(self, '\n[accounts.other]\ndomain = "localhost"\naddresses = ["other@localhost"]\n')
        config, live, accounts = self.live(path)
        text = path.read_text()
        text = text.replace('[accounts.other]\ndomain = "localhost"\naddresses = ["other@localhost"]\n',
                            '[accounts.new]\ndomain = "localhost"\naddresses = ["other@localhost", "new@localhost"]\n')
        path.write_text(text)
        result = live.apply(load_config(path))
        self.assertEqual(set(result.applied), {"accounts.other (removed)", "accounts.new (added)"})
        self.assertNotIn("other", config.accounts)
        self.assertEqual(accounts.lookup(parse_address("other@localhost")).name, "new")  # type: ignore[union-attr]
        self.assertEqual(accounts.lookup(parse_address("new@localhost")).name, "new")  # type: ignore[union-attr]

    def test_restart_needed_not_applied(self) -> None:
        path = small_config(self)
        config, live, _ = self.live(path)
        text = path.read_text()
        text = text.replace("max_concurrent = 100", "max_concurrent = 7")
        text = text.replace('hostname = "localhost"', 'hostname = "mail.localhost"')
        text = text.replace("keep_retired_webhooks = \"72h\"", "keep_retired_webhooks = \"1h\"")
        path.write_text(text)
        result = live.apply(load_config(path))
        self.assertEqual(result.needs_restart, ("hostname", "queue"))
        self.assertEqual(result.applied, ("accounts.mox.keep_retired_webhooks",))
        self.assertEqual((config.hostname, config.queue.max_concurrent), ("localhost", 100))
        self.assertEqual(config.accounts["mox"].keep_retired_webhooks, 3600)

    def test_accounts_wait_for_changed_domains(self) -> None:
        path = small_config(self)
        config, live, _ = self.live(path)
        text = path.read_text().replace('catchall_separators = ["+"]', 'catchall_separators = ["+", "-"]')
        text = text.replace("max_outgoing_messages_per_day = 1000", "max_outgoing_messages_per_day = 9")
        path.write_text(text)
        result = live.apply(load_config(path))
        self.assertEqual(result.applied, ())
        self.assertEqual(
            result.needs_restart,
            ("domains.localhost", "accounts.mox.max_outgoing_messages_per_day (depends on changed domains)"),
        )
        self.assertEqual(config.accounts["mox"].max_outgoing_messages_per_day, 1000)

    def test_admin_password_hash(self) -> None:
        path = small_config(self)
        _, live, _ = self.live(path)
        hashes: list[str] = []
        live.on_applied.append(lambda c: hashes.append(c.admin_password_hash))
        text = path.read_text()
        old = load_config(path).admin_password_hash
        path.write_text(text.replace(old, "$new-hash$"))
        self.assertEqual(live.apply(load_config(path)).applied, ("admin_password_hash",))
        self.assertEqual(hashes, ["$new-hash$"])
        self.assertEqual(live.apply(load_config(path)), ReloadResult())

    def test_adjust(self) -> None:
        # localserve's flags win over the file at every reload.
        from moxtw.localserve import Overrides, apply_overrides

        path = small_config(self)
        overrides = Overrides(outgoing_webhook="http://127.0.0.1:8/flag")
        config = apply_overrides(load_config(path), overrides)
        live = LiveSettings(config, Accounts.from_config(config), adjust=lambda c: apply_overrides(c, overrides))
        update_account(path, "mox", {"keep_retired_messages": "1h"})
        self.assertEqual(live.apply(load_config(path)).applied, ("accounts.mox.keep_retired_messages",))
        self.assertEqual(config.accounts["mox"].outgoing_webhook.url, "http://127.0.0.1:8/flag")  # type: ignore[union-attr]


class WorkerLinkTests(SynchronousTestCase):
    def test_frames(self) -> None:
        path = small_config(self)
        config = load_config(path)
        accounts = Accounts.from_config(config)
        written: list[bytes] = []
        link = WorkerSettingsLink(LiveSettings(config, accounts), written.append)
        d = link.request_reload()
        self.assertEqual(written, [b"c"])
        update_account(path, "mox", {"max_outgoing_messages_per_day": 4})
        raw = path.read_bytes()
        frame = b"R%d\n" % len(raw) + raw + b'a{"applied": ["accounts.mox.max_outgoing_messages_per_day"]}\n'
        # Any chunking.
        for i in range(0, len(frame), 7):
            link.data_received(frame[i : i + 7])
        self.assertEqual(config.accounts["mox"].max_outgoing_messages_per_day, 4)
        self.assertEqual(self.successResultOf(d).applied, ("accounts.mox.max_outgoing_messages_per_day",))
        d2 = link.request_reload()
        link.data_received(b'a{"error": "not valid TOML"}\n')
        self.assertEqual(str(self.failureResultOf(d2, ReloadError).value), "not valid TOML")


class ReloaderTests(TestCase):
    def reloader(self, path: Path) -> tuple[Config, ConfigReloader]:
        config = load_config(path)
        reloader = ConfigReloader(LiveSettings(config, Accounts.from_config(config)), reactor, install_signal=False)
        reloader.startService()
        self.addCleanup(reloader.stopService)
        return config, reloader

    async def test_reload_and_errors(self) -> None:
        path = small_config(self)
        config, reloader = self.reloader(path)
        update_account(path, "mox", {"keep_retired_messages": "2h"})
        result = await reloader.request_reload()
        self.assertEqual(result.applied, ("accounts.mox.keep_retired_messages",))
        self.assertEqual(config.accounts["mox"].keep_retired_messages, 7200)
        path.write_text(path.read_text().replace('keep_retired_messages = "2h"', 'keep_retired_messages = "1x"'))
        with self.assertRaises(ReloadError) as e:
            await reloader.request_reload()
        self.assertIn('accounts.mox.keep_retired_messages: expected a duration such as "72h", got "1x"', str(e.exception))
        self.assertEqual(config.accounts["mox"].keep_retired_messages, 7200)  # the running one stays

    async def test_requests_coalesce(self) -> None:
        path = small_config(self)
        _, reloader = self.reloader(path)
        reads = [0]
        real = st._read_config

        def read(p: Path) -> Any:
            reads[0] += 1
            return real(p)

        self.patch(st, "_read_config", read)
        ds = [reloader.request_reload() for _ in range(5)]
        for d in ds:
            await d
        # The first, then one more for the four that came while it ran.
        self.assertEqual(reads[0], 2)

    async def test_sighup(self) -> None:
        path = small_config(self)
        config = load_config(path)
        reloader = ConfigReloader(LiveSettings(config, Accounts.from_config(config)), reactor)
        reloader.startService()
        self.addCleanup(reloader.stopService)
        update_account(path, "mox", {"max_first_time_recipients_per_day": 7})
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            if config.accounts["mox"].max_first_time_recipients_per_day == 7:
                break
            await deferLater(reactor, 0.02, lambda: None)
        self.assertEqual(config.accounts["mox"].max_first_time_recipients_per_day, 7)
        reloader.stopService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), reloader._on_signal)


class AdminAPITests(TestCase):
    """AccountSettingsGet/Save and ConfigReload on the real admin API, in process."""

    async def fixture(self) -> AdminFixture:
        f = await AdminFixture(self).start()
        reloader = ConfigReloader(f.parts.settings.live, reactor, install_signal=False)
        reloader.startService()
        self.addCleanup(reloader.stopService)
        f.parts.settings.reload = reloader.request_reload
        return f

    async def test_get_save(self) -> None:
        f = await self.fixture()
        got = await f.admin("AccountSettingsGet", "mox")
        self.assertEqual(got["settings"]["max_outgoing_messages_per_day"], 1000)
        saved = await f.admin(
            "AccountSettingsSave",
            "mox",
            {"max_outgoing_messages_per_day": 1, "outgoing_webhook": {"url": "http://127.0.0.1:9/h", "signing_secret": SECRET}},
            got["version"],
        )
        self.assertEqual(saved["changed"], ["outgoing_webhook", "max_outgoing_messages_per_day"])
        self.assertEqual(saved["reload"]["applied"], ["accounts.mox.outgoing_webhook", "accounts.mox.max_outgoing_messages_per_day"])
        self.assertEqual(saved["settings"]["outgoing_webhook"]["signing_secret"], "whsec_\u2026WVo=")
        self.assertNotIn(SECRET, json.dumps(saved))
        self.assertNotIn(SECRET, json.dumps(await f.admin("AccountSettingsGet", "mox")))
        # The limit is in effect: one Send today, then mox's limit error.
        await f.send("a@localhost")
        reply = await f.call("Send", {"To": [{"Address": "b@localhost"}], "Text": "x"})
        self.assertEqual((reply.status, reply.json["Code"]), (400, "messageLimitReached"))
        # A stale version is refused.
        error = await f.admin_error("AccountSettingsSave", "mox", {"max_outgoing_messages_per_day": 5}, got["version"])
        self.assertIn("changed since they were read", error["message"])
        error = await f.admin_error("AccountSettingsSave", "mox", {"keep_retired_messages": "soon"}, "")
        self.assertIn('accounts.mox.keep_retired_messages: expected a duration such as "72h", got "soon"', error["message"])
        error = await f.admin_error("AccountSettingsSave", "mox", ["not", "an object"], "")
        self.assertIn("parameter 2 (changes): expected an object", error["message"])
        error = await f.admin_error("AccountSettingsGet", "nobody")
        self.assertIn("no account 'nobody'", error["message"])

    async def test_settings_ops(self) -> None:
        # What the web pages call.
        f = await self.fixture()
        ops = f.parts.settings
        shown = ops.get("mox")
        saved = await ops.save(
            "mox", {"outgoing_webhook": {"url": "http://127.0.0.1:9/h"}, "keep_retired_webhooks": "1h"},
            version=shown.version(), allowed=st.OWNER_EDITABLE,
        )  # fmt: skip
        self.assertEqual(saved.update.changed, ("outgoing_webhook", "keep_retired_webhooks"))
        assert saved.reload is not None
        self.assertEqual(
            saved.reload.applied, ("accounts.mox.keep_retired_webhooks", "accounts.mox.outgoing_webhook")
        )
        self.assertEqual(ops.get("mox"), saved.settings)
        with self.assertRaises(SettingsConflict):
            await ops.save("mox", {"keep_retired_webhooks": "2h"}, version=shown.version())
        with self.assertRaises(SettingsError):
            await ops.save("mox", {"max_outgoing_messages_per_day": 1}, allowed=st.OWNER_EDITABLE)
        unchanged = await ops.save("mox", {"keep_retired_webhooks": "1h"})
        self.assertEqual((unchanged.update.changed, unchanged.reload), ((), None))

    async def test_config_reload(self) -> None:
        f = await self.fixture()
        path = f.config.source
        assert path is not None
        path.write_text(path.read_text().replace('keep_retired_webhooks = "72h"', 'keep_retired_webhooks = "1h"')
                        .replace("max_concurrent = 100", "max_concurrent = 3"))  # fmt: skip
        result = await f.admin("ConfigReload")
        self.assertEqual(result, {"applied": ["accounts.mox.keep_retired_webhooks"], "needs_restart": ["queue"]})
        self.assertEqual(f.config.accounts["mox"].keep_retired_webhooks, 3600)


class CLITests(SynchronousTestCase):
    def run_cli(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_show_set_unset(self) -> None:
        path = write_config(self)
        code, out, _ = self.run_cli("account", "show", "bob", "-c", str(path))
        self.assertEqual(code, 0)
        self.assertIn("signing_secret = whsec_\u2026WVo=", out)
        self.assertIn("events = delivered, failed", out)
        self.assertNotIn(SECRET, out)
        code, out, _ = self.run_cli("account", "show", "bob", "-c", str(path), "--json")
        self.assertEqual(json.loads(out)["settings"]["incoming_webhook"]["authorization"], "Bearer \u2026XYZW")
        code, out, err = self.run_cli(
            "account", "set", "alice", "-c", str(path), "keep_retired_messages=5h", "--no-reload"
        )
        self.assertEqual((code, err), (0, ""))
        self.assertIn("changed keep_retired_messages", out)
        code, out, err = self.run_cli("account", "unset", "bob", "outgoing_webhook", "-c", str(path), "--no-reload")
        self.assertEqual(code, 0, err)
        config = load_config(path)
        self.assertEqual(config.accounts["alice"].keep_retired_messages, 5 * 3600)
        self.assertIsNone(config.accounts["bob"].outgoing_webhook)
        code, _, err = self.run_cli("account", "set", "alice", "-c", str(path), "keep_retired_messages=soon")
        self.assertEqual(code, 1)
        self.assertIn('expected a duration such as "72h", got "soon"', err)

    def test_set_reports_unreachable_daemon(self) -> None:
        path = write_config(self)
        code, out, err = self.run_cli(
            "account", "set", "alice", "-c", str(path), "keep_retired_messages=5h",
            "--admin-url", "http://127.0.0.1:1/admin/api/",
        )  # fmt: skip
        self.assertEqual(code, 1)
        self.assertIn("changed keep_retired_messages", out)
        self.assertIn("the running daemon was not told", err)
        self.assertIn("systemctl reload moxtw", err)

