"""Crash safety under load: kill -9 a localserve daemon at random points, restart it each
time, then drain and account for every message it accepted.

The load, all on loopback and running through every kill:

* webapi Sends from several keep-alive clients, one recipient each: most to
  ``dN x@localhost`` (delivered to the account's Inbox by localserve's queue), every
  seventh to ``fNpermerror@localhost`` (localserve answers 550: the message fails and
  is suppressed);
* SMTP submissions (AUTH PLAIN, pipelined MAIL/RCPT/DATA) to ``sNx@localhost``;
* the queue delivering all of it to localserve's own SMTP listener, and outgoing
  webhooks for every delivered and failed message to a receiver in this process.

A message is *accepted* when its Send was answered 200 or its DATA 250; requests cut off
by a kill are *unknown* (they may or may not have been queued, and the client was not told
either way).  After the last kill the daemon runs until every accepted message has its
outcome, is stopped, started once more (start-up sweeps files a crash left behind) and
stopped; then the counts:

* lost: accepted messages without their outcome (the webhook of the event their recipient
  dictates, and for delivered messages the copy in the Inbox);
* wrong: accepted messages with another outcome than their recipient dictates;
* duplicated deliveries: Inbox copies beyond the first, per message; each must be
  explained by a delivery attempt of that message that a kill interrupted (the attempt
  may have delivered the message before the daemon could record it: it is repeated once
  after the restart, never more);
* duplicated webhooks: webhooks beyond the first per (message, event), likewise each
  explained by an interrupted request of that webhook (same webhook ID); an event must
  never be made twice (two webhook IDs for one message and event);
* the store's integrity check (:func:`moxtw.store.integrity.check`).

Short form (CI, through tests/stress/test_crash.py): 20 kills, 0.5-2.5 s apart.  Long
form, from the repository root::

    .venv/bin/python -m tests.stress.crash --kills 100 --min-interval 1 --max-interval 8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import attrs

from moxtw.store import integrity
from tests.helpers import ROOT, TWISTD, localserve_config, port_open

LOGIN = "mox@localhost"
PASSWORD = "moxmoxmox"


@attrs.define
class Accepted:
    kind: str  # "send", "smtp"
    outcome: str  # "delivered", "failed"


@attrs.define
class Counts:
    kills: int = 0
    accepted: int = 0
    accepted_send: int = 0
    accepted_smtp: int = 0
    unknown: int = 0
    delivered: int = 0
    failed: int = 0
    lost: int = 0
    wrong: int = 0
    duplicated_deliveries: int = 0
    duplicated_webhooks: int = 0
    #: Duplicates not explained by an attempt a kill interrupted (each interrupted
    #: delivery attempt or webhook request may have arrived: it may be repeated once).
    unexplained_deliveries: int = 0
    unexplained_webhooks: int = 0
    #: (message, event) pairs whose webhooks had different webhook IDs (an event made twice).
    events_made_twice: int = 0
    interrupted_attempts: int = 0
    interrupted_webhooks: int = 0
    webhooks: int = 0
    integrity_problems: list[str] = attrs.Factory(list)
    integrity_notes: list[str] = attrs.Factory(list)
    lost_examples: list[str] = attrs.Factory(list)
    wrong_examples: list[str] = attrs.Factory(list)
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"kills {self.kills}: accepted {self.accepted} (webapi {self.accepted_send}, SMTP {self.accepted_smtp}), "
            f"unknown {self.unknown}; delivered {self.delivered}, failed {self.failed}, lost {self.lost}, "
            f"wrong {self.wrong}; duplicated deliveries {self.duplicated_deliveries}, duplicated webhooks "
            f"{self.duplicated_webhooks} (of {self.webhooks}), after {self.interrupted_attempts} interrupted attempts "
            f"and {self.interrupted_webhooks} interrupted webhook requests; unexplained duplicates "
            f"{self.unexplained_deliveries + self.unexplained_webhooks}; events made twice {self.events_made_twice}; "
            "integrity "
            f"{'ok' if not self.integrity_problems else self.integrity_problems}; {self.seconds:.0f} s"
        )


# --- the daemon ----------------------------------------------------------------------------


class Daemon:
    def __init__(self, directory: Path, hook_url: str) -> None:
        self.directory = directory
        self.ports = localserve_config(directory, unlimited=True)
        self.hook_url = hook_url
        self.log = directory / "moxtw.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        # Retry intervals divided by 30: an attempt that fails for a reason the load makes
        # (a starved loopback peer timing out) is retried within the drain (7.5 min -> 15 s)
        # instead of minutes after it; what is counted (lost, wrong, duplicated) is the same.
        argv = [TWISTD, "-n", "--pidfile=", "moxtw", "localserve", "--dir", str(self.directory),
                "--outgoing-webhook", self.hook_url, "--retry-scale", "30"]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + 60
        for name in ("http", "submission"):
            while not await asyncio.to_thread(port_open, self.ports[name]):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"daemon did not start:\n{self.log.read_text(errors='replace')[-3000:]}")
                await asyncio.sleep(0.02)

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(self.proc.wait)

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(self.proc.wait, 60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)

    @property
    def db(self) -> Path:
        return self.directory / "data" / "moxtw.sqlite3"


# --- the webhook receiver --------------------------------------------------------------------


class Receiver:
    def __init__(self) -> None:
        #: (subject, event) -> webhook IDs received, in order.
        self.events: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
        self.count = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                length, hook_id = 0, ""
                while True:
                    header = await reader.readline()
                    if header in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = header.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                    elif name.strip().lower() == "x-mox-webhook-id":
                        hook_id = value.strip()
                body = json.loads(await reader.readexactly(length))
                self.events[(body.get("Subject", ""), body.get("Event", ""))].append(hook_id)
                self.count += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


# --- load ------------------------------------------------------------------------------------------


class Load:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.running = True
        self.accepted: dict[str, Accepted] = {}
        self.unknown = 0
        self.next = 0
        self.auth = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()

    def number(self) -> int:
        self.next += 1
        return self.next

    async def sender(self, pace: float) -> None:
        reader = writer = None
        while self.running:
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.daemon.ports["http"])
                assert reader is not None
                i = self.number()
                failing = i % 7 == 0
                to = f"f{i}permerror@localhost" if failing else f"d{i}x@localhost"
                subject = f"stress send {i}"
                request = {"To": [{"Address": to}], "Subject": subject, "Text": f"message {i}\n"}
                body = ("request=" + urllib.parse.quote(json.dumps(request))).encode()
                writer.write(
                    f"POST /webapi/v0/Send HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {self.auth}\r\n"
                    f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                try:
                    status = int((await reader.readline()).split()[1])
                    length = 0
                    while (line := await reader.readline()) not in (b"\r\n", b""):
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    await reader.readexactly(length)
                except (IndexError, ValueError, ConnectionError, asyncio.IncompleteReadError):
                    self.unknown += 1
                    writer.close()
                    reader = writer = None
                    continue
                if status != 200:
                    raise RuntimeError(f"Send answered {status}")
                self.accepted[subject] = Accepted("send", "failed" if failing else "delivered")
                await asyncio.sleep(pace)
            except (ConnectionError, OSError):
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)

    async def submitter(self, pace: float) -> None:
        while self.running:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.daemon.ports["submission"])
            except OSError:
                await asyncio.sleep(0.05)
                continue
            try:
                await self._session(reader, writer, pace)
            except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
                pass
            finally:
                writer.close()
            await asyncio.sleep(0.05)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pace: float) -> None:
        async def reply() -> int:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionError("closed")
                if line[3:4] != b"-":
                    return int(line[:3])

        if await reply() != 220:
            return
        writer.write(b"EHLO stress.example\r\n")
        await reply()
        token = base64.b64encode(f"\0{LOGIN}\0{PASSWORD}".encode()).decode()
        writer.write(f"AUTH PLAIN {token}\r\n".encode())
        if await reply() != 235:
            raise RuntimeError("AUTH refused")
        while self.running:
            j = self.number()
            subject = f"stress smtp {j}"
            writer.write(f"MAIL FROM:<{LOGIN}>\r\nRCPT TO:<s{j}x@localhost>\r\nDATA\r\n".encode())
            codes = [await reply(), await reply(), await reply()]
            if codes != [250, 250, 354]:
                raise RuntimeError(f"submission answered {codes}")
            writer.write(
                f"From: <{LOGIN}>\r\nTo: <s{j}x@localhost>\r\nSubject: {subject}\r\n\r\nmessage {j}\r\n.\r\n".encode()
            )
            try:
                code = await reply()
            except (ConnectionError, asyncio.IncompleteReadError):
                self.unknown += 1
                raise
            if code != 250:
                raise RuntimeError(f"DATA answered {code}")
            self.accepted[subject] = Accepted("smtp", "delivered")
            await asyncio.sleep(pace)


# --- the run ----------------------------------------------------------------------------------------


@attrs.frozen
class Stored:
    #: Inbox copies per subject.
    copies: collections.Counter[str]
    #: Delivery attempts a kill interrupted, per subject.
    interrupted: collections.Counter[str]
    #: Webhook requests a kill interrupted, per webhook ID.
    interrupted_hooks: collections.Counter[str]


def stored(db: Path) -> Stored:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        copies = con.execute(
            "SELECT m.subject FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
            " WHERE b.account = 'mox' AND b.name = 'Inbox' AND m.expunged = 0 AND m.subject LIKE 'stress %'"
        ).fetchall()
        interrupted = con.execute(
            "SELECT r.subject, count(*) FROM queue_attempt a JOIN queue_retired r ON r.id = a.msg_id"
            " WHERE a.error LIKE 'interrupted%' GROUP BY r.subject"
        ).fetchall()
        hooks = con.execute(
            "SELECT hook_id, count(*) FROM hook_attempt WHERE error LIKE 'interrupted%' GROUP BY hook_id"
        ).fetchall()
    finally:
        con.close()
    return Stored(
        collections.Counter(r[0] for r in copies),
        collections.Counter(dict(interrupted)),
        collections.Counter({str(k): n for k, n in hooks}),
    )


async def run(*, kills: int = 20, min_interval: float = 0.5, max_interval: float = 2.5, senders: int = 3,
              submitters: int = 2, pace: float = 0.01, drain_timeout: float = 300.0, seed: int | None = None,
              directory: Path | None = None, progress: Any = None) -> Counts:
    rng = random.Random(seed)
    started = time.monotonic()
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    hook_port = server.sockets[0].getsockname()[1]
    own_dir = directory is None
    directory = directory or Path(tempfile.mkdtemp(prefix="moxtw-stress-"))
    daemon = Daemon(directory, f"http://127.0.0.1:{hook_port}/hooks")
    counts = Counts(kills=kills)
    load = Load(daemon)
    tasks: list[asyncio.Task[None]] = []
    try:
        await daemon.start()
        tasks = [asyncio.create_task(load.sender(pace)) for _ in range(senders)]
        tasks += [asyncio.create_task(load.submitter(pace)) for _ in range(submitters)]
        for k in range(kills):
            await asyncio.sleep(rng.uniform(min_interval, max_interval))
            for task in tasks:
                if task.done():
                    task.result()  # a load generator failed: raise its error
            await daemon.kill()
            if progress:
                progress(f"kill {k + 1}/{kills}: {len(load.accepted)} accepted so far")
            await daemon.start()
        await asyncio.sleep(rng.uniform(min_interval, max_interval))
        load.running = False
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

        # Drain: every accepted message reaches its outcome.
        deadline = time.monotonic() + drain_timeout
        while True:
            missing = [s for s, a in load.accepted.items() if not receiver.events.get((s, a.outcome))]
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(1)  # late duplicates, if any, arrive too
        await daemon.stop()
        # One more start: files a kill left without a row are swept at start.
        await daemon.start()
        await asyncio.sleep(2)
        await daemon.stop()

        found = stored(daemon.db)
        copies = found.copies
        counts.accepted = len(load.accepted)
        counts.accepted_send = sum(1 for a in load.accepted.values() if a.kind == "send")
        counts.accepted_smtp = counts.accepted - counts.accepted_send
        counts.unknown = load.unknown
        counts.webhooks = receiver.count
        for subject, a in load.accepted.items():
            outcome_seen = bool(receiver.events.get((subject, a.outcome)))
            other = "failed" if a.outcome == "delivered" else "delivered"
            if receiver.events.get((subject, other)):
                counts.wrong += 1
                if len(counts.wrong_examples) < 5:
                    counts.wrong_examples.append(f"{subject}: {other}, expected {a.outcome}")
            if not outcome_seen or (a.outcome == "delivered" and copies[subject] == 0):
                counts.lost += 1
                if len(counts.lost_examples) < 5:
                    counts.lost_examples.append(
                        f"{subject}: webhook {'seen' if outcome_seen else 'missing'}, Inbox copies {copies[subject]}"
                    )
            elif a.outcome == "delivered":
                counts.delivered += 1
            else:
                counts.failed += 1
        counts.duplicated_deliveries = sum(n - 1 for n in copies.values() if n > 1)
        counts.unexplained_deliveries = sum(
            max(0, n - 1 - found.interrupted[subject]) for subject, n in copies.items()
        )
        counts.duplicated_webhooks = sum(len(ids) - 1 for ids in receiver.events.values() if len(ids) > 1)
        for ids in receiver.events.values():
            if len(set(ids)) > 1:
                counts.events_made_twice += 1
            for hook_id, n in collections.Counter(ids).items():
                counts.unexplained_webhooks += max(0, n - 1 - found.interrupted_hooks[hook_id])
        counts.interrupted_attempts = sum(found.interrupted.values())
        counts.interrupted_webhooks = sum(found.interrupted_hooks.values())
        report = integrity.check(daemon.directory / "data")
        counts.integrity_problems = report.problems
        counts.integrity_notes = report.notes
    finally:
        load.running = False
        for task in tasks:
            task.cancel()
        await daemon.stop()
        server.close()
        if own_dir and not os.environ.get("MOXTW_STRESS_KEEP"):
            shutil.rmtree(directory, ignore_errors=True)
    counts.seconds = time.monotonic() - started
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--min-interval", type=float, default=0.5, help="least seconds of load between kills")
    p.add_argument("--max-interval", type=float, default=2.5, help="most seconds of load between kills")
    p.add_argument("--senders", type=int, default=3, help="webapi Send clients")
    p.add_argument("--submitters", type=int, default=2, help="SMTP submission connections")
    p.add_argument("--pace", type=float, default=0.01, help="pause of each client after each message (s)")
    p.add_argument("--seed", type=int)
    p.add_argument("--dir", type=Path, help="keep the daemon's directory here")
    args = p.parse_args()
    counts = asyncio.run(run(
        kills=args.kills, min_interval=args.min_interval, max_interval=args.max_interval, senders=args.senders,
        submitters=args.submitters, pace=args.pace, seed=args.seed, directory=args.dir,
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    ))  # fmt: skip
    print(counts.summary())
    for line in counts.lost_examples + counts.wrong_examples + counts.integrity_notes:
        print("  " + line)
    bad = (counts.lost or counts.wrong or counts.integrity_problems or not counts.accepted
           or counts.unexplained_deliveries or counts.unexplained_webhooks or counts.events_made_twice)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
