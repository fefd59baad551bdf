#!/usr/bin/env python3
"""SMTP submission throughput: N messages over C authenticated connections.

Each connection says EHLO, authenticates once (AUTH PLAIN), then submits its share of
the messages one after the other, pipelining MAIL, RCPT and DATA (the server offers
PIPELINING) and waiting for the 250 after the message body: that 250 means the message
is on disk, as for a webapi Send.  Prints messages/s and per-message latency (MAIL FROM
written -> final 250).

Against a running localserve (submission on 1587, AUTH allowed without TLS there):

    .venv/bin/python bench/smtp_submission.py -n 2000 -c 8

Or let it start (and stop) its own localserve in a temporary directory, with daily
limits raised out of the way:

    .venv/bin/python bench/smtp_submission.py --start -n 2000 -c 1

The client is plain asyncio, so it costs the server's CPU little on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import LOGIN, PASSWORD, LocalServe, percentile  # noqa: E402


class SMTPError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = (await reader.readline()).decode("utf-8", "replace")
        if not line:
            raise SMTPError("connection closed")
        lines.append(line.rstrip("\r\n"))
        if len(line) < 4 or line[3] != "-":
            return int(line[:3]), "\n".join(lines)


async def expect(reader: asyncio.StreamReader, code: int, what: str) -> None:
    got, text = await read_reply(reader)
    if got != code:
        raise SMTPError(f"{what}: expected {code}, got {text!r}")


async def connection(args: argparse.Namespace, counter: list[int], latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    try:
        await expect(reader, 220, "greeting")
        writer.write(b"EHLO bench.example\r\n")
        await expect(reader, 250, "EHLO")
        token = base64.b64encode(f"\0{args.user}\0{args.password}".encode()).decode()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        await expect(reader, 235, "AUTH")
        padding = ("x" * 76 + "\r\n") * (args.size // 78)
        while counter[0] < args.n:
            i = counter[0]
            counter[0] += 1
            body = (
                f"From: <{args.user}>\r\nTo: <{args.to}>\r\nSubject: bench {i}\r\n"
                f"Message-ID: <bench-{i}-{time.time_ns()}@bench.example>\r\n\r\n"
                f"message {i}\r\n{padding}.\r\n"
            ).encode()
            start = time.perf_counter()
            writer.write(f"MAIL FROM:<{args.user}>\r\nRCPT TO:<{args.to}>\r\nDATA\r\n".encode())
            try:
                await expect(reader, 250, "MAIL")
                await expect(reader, 250, "RCPT")
                await expect(reader, 354, "DATA")
                writer.write(body)
                await expect(reader, 250, "message")
            except SMTPError as e:
                errors.append(str(e))
                writer.write(b"RSET\r\n")
                await read_reply(reader)
            latencies.append(time.perf_counter() - start)
        writer.write(b"QUIT\r\n")
        await read_reply(reader)
    finally:
        writer.close()


async def measure(args: argparse.Namespace) -> dict[str, float | int]:
    counter = [0]
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(connection(args, counter, latencies, errors) for _ in range(args.c)))
    elapsed = time.perf_counter() - start
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    ok = len(latencies) - len(errors)
    return {
        "messages": len(latencies),
        "errors": len(errors),
        "connections": args.c,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(ok / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "mean_ms": round(statistics.mean(latencies) * 1000, 2) if latencies else 0.0,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=2000, help="messages to submit")
    p.add_argument("-c", type=int, default=8, help="concurrent SMTP connections")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1587, help="submission port (ignored with --start)")
    p.add_argument("--user", default=LOGIN)
    p.add_argument("--password", default=PASSWORD)
    p.add_argument("--to", default="bench@localhost", help="recipient address")
    p.add_argument("--size", type=int, default=200, help="extra body bytes per message")
    p.add_argument("--start", action="store_true", help="start a localserve in a temporary directory")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()

    daemon = None
    directory = None
    if args.start:
        directory = Path(tempfile.mkdtemp(prefix="moxtw-bench-smtp-"))
        daemon = LocalServe(directory).start()
        args.port = daemon.ports["submission"]
    try:
        figures = asyncio.run(measure(args))
    finally:
        if daemon is not None:
            daemon.stop()
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"SMTP submission: {figures['messages']} messages over {args.c} connections: "
            f"{figures['msgs_per_s']} msgs/s; latency p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms; "
            f"errors {figures['errors']}"
        )
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
