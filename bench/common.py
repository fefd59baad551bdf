"""What the benchmark scripts share: free loopback ports, a localserve daemon in a
temporary directory, process CPU and memory figures, percentiles.

Only loopback is used; every process a benchmark starts is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
LOGIN = "mox@localhost"
PASSWORD = "moxmoxmox"
ADMIN_PASSWORD = "moxadmin"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# --- processes ------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def wait_port(proc: subprocess.Popen[Any], port: int, host: str, what: str, log: Path | None = None,
              timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port, host):
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""
            raise SystemExit(f"{what} not listening on {host}:{port}\n{text}")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int | None:
    """Signal ``proc`` by its PID and wait; SIGKILL if it takes longer than ``timeout``."""
    if proc is None or proc.poll() is not None:
        return None if proc is None else proc.returncode
    proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def child_env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    return e


# --- a localserve daemon ------------------------------------------------------------------


def write_localserve_config(directory: Path) -> dict[str, int]:
    """localserve's generated configuration in ``directory`` with free loopback ports and
    no practical daily limits; returns the ports by listener name."""
    from tests.helpers import localserve_config

    return localserve_config(directory, unlimited=True)


class LocalServe:
    """``twistd -n moxtw localserve --dir DIR [ARGS]`` on free ports, output in DIR/moxtw.log."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.directory = directory
        self.args = args
        self.ports = write_localserve_config(directory)
        self.log = directory / "moxtw.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.startup_seconds = 0.0

    @property
    def http_port(self) -> int:
        return self.ports["http"]

    @property
    def db(self) -> Path:
        return self.directory / "data" / "moxtw.sqlite3"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> LocalServe:
        argv = [TWISTD, "-n", "--pidfile=", "moxtw", "localserve", "--dir", str(self.directory), *self.args]
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=str(ROOT))
        wait_port(self.proc, self.http_port, "127.0.0.1", "moxtw webapi", self.log, timeout)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> int | None:
        return stop(self.proc)

    def wait_idle(self, timeout: float = 300.0) -> None:
        """Wait until the queue is empty (everything sent so far delivered), so the next
        measurement does not share the machine with the previous one's deliveries."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=30)
            try:
                if con.execute("SELECT count(*) FROM queue_msg WHERE hold = 0").fetchone()[0] == 0:
                    return
            except sqlite3.OperationalError:
                pass  # the daemon is still creating its database
            finally:
                con.close()
            time.sleep(0.2)
        raise RuntimeError(f"queue not empty after {timeout:.0f} s")


# --- figures ---------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)
