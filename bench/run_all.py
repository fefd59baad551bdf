#!/usr/bin/env python3
"""Run every benchmark in bench/ and print one table (figure, value, unit).

Starts a localserve daemon in a temporary directory (free loopback ports, daily limits
raised) for the benchmarks that drive a running server (webapi Send, SMTP submission,
each message also delivered by localserve), and stops it afterwards; the others start
and stop their own daemons and peers (submission alone: a localserve holding every
message; queue delivery: twisted.names MX and Postfix's smtp-sink; webhooks: a
receiver; scale: a localserve with a large held backlog; startup).

    .venv/bin/python bench/run_all.py                    # full sizes (about 4 minutes)
    .venv/bin/python bench/run_all.py --quick            # small sizes, under 2 minutes
    .venv/bin/python bench/run_all.py --json figures.json
    .venv/bin/python bench/run_all.py --only send,smtp   # a subset

Figures depend on the machine and on what else runs on it: compare runs on one quiet
machine.  Exits non-zero when a benchmark fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from common import ADMIN_PASSWORD, LocalServe  # noqa: E402

Row = tuple[str, Any, str]

#: Sizes per benchmark: (full, quick).
SIZES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "send": ({"c16": 8000, "c1": 2000}, {"c16": 1000, "c1": 300}),
    "smtp": ({"c8": 4000, "c1": 1000}, {"c8": 600, "c1": 200}),
    "submit": ({"send": 3000, "smtp": 1500}, {"send": 300, "smtp": 200}),
    "queue": ({"messages": 2000}, {"messages": 400}),
    "webhooks": ({"messages": 300, "steady": 120}, {"messages": 100, "steady": 40}),
    "scale": ({"sizes": "100000,1000000", "messages": 3000}, {"sizes": "10000", "messages": 500}),
    "startup": ({}, {}),
}


def script(name: str, *args: str, timeout: float = 3600) -> str:
    """Run ``bench/NAME`` with ARGS; its standard output (SystemExit on failure)."""
    argv = [sys.executable, str(BENCH / name), *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-1500:]}{out.stderr[-1500:]}")
    return out.stdout


def last_json(output: str) -> Any:
    """The last line of ``output`` that is a JSON document; RuntimeError if it counts
    errors (a figure over failed requests is no figure)."""
    for line in reversed(output.strip().splitlines()):
        if line.startswith(("{", "[")):
            figures = json.loads(line)
            if isinstance(figures, dict) and figures.get("errors"):
                raise RuntimeError(f"{figures['errors']} request(s) failed:\n{output[-1500:]}")
            return figures
    raise RuntimeError(f"no JSON figures in:\n{output[-1500:]}")


def bench_send(daemon: LocalServe, size: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for clients, key in ((16, "c16"), (1, "c1")):
        daemon.wait_idle()  # the previous measurement's deliveries are done
        f = last_json(script("webapi_send.py", "--port", str(daemon.http_port), "-n", str(size[key]),
                             "-c", str(clients), "--json"))  # fmt: skip
        rows.append((f"webapi Send, {clients} client{'s' if clients > 1 else ''}", f["msgs_per_s"], "msgs/s"))
        rows.append((f"webapi Send, {clients} client{'s' if clients > 1 else ''}, p50", f["p50_ms"], "ms"))
    return rows


def bench_smtp(daemon: LocalServe, size: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for conns, key in ((8, "c8"), (1, "c1")):
        daemon.wait_idle()  # the previous measurement's deliveries are done
        f = last_json(script("smtp_submission.py", "--port", str(daemon.ports["submission"]), "-n", str(size[key]),
                             "-c", str(conns), "--json"))  # fmt: skip
        label = f"SMTP submission, {conns} connection{'s' if conns > 1 else ''}"
        rows.append((label, f["msgs_per_s"], "msgs/s"))
        rows.append((f"{label}, p50", f["p50_ms"], "ms"))
    return rows


def bench_submit(size: dict[str, Any]) -> list[Row]:
    """Submission alone: a localserve whose hold rule holds every message of the account,
    so nothing is delivered during the measurement (the rows above also deliver each
    message on the same cores, as localserve does)."""
    directory = Path(tempfile.mkdtemp(prefix="moxtw-bench-submit-"))
    daemon = LocalServe(directory).start()
    try:
        admin = f"http://127.0.0.1:{daemon.http_port}/admin/api/"
        subprocess.run(
            [str(Path(sys.executable).parent / "moxtw"), "holdrules", "add", "--admin-url", admin,
             "--admin-password", ADMIN_PASSWORD, "--account", "mox"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        rows: list[Row] = []
        for clients in (1, 16):
            f = last_json(script("webapi_send.py", "--port", str(daemon.http_port), "-n", str(size["send"]),
                                 "-c", str(clients), "--json"))  # fmt: skip
            label = f"webapi Send, {clients} client{'s' if clients > 1 else ''}, held (no delivery)"
            rows += [(label, f["msgs_per_s"], "msgs/s"), (f"{label}, p50", f["p50_ms"], "ms")]
        for conns in (1, 8):
            f = last_json(script("smtp_submission.py", "--port", str(daemon.ports["submission"]), "-n",
                                 str(size["smtp"]), "-c", str(conns), "--json"))  # fmt: skip
            label = f"SMTP submission, {conns} connection{'s' if conns > 1 else ''}, held (no delivery)"
            rows += [(label, f["msgs_per_s"], "msgs/s"), (f"{label}, p50", f["p50_ms"], "ms")]
        return rows
    finally:
        daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)


def bench_queue(size: dict[str, Any]) -> list[Row]:
    f = last_json(script("queue_delivery.py", "--preload", "-n", str(size["messages"]), "--json"))
    return [
        ("queue delivery to smtp-sink (preloaded, 1 domain)", f["deliveries_per_s"], "deliveries/s"),
        ("queue delivery attempt, p50", round(f["attempt_p50"] * 1000, 1), "ms"),
    ]


def bench_webhooks(size: dict[str, Any]) -> list[Row]:
    f = last_json(script("webhooks.py", "--messages", str(size["messages"]), "--steady", str(size["steady"]),
                         "--json"))  # fmt: skip
    t, lat = f["throughput"], f["latency"]
    return [
        (f"webhooks to one URL answering in {t['latency_ms']:.0f} ms", t["webhooks_per_s"], "webhooks/s"),
        (f"Send -> delivered webhook at {lat['rate']:g}/s, p50", lat["p50_ms"], "ms"),
        (f"Send -> delivered webhook at {lat['rate']:g}/s, p99", lat["p99_ms"], "ms"),
    ]


def bench_scale(size: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in last_json(script("scale.py", "--sizes", size["sizes"], "--messages", str(size["messages"]), "--json")):
        held = f"{r['queued_held']:,} held"
        rows.append((f"webapi Send, 16 clients, {held}", r["send_msgs_per_s"], "msgs/s"))
        rows.append((f"daemon RSS after Sends, {held}", r["rss_after_sends_mib"], "MiB"))
        rows.append((f"daemon start, {held}", r["startup_s"], "s"))
    return rows


def bench_startup(size: dict[str, Any]) -> list[Row]:
    f = last_json(script("startup.py", "--json"))
    return [("localserve start to webapi answering, restart", f["restart_s"], "s")]


SERVER_BENCHES: dict[str, Callable[[LocalServe, dict[str, Any]], list[Row]]] = {
    "send": bench_send,
    "smtp": bench_smtp,
}
OWN_DAEMON_BENCHES: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "submit": bench_submit,
    "queue": bench_queue,
    "webhooks": bench_webhooks,
    "scale": bench_scale,
    "startup": bench_startup,
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: every benchmark, under 2 minutes in all")
    p.add_argument("--json", metavar="FILE", help="also write the table as JSON to FILE")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(SIZES)}")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SIZES)
    unknown = [n for n in names if n not in SIZES]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")

    rows: list[Row] = []
    failures: list[str] = []
    started = time.monotonic()
    need_server = set(SERVER_BENCHES) & set(names)
    directory = Path(tempfile.mkdtemp(prefix="moxtw-bench-all-"))
    daemon = LocalServe(directory).start() if need_server else None
    try:
        for name in names:
            size = SIZES[name][1 if args.quick else 0]
            t = time.monotonic()
            print(f"... {name}", file=sys.stderr, flush=True)
            try:
                if name in need_server:
                    assert daemon is not None
                    rows += SERVER_BENCHES[name](daemon, size)
                else:
                    rows += OWN_DAEMON_BENCHES[name](size)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                failures.append(f"{name}: {e}")
            print(f"    {name}: {time.monotonic() - t:.0f} s", file=sys.stderr, flush=True)
    finally:
        if daemon is not None:
            daemon.stop()
        shutil.rmtree(directory, ignore_errors=True)

    width = max([len(r[0]) for r in rows] + [6])
    print(f"{'figure':<{width}}  {'value':>10}  unit")
    for figure, value, unit in rows:
        print(f"{figure:<{width}}  {value:>10}  {unit}")
    print(f"({'quick' if args.quick else 'full'} run, {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"quick": args.quick, "figures": [{"figure": f, "value": v, "unit": u} for f, v, u in rows],
             "failures": failures}, indent=2) + "\n")  # fmt: skip
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
