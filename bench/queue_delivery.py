#!/usr/bin/env python3
"""Outgoing queue throughput: deliveries/s and queue-to-delivery latency of a real daemon.

Starts, on loopback only, and stops again by PID:

* a ``twisted.names`` DNS server (``tests.delivery.peers.DNSServer``, in a helper process
  of this script) answering ``MX 10 mx.example.test`` for the recipient domains and
  ``mx.example.test A 127.0.0.2``;
* a fast SMTP sink on 127.0.0.2 at a free port: Postfix's ``smtp-sink`` when installed
  (``-u nobody`` as root), else a minimal Twisted ESMTP sink in that helper process
  (``--sink twisted`` forces it);
* ``twistd -n moxtw --config FILE``: a production-style config (not localserve), account
  ``app@example.org`` with unlimited daily limits, ``[dns]`` pointing at the DNS server,
  ``[queue] port`` the sink's.

Then N messages (``--messages``, one recipient each, ``rcptI@dK.example.test`` over
``--domains`` domains, so every message is its own SMTP transaction) are sent through
the webapi by ``--concurrency`` keep-alive HTTP clients (plain asyncio, as
``bench/webapi_send.py``), and the script waits until all N are retired.  Figures come
from the daemon's database (read-only): ``queue_retired.queued`` and the successful
``queue_attempt`` (``start + duration`` is when the delivery ended).

Two modes:

* default (**live**): the sink is up while the Sends come in, so the queue delivers while
  the webapi takes messages.  Deliveries/s = N / (last delivery end - first queued);
  latency = delivery end - queued, per message (p50/p99/max).
* ``--preload`` (**pure delivery**): phase 1 runs the daemon with an empty
  ``[[hold_rules]]`` rule (it holds every new message), Sends N messages and stops the
  daemon (SIGTERM).  With no daemon running, the script releases them with one
  ``UPDATE queue_msg SET hold = 0`` on the database (a shortcut while the admin API's
  release is being built; hold is stored per message, so a config change alone would not
  release them).  Phase 2 starts the daemon without the rule: everything is due at once.
  Deliveries/s = N / (last delivery end - first attempt start); latency = delivery end -
  first attempt start (the wait in a queue released all at once), and attempt duration.

With the default ``--domains 1`` at most ``--max-per-domain`` (10) deliveries run at once,
so the figure is bound by how long one delivery holds its slot (claim, message file,
SMTP conversation, slot release) as much as by the daemon's CPU; ``--domains 20`` lets
``--max-concurrent`` (100) apply.

``--runs R`` repeats the whole thing with fresh directories.  ``--profile FILE`` records
the daemon with py-spy (``--format raw``, collapsed stacks, ``--gil``: only the thread
holding the GIL, unless ``--profile-all-threads``; the main process, plus HTTP workers
with ``--workers``) while it delivers (live: from the first Send on) and prints the top functions by own and by
inclusive samples.  The sink's own message count is printed as a cross-check.

    .venv/bin/python bench/queue_delivery.py                       # 2000, live
    .venv/bin/python bench/queue_delivery.py --preload --runs 3
    .venv/bin/python bench/queue_delivery.py --preload --profile /tmp/queue.raw

The goal the issue sets: at least 500 deliveries/s on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
TWISTD = str(Path(sys.executable).parent / "twistd")
PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy") or "py-spy"
MX_IP = "127.0.0.2"
PASSWORD = "bench-password-1"
LOGIN = "app@example.org"

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))


# --- helper process: DNS server and the Twisted sink ---------------------------------


class _Cleanups:
    """Stands in for a trial TestCase (``addCleanup``) for the test peers."""

    def addCleanup(self, f: Any, *args: Any) -> None:
        pass


def serve_peers(domains: list[str], mx_ip: str, sink_port: int) -> None:
    """Run in the helper process: DNS (and, with ``sink_port``, the Twisted sink) until
    SIGTERM.  Prints ``dns PORT`` and ``ready``; at exit ``sink-messages N``."""
    from twisted.internet import protocol
    from twisted.internet import reactor as _reactor
    from twisted.protocols.basic import LineReceiver

    from tests.delivery.peers import DNSServer

    reactor: Any = _reactor
    dns = DNSServer(_Cleanups())
    for domain in domains:
        dns.zone.mx(domain, (10, "mx.example.test"))
    dns.zone.a("mx.example.test", mx_ip)
    count = [0]

    class Sink(LineReceiver):
        delimiter = b"\r\n"
        MAX_LENGTH = 1 << 24
        transport: Any

        def reply(self, line: bytes) -> None:
            self.transport.write(line + b"\r\n")

        def connectionMade(self) -> None:
            self.in_data = False
            self.reply(b"220 sink.example.test ESMTP twisted-sink")

        def lineReceived(self, line: bytes) -> None:
            if self.in_data:
                if line == b".":
                    self.in_data = False
                    count[0] += 1
                    self.reply(b"250 2.0.0 queued")
                return
            verb = line[:4].upper()
            if verb == b"EHLO":
                self.reply(b"250-sink.example.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                              b"250-ENHANCEDSTATUSCODES\r\n250 SIZE 104857600")
            elif verb == b"DATA":
                self.in_data = True
                self.reply(b"354 go ahead")
            elif verb == b"QUIT":
                self.reply(b"221 2.0.0 bye")
                self.transport.loseConnection()
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP", b"HELO"):
                self.reply(b"250 2.0.0 ok")
            else:
                self.reply(b"502 5.5.2 not implemented")

    if sink_port:
        factory = protocol.Factory.forProtocol(Sink)
        factory.noisy = False
        reactor.listenTCP(sink_port, factory, backlog=512, interface=mx_ip)

    def report() -> None:
        if sink_port:
            print(f"sink-messages {count[0]}", flush=True)

    reactor.addSystemEventTrigger("before", "shutdown", report)
    print(f"dns {dns.port}", flush=True)
    print("ready", flush=True)
    reactor.run()


# --- processes ------------------------------------------------------------------------


from common import child_env as env  # noqa: E402
from common import cpu_seconds, free_port, percentile, port_open, stop, wait_port  # noqa: E402


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def write_config(directory: Path, args: argparse.Namespace, *, dns_port: int, mx_port: int, http_port: int,
                 hold: bool, password_hash: str) -> Path:
    path = directory / "moxtw.toml"
    path.write_text(
        f"""
hostname = "mail.example.org"
data_dir = "{directory / "data"}"
admin_password_hash = ""

[listeners]
http = ["tcp:{http_port}:interface=127.0.0.1"]

[webapi]
workers = {args.workers}

[queue]
port = {mx_port}
max_concurrent = {args.max_concurrent}
max_per_domain = {args.max_per_domain}

[dns]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = "5s"

[domains."example.org"]
catchall_separators = ["+"]

[accounts.app]
domain = "example.org"
addresses = ["{LOGIN}"]
password_hash = "{password_hash}"
keep_retired_messages = "72h"
max_outgoing_messages_per_day = 100000000
max_first_time_recipients_per_day = 100000000
"""
        + ("\n[[hold_rules]]\n" if hold else "")
    )
    return path


class Daemon:
    def __init__(self, config: Path, log: Path, port: int) -> None:
        self.config, self.log, self.port = config, log, port
        self.proc: subprocess.Popen[Any] | None = None
        self.started = 0.0

    def start(self) -> Daemon:
        self.started = time.time()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [TWISTD, "-n", "--pidfile=", "moxtw", "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, env=env(), cwd=str(ROOT),
            )
        wait_port(self.proc, self.port, "127.0.0.1", "moxtw webapi", self.log)
        return self

    def stop(self) -> int | None:
        return stop(self.proc)


class CPUMeter:
    """CPU share (of one core) of the processes of a run, from now on (the daemon's main
    process: HTTP worker processes are not counted)."""

    def __init__(self, daemon: Daemon, peers: subprocess.Popen[Any], sink: subprocess.Popen[Any] | None,
                 smtp_sink: bool) -> None:
        assert daemon.proc is not None
        self.pids = {"daemon": daemon.proc.pid, "dns helper" if smtp_sink else "dns+sink helper": peers.pid}
        if sink is not None:
            self.pids["smtp-sink"] = sink.pid
        self.before = {k: cpu_seconds(pid) for k, pid in self.pids.items()}
        self.start = time.time()

    def share(self) -> dict[str, float]:
        wall = time.time() - self.start
        return {k: round((cpu_seconds(pid) - self.before[k]) / wall, 2) for k, pid in self.pids.items()}


class Profiler:
    """``py-spy record --format raw`` on a PID, stopped with SIGINT (it then writes)."""

    def __init__(self, pid: int, out: Path, subprocesses: bool, gil: bool) -> None:
        argv = [PY_SPY, "record", "--pid", str(pid), "--format", "raw", "-o", str(out), "--rate", "200",
                "--nonblocking"]
        if gil:  # only the thread holding the GIL: what a CPU-bound Python process spends
            argv.append("--gil")
        if subprocesses:
            argv.append("--subprocesses")
        self.out = out
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def finish(self) -> None:
        stop(self.proc, signal.SIGINT, timeout=60)


def top_functions(raw: Path, n: int = 15) -> str:
    """Where the samples of py-spy's collapsed stacks go: reactor thread vs thread pools,
    own samples per function, inclusive samples per moxtw function, and samples by the
    innermost moxtw frame of the stack (what moxtw code the time is spent for)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    nearest: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    frame_re = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")

    def parse(frame: str) -> tuple[str, str]:
        m = frame_re.match(frame.strip())
        if not m:
            return frame.strip(), ""
        fn, path = m.groups()
        for marker in ("site-packages/", "lib/python3.", "/main/"):
            if marker in path:
                path = path.split(marker, 1)[1]
                break
        return fn, path

    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [parse(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        names = [f"{fn} ({path})" for fn, path in frames]
        threads["thread pools" if frames[0][0] == "Thread._bootstrap" else "reactor thread"] += count
        own[names[-1]] += count
        ours = [name for name, (_, path) in zip(names, frames, strict=True) if path.startswith("moxtw/")]
        for name in set(ours):
            incl[name] += count
        nearest[ours[-1] if ours else f"(no moxtw frame) {names[-1]}"] += count
    if not total:
        return "profile: no samples"

    def block(title: str, counter: collections.Counter[str]) -> list[str]:
        return [f"  {title}:"] + [f"    {c / total:6.1%}  {f}" for f, c in counter.most_common(n)]

    lines = [f"profile: {total} samples; " + ", ".join(f"{k} {c / total:.0%}" for k, c in threads.most_common())]
    lines += block("own", own)
    lines += block("inclusive, moxtw functions", incl)
    lines += block("by innermost moxtw frame", nearest)
    return "\n".join(lines)


# --- webapi client --------------------------------------------------------------------


async def send_all(args: argparse.Namespace, http_port: int, domains: list[str]) -> tuple[float, list[str]]:
    from webapi_send import build_request, read_response

    auth = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()
    host = f"127.0.0.1:{http_port}"
    counter = [0]
    errors: list[str] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", http_port)
        while counter[0] < args.messages:
            i = counter[0]
            counter[0] += 1
            req = {
                "To": [{"Address": f"rcpt{i}@{domains[i % len(domains)]}"}],
                "Subject": f"queue bench {i}",
                "Text": f"Queue benchmark message {i}.\n" + "x" * args.size,
            }
            body = ("request=" + urllib.parse.quote(json.dumps(req))).encode()
            writer.write(build_request(host, "/webapi/v0/Send", auth, body))
            status, response = await read_response(reader)
            if status != 200:
                errors.append(f"{status} {response[:200]!r}")
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    return time.perf_counter() - start, errors


# --- database -------------------------------------------------------------------------


def query(db_path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]
    finally:
        db.close()


def wait_retired(db_path: Path, n: int, daemon: Daemon, stall: float = 60.0) -> int:
    """Poll until ``n`` messages are retired (or nothing moved for ``stall`` seconds)."""
    last, moved = -1, time.monotonic()
    while True:
        (done,), = query(db_path, "SELECT count(*) FROM queue_retired")
        if done >= n:
            return int(done)
        if done != last:
            last, moved = done, time.monotonic()
        elif time.monotonic() - moved > stall:
            print(f"  stalled: {done}/{n} retired, nothing moved for {stall:.0f}s", file=sys.stderr)
            return int(done)
        if daemon.proc is not None and daemon.proc.poll() is not None:
            print(f"  daemon exited ({daemon.proc.returncode}); see {daemon.log}", file=sys.stderr)
            return int(done)
        time.sleep(0.2)


# --- one run --------------------------------------------------------------------------


def run_once(args: argparse.Namespace, number: int, password_hash: str) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="moxtw-queue-bench-"))
    db_path = directory / "data" / "moxtw.sqlite3"
    domains = [f"d{k}.example.test" for k in range(args.domains)]
    mx_port = free_port(MX_IP)
    sink_argv = None
    if args.sink in ("auto", "smtp-sink"):
        from tests.postfix import smtp_sink_argv

        sink_argv = smtp_sink_argv(MX_IP, mx_port, backlog=1024)
        if sink_argv is None and args.sink == "smtp-sink":
            raise SystemExit("smtp-sink is not installed (Debian package postfix)")
    sink_name = "smtp-sink" if sink_argv else "twisted sink"
    peers_argv = [sys.executable, __file__, "--serve-peers", ",".join(domains), "--sink-port",
                  "0" if sink_argv else str(mx_port)]
    procs: list[subprocess.Popen[Any]] = []
    daemon: Daemon | None = None
    profiler: Profiler | None = None
    figures: dict[str, Any] = {"run": number, "mode": "preload" if args.preload else "live", "sink": sink_name,
                               "domains": args.domains, "max_per_domain": args.max_per_domain}
    try:
        peers = subprocess.Popen(peers_argv, stdout=subprocess.PIPE, text=True, env=env(), cwd=str(ROOT))
        procs.append(peers)
        assert peers.stdout is not None
        dns_port = 0
        for line in peers.stdout:
            if line.startswith("dns "):
                dns_port = int(line.split()[1])
            if line.strip() == "ready":
                break
        if not dns_port:
            raise SystemExit("the DNS helper did not start")
        sink: subprocess.Popen[Any] | None = None
        sink_out = directory / "sink.out"
        if sink_argv:
            with sink_out.open("wb") as out:
                sink = subprocess.Popen([*sink_argv[:1], "-c", *sink_argv[1:]], stdout=out, stderr=subprocess.STDOUT)
            procs.append(sink)
            wait_port(sink, mx_port, MX_IP, "smtp-sink")
        else:
            deadline = time.monotonic() + 10
            while not port_open(mx_port, MX_IP) and time.monotonic() < deadline:
                time.sleep(0.02)

        http_port = free_port()
        log = directory / "moxtw.log"

        def config(hold: bool) -> Path:
            return write_config(directory, args, dns_port=dns_port, mx_port=mx_port, http_port=http_port,
                                hold=hold, password_hash=password_hash)

        daemon = Daemon(config(hold=args.preload), log, http_port).start()
        if not args.preload and args.profile:
            assert daemon.proc is not None
            profiler = Profiler(daemon.proc.pid, Path(args.profile), args.workers > 0, not args.profile_all_threads)
        cpu = CPUMeter(daemon, peers, sink, sink_argv is not None)
        send_seconds, errors = asyncio.run(send_all(args, http_port, domains))
        figures["sends_per_s"] = round(args.messages / send_seconds, 1)
        figures["send_errors"] = len(errors)
        for e in errors[:3]:
            print("  send error:", e, file=sys.stderr)
        expected = args.messages - len(errors)
        release = 0.0
        if args.preload:
            (held,), = query(db_path, "SELECT count(*) FROM queue_msg WHERE hold = 1")
            figures["held"] = held
            daemon.stop()
            db = sqlite3.connect(db_path)
            with db:
                db.execute("UPDATE queue_msg SET hold = 0")
            db.close()
            daemon = Daemon(config(hold=False), log, http_port)
            daemon.start()
            release = daemon.started
            if args.profile:
                assert daemon.proc is not None
                profiler = Profiler(daemon.proc.pid, Path(args.profile), args.workers > 0, not args.profile_all_threads)
        if args.preload:
            cpu = CPUMeter(daemon, peers, sink, sink_argv is not None)
        done = wait_retired(db_path, expected, daemon)
        figures["cpu"] = cpu.share()
        if profiler is not None:
            profiler.finish()
        rows = query(
            db_path,
            "SELECT r.queued, a.start, a.start + a.duration FROM queue_retired r"
            " JOIN queue_attempt a ON a.msg_id = r.id AND a.success = 1 WHERE r.event = 'delivered'",
        )
        outcomes = dict(query(db_path, "SELECT event, count(*) FROM queue_retired GROUP BY event"))
        attempts = query(db_path, "SELECT duration FROM queue_attempt WHERE duration IS NOT NULL")
        figures.update(retired=done, outcomes=outcomes, delivered=len(rows))
        if rows:
            ends = [r[2] for r in rows]
            if args.preload:
                first = min(r[1] for r in rows)
                latencies = [r[2] - first for r in rows]
                figures["startup_to_first_attempt_s"] = round(first - release, 3)
            else:
                first = min(r[0] for r in rows)
                latencies = [r[2] - r[0] for r in rows]
            span = max(ends) - first
            figures["delivery_span_s"] = round(span, 3)
            figures["deliveries_per_s"] = round(len(rows) / span, 1) if span > 0 else None
            figures["latency_p50"] = percentile(latencies, 50)
            figures["latency_p99"] = percentile(latencies, 99)
            figures["latency_max"] = max(latencies)
            durations = [d for (d,) in attempts]
            figures["attempt_p50"] = percentile(durations, 50)
            figures["attempt_p99"] = percentile(durations, 99)
    finally:
        if daemon is not None:
            code = daemon.stop()
            if code not in (None, 0, -signal.SIGTERM, 1):
                print(f"  daemon exit status {code}; see {daemon.log}", file=sys.stderr)
        if profiler is not None:
            profiler.finish()
        for proc in reversed(procs):
            stop(proc)
    if sink_argv:
        counts = re.findall(r"mesg=(\d+)", (directory / "sink.out").read_text(errors="replace"))
        figures["sink_messages"] = int(counts[-1]) if counts else 0
    else:
        assert peers.stdout is not None
        rest = peers.stdout.read()
        m = re.search(r"sink-messages (\d+)", rest)
        figures["sink_messages"] = int(m.group(1)) if m else None
    if args.keep:
        figures["directory"] = str(directory)
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return figures


def describe(f: dict[str, Any]) -> str:
    lat = "latency (release→delivered)" if f["mode"] == "preload" else "latency (queued→delivered)"
    limits = f"{f['domains']} domain{'s' if f['domains'] != 1 else ''}, max {f['max_per_domain']} per domain"
    parts = [f"run {f['run']} [{f['mode']}, {f['sink']}, {limits}]: {f.get('delivered', 0)} delivered"]
    if f.get("deliveries_per_s") is not None:
        parts.append(f"{f['deliveries_per_s']} deliveries/s over {f['delivery_span_s']} s")
        parts.append(f"{lat} p50 {ms(f['latency_p50'])}, p99 {ms(f['latency_p99'])}, max {ms(f['latency_max'])}")
        parts.append(f"attempt p50 {ms(f['attempt_p50'])}, p99 {ms(f['attempt_p99'])}")
    parts.append(f"sends {f['sends_per_s']}/s")
    if "startup_to_first_attempt_s" in f:
        parts.append(f"{f.get('held')} held then released; daemon start→first attempt {f['startup_to_first_attempt_s']} s")
    if "cpu" in f:
        cpu = ", ".join(f"{k} {v:.0%}" for k, v in f["cpu"].items())
        when = "while delivering" if f["mode"] == "preload" else "from the first Send to the last delivery"
        parts.append(f"CPU {when} (of one core): {cpu}")
    parts.append(f"outcomes {f['outcomes']}, sink counted {f['sink_messages']}")
    if f.get("send_errors"):
        parts.append(f"send errors {f['send_errors']}")
    return "; ".join(parts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--messages", type=int, default=2000, help="messages to queue (one recipient each)")
    p.add_argument("-c", "--concurrency", type=int, default=16, help="concurrent webapi clients")
    p.add_argument("--preload", action="store_true", help="queue everything held, then release and measure")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--domains", type=int, default=1, help="recipient domains (max_per_domain applies to each)")
    p.add_argument("--max-concurrent", type=int, default=100, help="[queue] max_concurrent")
    p.add_argument("--max-per-domain", type=int, default=10, help="[queue] max_per_domain")
    p.add_argument("--workers", type=int, default=0, help="[webapi] workers")
    p.add_argument("--size", type=int, default=200, help="extra body bytes per message")
    p.add_argument("--sink", choices=("auto", "smtp-sink", "twisted"), default="auto")
    p.add_argument("--profile", metavar="FILE", help="py-spy raw profile of the delivery phase")
    p.add_argument("--profile-all-threads", action="store_true",
                   help="profile every non-idle thread, not only the one holding the GIL")
    p.add_argument("--json", action="store_true", help="also print each run's figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep each run's directory (config, log, database)")
    p.add_argument("--serve-peers", metavar="DOMAINS", help=argparse.SUPPRESS)
    p.add_argument("--sink-port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.serve_peers:
        serve_peers(args.serve_peers.split(","), MX_IP, args.sink_port)
        return 0

    from moxtw.passwords import hash_password

    password_hash = hash_password(PASSWORD)
    results = []
    for run in range(1, args.runs + 1):
        f = run_once(args, run, password_hash)
        results.append(f)
        print(describe(f), flush=True)
        if args.json:
            print(json.dumps(f))
        if args.profile and Path(args.profile).exists():
            print(top_functions(Path(args.profile)))
    rates = [f["deliveries_per_s"] for f in results if f.get("deliveries_per_s")]
    if len(rates) > 1:
        print(f"deliveries/s over {len(rates)} runs: median {statistics.median(rates)}, range {min(rates)}-{max(rates)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
