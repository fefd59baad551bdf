#!/usr/bin/env python3
"""Send throughput, startup time and daemon memory with a large queue.

Starts a localserve daemon in a temporary directory (free loopback ports, daily limits
raised) and measures, for an empty queue and then for each size in ``--sizes``
(default 100000 and 1000000 messages queued and held):

* the daemon's start time (to its webapi listening),
* webapi Send throughput at 16 concurrent clients (``bench/webapi_send.py``,
  ``--messages`` Sends, delivered as usual by localserve),
* the daemon's resident memory after start and after the Sends.

The held backlog is written while the daemon is stopped, by copying one message that a
real Send queued (with a FutureRelease, so it stays queued) with SQLite's own INSERT ...
SELECT: every copy is a valid queue row of the same account, held (as a hold rule would
hold it), with its own recipient, all sharing that one message file.  Nothing is
delivered from the backlog; it is there to show what a large queue costs the paths that
run while it waits.

    .venv/bin/python bench/scale.py                       # 0, 100k, 1M
    .venv/bin/python bench/scale.py --sizes 10000 --messages 1000 --json
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import LOGIN, PASSWORD, LocalServe, rss_mib  # noqa: E402


def send_template(port: int) -> int:
    """One Send with a FutureRelease 30 days ahead; its QueueMsgID."""
    release = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    request = {"To": [{"Address": "backlog@localhost"}], "Subject": "backlog", "Text": "held backlog\n",
               "FutureRelease": release}
    body = urllib.parse.urlencode({"request": json.dumps(request)}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webapi/v0/Send", data=body)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode())
    with urllib.request.urlopen(req, timeout=30) as answer:
        return int(json.loads(answer.read())["Submissions"][0]["QueueMsgID"])


def grow_backlog(db: Path, template: int, total: int) -> float:
    """Make the queue hold ``total`` held copies of message ``template`` (the daemon is
    stopped); seconds it took."""
    started = time.monotonic()
    con = sqlite3.connect(db)
    try:
        have = con.execute("SELECT count(*) FROM queue_msg WHERE hold = 1").fetchone()[0]
        columns = [row[1] for row in con.execute("PRAGMA table_info(queue_msg)") if row[1] != "id"]
        copied = {
            "hold": "1",
            "recipient_localpart": "'backlog' || n",
            "recipient_address": "'backlog' || n || '@localhost'",
        }
        select = ", ".join(copied.get(c, c) for c in columns)
        con.execute(
            f"""
            WITH RECURSIVE seq(n) AS (SELECT ? UNION ALL SELECT n + 1 FROM seq WHERE n < ?)
            INSERT INTO queue_msg ({", ".join(columns)})
            SELECT {select} FROM seq, (SELECT * FROM queue_msg WHERE id = ?)
            """,
            (have + 1, total, template),
        )
        con.commit()
    finally:
        con.close()
    return time.monotonic() - started


def run_send(port: int, messages: int, concurrency: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(BENCH / "webapi_send.py"), "--port", str(port), "-n", str(messages),
         "-c", str(concurrency), "--json"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"webapi_send failed: {out.stderr[-2000:]}")
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def measure(daemon: LocalServe, queued: int, args: argparse.Namespace) -> dict[str, Any]:
    daemon.start(timeout=600)
    try:
        time.sleep(1)  # startup work after the listener opens (recovery, first passes)
        rss_start = rss_mib(daemon.pid)
        send = run_send(daemon.http_port, args.messages, args.concurrency)
        return {
            "queued_held": queued,
            "startup_s": round(daemon.startup_seconds, 2),
            "send_msgs_per_s": send["msgs_per_s"],
            "send_p99_ms": send["p99_ms"],
            "rss_start_mib": rss_start,
            "rss_after_sends_mib": rss_mib(daemon.pid),
        }
    finally:
        daemon.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000", help="held backlog sizes, comma separated")
    p.add_argument("--messages", type=int, default=3000, help="Sends measured per size")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    directory = Path(tempfile.mkdtemp(prefix="moxtw-bench-scale-"))
    daemon = LocalServe(directory)
    rows = []
    try:
        daemon.start()
        template = send_template(daemon.http_port)
        daemon.stop()
        rows.append(measure(daemon, 0, args))
        for size in sizes:
            seconds = grow_backlog(daemon.db, template, size)
            print(f"  backlog of {size} held messages written in {seconds:.1f} s", file=sys.stderr)
            rows.append(measure(daemon, size, args))
    finally:
        daemon.stop()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(rows))
    else:
        print(f"{'held':>9} {'start s':>8} {'Send/s':>8} {'p99 ms':>8} {'RSS start':>10} {'RSS after':>10}")
        for r in rows:
            print(f"{r['queued_held']:>9} {r['startup_s']:>8} {r['send_msgs_per_s']:>8} {r['send_p99_ms']:>8} "
                  f"{r['rss_start_mib']:>9}M {r['rss_after_sends_mib']:>9}M")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
