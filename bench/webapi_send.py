#!/usr/bin/env python3
"""Drive a running moxtw (or mox) webapi Send with N messages at concurrency C.

Starts nothing itself.  Each of C keep-alive connections sends one request at a time
(urlencoded ``request`` field, basic auth), so C is the number of concurrent clients.
Prints messages/s and latency percentiles.  Against localserve:

    .venv/bin/twistd -n moxtw localserve &          # in one terminal
    .venv/bin/python bench/webapi_send.py -n 5000 -c 16
    .venv/bin/python bench/webapi_send.py -n 2000 -c 1

The client is plain asyncio with hand-written HTTP/1.1, so it costs the server's CPU as
little as possible on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
import urllib.parse


def build_request(host: str, path: str, auth: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Basic {auth}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split()[1])
    length = None
    chunked = False
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return status, body
    return status, await reader.readexactly(length or 0)


async def worker(args: argparse.Namespace, counter: list[int], latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    auth = base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    path = args.path.rstrip("/") + "/v0/Send"
    while True:
        if counter[0] >= args.n:
            break
        counter[0] += 1
        i = counter[0]
        req = {
            "To": [{"Address": args.to}],
            "Subject": f"bench {i}",
            "Text": f"Benchmark message {i}.\n" + "x" * args.size,
        }
        body = ("request=" + urllib.parse.quote(json.dumps(req))).encode()
        data = build_request(f"{args.host}:{args.port}", path, auth, body)
        start = time.perf_counter()
        writer.write(data)
        status, response = await read_response(reader)
        latencies.append(time.perf_counter() - start)
        if status != 200:
            errors.append(f"{status} {response[:200]!r}")
    writer.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=2000, help="messages to send")
    p.add_argument("-c", type=int, default=16, help="concurrent connections")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1080)
    p.add_argument("--path", default="/webapi/")
    p.add_argument("--user", default="mox@localhost")
    p.add_argument("--password", default="moxmoxmox")
    p.add_argument("--to", default="bench@localhost", help="recipient address")
    p.add_argument("--size", type=int, default=200, help="extra body bytes per message")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()

    counter = [0]
    latencies: list[float] = []
    errors: list[str] = []
    start = time.perf_counter()
    await asyncio.gather(*(worker(args, counter, latencies, errors) for _ in range(args.c)))
    elapsed = time.perf_counter() - start
    ok = len(latencies) - len(errors)
    figures = {
        "messages": len(latencies),
        "errors": len(errors),
        "concurrency": args.c,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(ok / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "mean_ms": round(statistics.mean(latencies) * 1000, 2),
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"webapi Send: {figures['messages']} messages, concurrency {args.c}: "
            f"{figures['msgs_per_s']} msgs/s; latency p50 {figures['p50_ms']} ms, "
            f"p90 {figures['p90_ms']} ms, p99 {figures['p99_ms']} ms; errors {len(errors)}"
        )
    for e in errors[:5]:
        print("error:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
