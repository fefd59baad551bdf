"""The ``moxtw`` command, run as a subprocess like a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from moxtw.cli import set_toml_key
from moxtw.config import load_config
from moxtw.localserve import ensure_config
from moxtw.passwords import verify_password

MOXTW = [sys.executable, "-m", "moxtw.cli"]


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*MOXTW, *args], input=stdin, capture_output=True, text=True, timeout=60)


class CheckConfigTests(SynchronousTestCase):
    def test_good(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        result = run("checkconfig", str(path))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ok (1 domain(s), 1 account(s))", result.stdout)

    def test_bad(self) -> None:
        path = Path(self.mktemp())
        path.write_text('hostname = "x"\ndata_dir = "d"\n[queue]\nmax_concurrent = 0\ncolour = 1\n')
        result = run("checkconfig", str(path))
        self.assertEqual(result.returncode, 1)
        self.assertIn("queue.max_concurrent: expected a positive integer, got 0", result.stderr)
        self.assertIn("queue.colour: unknown key", result.stderr)


class SetPasswordTests(SynchronousTestCase):
    def test_account_password(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        before = path.read_text()
        result = run("setpassword", "mox", "--config", str(path), stdin="new-secret-1\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        config = load_config(path)
        self.assertTrue(verify_password("new-secret-1", config.accounts["mox"].password_hash))
        self.assertFalse(verify_password("moxmoxmox", config.accounts["mox"].password_hash))
        # Comments and the admin password are untouched.
        after = path.read_text()
        self.assertIn("# Password for all login addresses of this account", after)
        self.assertEqual(len(before.splitlines()), len(after.splitlines()))
        self.assertTrue(verify_password("moxadmin", config.admin_password_hash))

    def test_admin_password(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        result = run("setpassword", "--admin", "--config", str(path), stdin="admin-secret\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(verify_password("admin-secret", load_config(path).admin_password_hash))

    def test_unknown_account_and_short_password(self) -> None:
        path, _ = ensure_config(Path(self.mktemp()).absolute())
        result = run("setpassword", "nobody", "--config", str(path), stdin="long-enough\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("no account 'nobody'", result.stderr)
        result = run("setpassword", "mox", "--config", str(path), stdin="short\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("too short", result.stderr)


class SetTomlKeyTests(SynchronousTestCase):
    def test_replace_and_insert(self) -> None:
        text = '# top\nhostname = "h"\n\n[accounts.a]\n# pw\npassword_hash = "old"\n\n[accounts.b]\ndomain = "x"\n'
        self.assertIn('[accounts.a]\n# pw\npassword_hash = "new"\n', set_toml_key(text, "accounts.a", "password_hash", "new"))
        self.assertIn('[accounts.b]\npassword_hash = "new"\ndomain = "x"\n', set_toml_key(text, "accounts.b", "password_hash", "new"))
        self.assertTrue(set_toml_key(text, None, "admin_password_hash", "z").startswith('# top\nhostname = "h"\n\nadmin_password_hash = "z"\n[accounts.a]'))
        self.assertIn('\n[accounts.c]\npassword_hash = "q\\"x"\n', set_toml_key(text, "accounts.c", "password_hash", 'q"x'))
