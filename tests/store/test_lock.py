"""One daemon per data directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.python import usage
from twisted.trial.unittest import TestCase

from moxtw import localserve
from moxtw.store.lock import lock_data_dir
from moxtw.tap import Options

TRY_LOCK = """
import sys
from pathlib import Path
from moxtw.store.lock import DataDirInUse, lock_data_dir
try:
    lock_data_dir(Path(sys.argv[1]))
except DataDirInUse as e:
    print(e)
    sys.exit(3)
print("locked")
"""


class DataDirLockTests(TestCase):
    def try_lock(self, directory: Path) -> tuple[int, str]:
        p = subprocess.run([sys.executable, "-c", TRY_LOCK, str(directory)], capture_output=True, text=True, timeout=60)
        return p.returncode, p.stdout.strip()

    def test_second_process_is_refused_with_the_holders_pid(self) -> None:
        directory = Path(self.mktemp()).absolute()
        lock_data_dir(directory)
        lock_data_dir(directory)  # again in the same process: fine
        code, out = self.try_lock(directory)
        self.assertEqual(code, 3, out)
        import os

        self.assertEqual(out, f"data directory {directory} is in use by another moxtw process (pid {os.getpid()})")

    def test_free_directory_is_locked(self) -> None:
        directory = Path(self.mktemp()).absolute()
        self.assertEqual(self.try_lock(directory), (0, "locked"))
        # The lock died with that process.
        self.assertEqual(self.try_lock(directory), (0, "locked"))

    def test_twistd_options_refuse_a_directory_in_use(self) -> None:
        directory = Path(self.mktemp()).absolute()
        config, _ = localserve.ensure_config(directory)
        holder = subprocess.Popen(
            [sys.executable, "-c", TRY_LOCK + "\nsys.stdout.flush()\nsys.stdin.read()\n", str(directory / "data")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.addCleanup(holder.wait)
        self.addCleanup(holder.stdin.close)  # type: ignore[union-attr]
        self.assertEqual(holder.stdout.readline().strip(), "locked")  # type: ignore[union-attr]
        options = Options()
        e = self.assertRaises(usage.UsageError, options.parseOptions, ["localserve", "--dir", str(directory)])
        self.assertIn("is in use by another moxtw process", str(e))
