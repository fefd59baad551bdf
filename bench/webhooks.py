#!/usr/bin/env python3
"""Webhook throughput and Send-to-webhook latency of a real localserve daemon.

Starts, on loopback only, and stops again by PID:

* a webhook receiver in this process (plain asyncio, keep-alive HTTP/1.1) that answers
  every POST with 200 after ``--latency`` seconds, and records when each arrived;
* ``twistd -n moxtw localserve --dir DIR --outgoing-webhook URL`` with a fresh DIR whose
  generated ``moxtw.toml`` gets free ports and daily limits raised out of the way
  (localserve delivers every message to its own SMTP listener, so each Send gives one
  ``delivered`` event and one outgoing webhook).

Then two phases, Sends through the webapi with one recipient each (``rIx@localhost``):

1. **throughput**: ``--messages`` N Sends as fast as ``--concurrency`` keep-alive
   clients go, receiver latency ``--latency`` (default 100 ms).  Webhooks/s to the one
   URL = (N - 1) / (last arrival - first arrival).  Deliveries are much faster than
   that, so the webhook sender is what is measured (its ``max_in_flight``, 4 by default,
   bounds it at 4 / latency).  mox sends one request per URL at a time (~10/s here).
2. **latency**: ``--steady`` M Sends at a steady ``--rate`` (default 4/s) from one
   client, receiver answering at once (``--steady-latency``, default 0).  Per message:
   Send request written -> its webhook fully received, p50/p99/max; plus where the time
   goes (from the daemon's database: Send answered, queue attempt start and end, webhook
   attempt start).  mox v0.0.17 localserve: p50 35 ms, p99 62 ms.

``--runs R`` repeats everything with fresh directories.  ``--profile FILE`` records the
daemon's main process with py-spy (``--format raw``, ``--gil``) during the latency phase
and prints the top functions.

    .venv/bin/python bench/webhooks.py
    .venv/bin/python bench/webhooks.py --runs 3
    .venv/bin/python bench/webhooks.py --phase latency --steady 200 --profile /tmp/hooks.raw

Goals (issue 5): >= 30 webhooks/s to one URL answering in 100 ms; Send -> delivered
webhook p50 <= 35 ms at 4 messages/s.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))


# --- processes ------------------------------------------------------------------------

from common import LOGIN, PASSWORD, LocalServe, cpu_seconds, ms, percentile  # noqa: E402

# --- the webhook receiver -----------------------------------------------------------------


class Receiver:
    """Answers every POST with 200 after ``latency`` seconds; records arrivals."""

    def __init__(self) -> None:
        self.latency = 0.0
        #: QueueMsgID -> (arrival time (time.time()), event)
        self.arrivals: dict[int, tuple[float, str]] = {}
        self.other = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0
        self.changed = asyncio.Event()
        self.tasks: set[asyncio.Task[Any]] = set()

    def reset(self, latency: float) -> None:
        self.latency = latency
        self.arrivals.clear()
        self.other = 0
        self.max_in_flight = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                length = 0
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                arrived = time.time()
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    data = json.loads(body)
                    if data.get("Event") == "delivered":
                        self.arrivals[int(data["QueueMsgID"])] = (arrived, data["Event"])
                    else:
                        self.other += 1
                except (ValueError, KeyError):
                    self.other += 1
                self.changed.set()
                if self.latency:
                    await asyncio.sleep(self.latency)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                self.in_flight -= 1
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.tasks.discard(task)
            writer.close()

    async def close(self) -> None:
        """Wait for the daemon's connections to end (it closes them when it stops)."""
        for _ in range(100):
            if not self.tasks:
                return
            await asyncio.sleep(0.05)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def wait_for(self, ids: set[int], stall: float = 60.0) -> None:
        """Until every message in ``ids`` had its webhook (or nothing came for ``stall`` s)."""
        while not ids <= self.arrivals.keys():
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), stall)
            except TimeoutError:
                missing = len(ids - self.arrivals.keys())
                raise SystemExit(f"{missing} webhook(s) did not arrive within {stall:g}s of the last one") from None


# --- the webapi client ----------------------------------------------------------------------


class SendClient:
    """One keep-alive connection to the webapi's Send."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.auth = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, i: int) -> tuple[int, float, float]:
        """Send message ``i``; (QueueMsgID, time the request was written, time answered)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        # Not ending in digits: localserve fails recipients ending in a reply code (r450@).
        request = {"To": [{"Address": f"r{i}x@localhost"}], "Subject": f"bench {i}", "Text": f"message {i}\n"}
        body = ("request=" + urllib.parse.quote(json.dumps(request))).encode()
        head = (
            f"POST /webapi/v0/Send HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nAuthorization: Basic {self.auth}\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        sent = time.time()
        self.writer.write(head + body)
        status, answer = await self._response()
        answered = time.time()
        if status != 200:
            raise SystemExit(f"Send failed: {status} {answer[:300]!r}")
        return int(json.loads(answer)["Submissions"][0]["QueueMsgID"]), sent, answered

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --- figures ---------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"p50 {ms(percentile(values, 50))} / p99 {ms(percentile(values, 99))} / max {ms(max(values))} ms"


async def throughput(args: argparse.Namespace, receiver: Receiver, port: int, first: int) -> dict[str, Any]:
    receiver.reset(args.latency)
    clients = [SendClient(port) for _ in range(args.concurrency)]
    ids: set[int] = set()
    next_i = [first]

    async def worker(client: SendClient) -> None:
        while next_i[0] < first + args.messages:
            i = next_i[0]
            next_i[0] += 1
            msg_id, _, _ = await client.send(i)
            ids.add(msg_id)

    start = time.time()
    await asyncio.gather(*(worker(c) for c in clients))
    sends_done = time.time()
    await receiver.wait_for(ids)
    for c in clients:
        c.close()
    arrivals = sorted(receiver.arrivals[i][0] for i in ids)
    window = arrivals[-1] - arrivals[0]
    # The same after the last Send was answered: the webhook sender without Sends and
    # deliveries competing for the daemon's CPU.
    later = [t for t in arrivals if t > sends_done]
    return {
        "webhooks": len(ids),
        "latency_ms": ms(args.latency),
        "sends_s": round(sends_done - start, 2),
        "webhooks_per_s": round((len(ids) - 1) / window, 1) if window > 0 else float("inf"),
        "webhooks_per_s_after_sends": round((len(later) - 1) / (later[-1] - later[0]), 1) if len(later) > 10 else None,
        "first_send_to_last_webhook_s": round(arrivals[-1] - start, 2),
        "max_in_flight_seen": receiver.max_in_flight,
        "other_webhooks": receiver.other,
    }


def breakdown(db: Path, sends: dict[int, tuple[float, float]], arrivals: dict[int, tuple[float, str]]) -> dict[str, str]:
    """Where a message's time goes, from the daemon's database."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        attempts = {
            msg_id: (start, start + (duration or 0.0))
            for msg_id, start, duration in conn.execute(
                "SELECT msg_id, start, duration FROM queue_attempt WHERE success = 1"
            )
        }
        hooks = {
            msg_id: (submitted, start)
            for msg_id, submitted, start in conn.execute(
                "SELECT r.queue_msg_id, r.submitted, a.start FROM hook_retired r"
                " JOIN hook_attempt a ON a.hook_id = r.id AND a.attempt = 1 WHERE r.kind = 'delivered'"
            )
        }
    finally:
        conn.close()
    stages: dict[str, list[float]] = {
        "Send request -> answer": [],
        "answer -> queue attempt start": [],
        "queue attempt (SMTP to itself)": [],
        "delivered -> webhook attempt start": [],
        "webhook attempt start -> received": [],
    }
    for msg_id, (sent, answered) in sends.items():
        if msg_id not in attempts or msg_id not in hooks or msg_id not in arrivals:
            continue
        a_start, a_end = attempts[msg_id]
        _, h_start = hooks[msg_id]
        arrived = arrivals[msg_id][0]
        stages["Send request -> answer"].append(answered - sent)
        stages["answer -> queue attempt start"].append(a_start - answered)
        stages["queue attempt (SMTP to itself)"].append(a_end - a_start)
        stages["delivered -> webhook attempt start"].append(h_start - a_end)
        stages["webhook attempt start -> received"].append(arrived - h_start)
    return {k: spread(v) for k, v in stages.items() if v}


async def latency(args: argparse.Namespace, receiver: Receiver, daemon: LocalServe, first: int) -> dict[str, Any]:
    receiver.reset(args.steady_latency)
    client = SendClient(daemon.http_port)
    sends: dict[int, tuple[float, float]] = {}
    interval = 1.0 / args.rate
    loop = asyncio.get_running_loop()
    start = loop.time()
    in_flight: set[asyncio.Task[None]] = set()
    clients = [client]

    async def one(i: int, c: SendClient) -> None:
        msg_id, sent, answered = await c.send(i)
        sends[msg_id] = (sent, answered)
        clients.append(c)

    for n in range(args.steady):
        await asyncio.sleep(max(0.0, start + n * interval - loop.time()))
        # A steady rate: a Send that has not been answered does not delay the next one.
        c = clients.pop() if clients else SendClient(daemon.http_port)
        task = asyncio.create_task(one(first + n, c))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    while in_flight:
        await asyncio.gather(*list(in_flight))
    await receiver.wait_for(set(sends))
    for c in clients:
        c.close()
    totals = [receiver.arrivals[m][0] - sent for m, (sent, _) in sends.items()]
    return {
        "messages": len(sends),
        "rate": args.rate,
        "receiver_latency_ms": ms(args.steady_latency),
        "p50_ms": ms(percentile(totals, 50)),
        "p99_ms": ms(percentile(totals, 99)),
        "max_ms": ms(max(totals)),
        "mean_ms": ms(statistics.mean(totals)),
        "stages": breakdown(daemon.db, sends, receiver.arrivals),
    }


async def run_once(args: argparse.Namespace) -> dict[str, Any]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0, backlog=256)
    hook_port = server.sockets[0].getsockname()[1]
    directory = Path(tempfile.mkdtemp(prefix="moxtw-bench-hooks-"))
    daemon = LocalServe(directory, "--outgoing-webhook", f"http://127.0.0.1:{hook_port}/hooks")
    ports = daemon.ports
    result: dict[str, Any] = {"dir": str(directory)}
    profiler = None
    try:
        daemon.start()
        assert daemon.proc is not None
        # Warm up (first requests import code, open connections).
        client = SendClient(ports["http"])
        warm = set()
        for i in range(5):
            warm.add((await client.send(i))[0])
        client.close()
        await receiver.wait_for(warm)
        first = 10
        if args.phase in ("both", "throughput"):
            cpu = cpu_seconds(daemon.proc.pid)
            t = time.time()
            result["throughput"] = await throughput(args, receiver, ports["http"], first)
            result["throughput"]["daemon_cpu"] = round((cpu_seconds(daemon.proc.pid) - cpu) / (time.time() - t), 2)
            first += args.messages
        if args.phase in ("both", "latency"):
            if args.profile:
                from queue_delivery import Profiler

                profiler = Profiler(daemon.proc.pid, Path(args.profile), subprocesses=False, gil=True)
                await asyncio.sleep(0.5)  # py-spy attaches
            cpu = cpu_seconds(daemon.proc.pid)
            t = time.time()
            result["latency"] = await latency(args, receiver, daemon, first)
            result["latency"]["daemon_cpu"] = round((cpu_seconds(daemon.proc.pid) - cpu) / (time.time() - t), 2)
            if profiler is not None:
                profiler.finish()
    finally:
        if profiler is not None:
            profiler.finish()
        # In a thread: the receiver keeps answering while the daemon finishes its requests.
        await asyncio.to_thread(daemon.stop)
        server.close()
        await receiver.close()
        await server.wait_closed()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    return result


def report(result: dict[str, Any]) -> None:
    if "throughput" in result:
        t = result["throughput"]
        print(
            f"throughput: {t['webhooks']} webhooks to one URL answering in {t['latency_ms']:g} ms:"
            f" {t['webhooks_per_s']} webhooks/s (goal >= 30; mox ~10), {t['webhooks_per_s_after_sends']}/s once"
            f" the Sends were done; requests in flight at most"
            f" {t['max_in_flight_seen']}; Sends took {t['sends_s']} s; first Send -> last webhook"
            f" {t['first_send_to_last_webhook_s']} s; daemon CPU {t['daemon_cpu']:.0%}"
        )
    if "latency" in result:
        r = result["latency"]
        print(
            f"latency: {r['messages']} Sends at {r['rate']:g}/s, receiver answering in {r['receiver_latency_ms']:g} ms:"
            f" Send -> delivered webhook p50 {r['p50_ms']} ms (goal <= 35; mox 35), p99 {r['p99_ms']} ms"
            f" (mox 62), max {r['max_ms']} ms, mean {r['mean_ms']} ms; daemon CPU {r['daemon_cpu']:.0%}"
        )
        for stage, text in r["stages"].items():
            print(f"  {stage:36} {text}")


async def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--phase", choices=["both", "throughput", "latency"], default="both")
    p.add_argument("--messages", "-n", type=int, default=300, help="Sends in the throughput phase")
    p.add_argument("--concurrency", "-c", type=int, default=8, help="Send clients in the throughput phase")
    p.add_argument("--latency", type=float, default=0.1, help="receiver answer delay in the throughput phase (s)")
    p.add_argument("--steady", type=int, default=120, help="Sends in the latency phase")
    p.add_argument("--rate", type=float, default=4.0, help="Sends per second in the latency phase")
    p.add_argument("--steady-latency", type=float, default=0.0, help="receiver answer delay in the latency phase (s)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--profile", metavar="FILE", help="py-spy raw profile of the daemon during the latency phase")
    p.add_argument("--keep", action="store_true", help="keep the daemon's directory (printed)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args()
    for run in range(args.runs):
        result = await run_once(args)
        if args.json:
            print(json.dumps(result))
        else:
            if args.runs > 1:
                print(f"--- run {run + 1}")
            report(result)
            if args.keep:
                print(f"directory: {result['dir']}")
    if args.profile:
        from queue_delivery import top_functions

        print(top_functions(Path(args.profile)))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
