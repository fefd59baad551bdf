#!/usr/bin/env python3
"""Time from ``twistd -n moxtw localserve`` to its webapi answering, first start and restart.

Starts localserve in a temporary directory on free loopback ports, prints the seconds
until ``GET /webapi/v0/`` answers, stops it, and does it again (the second start reads
the existing configuration and database).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LocalServe, port_open  # noqa: E402


def start_and_time(daemon: LocalServe) -> float:
    while port_open(daemon.http_port):  # the previous run's port must be free again
        time.sleep(0.05)
    start = time.perf_counter()
    daemon.start()
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{daemon.http_port}/webapi/v0/", timeout=1) as r:
                    r.read()
                return time.perf_counter() - start
            except OSError:
                if time.perf_counter() - start > 60:
                    raise SystemExit("localserve did not answer within 60 s") from None
                time.sleep(0.01)
    finally:
        daemon.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        daemon = LocalServe(Path(tmp))
        first = start_and_time(daemon)
        second = start_and_time(daemon)
    if args.json:
        print(json.dumps({"first_start_s": round(first, 2), "restart_s": round(second, 2)}))
    else:
        print(f"localserve startup: first start {first:.2f} s, restart {second:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
