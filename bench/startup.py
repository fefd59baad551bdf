#!/usr/bin/env python3
"""Time from `twistd -n moxtw localserve` to its webapi answering, first start and restart.

Starts localserve in a temporary directory (on its default ports, which must be free),
prints the seconds until `GET /webapi/v0/` answers, stops it, and does it again (the
second start reads the existing configuration and database).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

TWISTD = str(Path(sys.executable).parent / "twistd")


def start_and_time(directory: str) -> float:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "moxtw", "localserve", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:1080/webapi/v0/", timeout=1) as r:
                    r.read()
                return time.perf_counter() - start
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit("localserve exited during startup") from None
                if time.perf_counter() - start > 30:
                    raise SystemExit("localserve did not answer within 30 s") from None
                time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        first = start_and_time(tmp)
        second = start_and_time(tmp)
    print(f"localserve startup: first start {first:.2f} s, restart {second:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
