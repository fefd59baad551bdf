"""SMTP command fuzzer over real TCP connections to a real ``twistd moxtw localserve``.

Each session connects from its own loopback address (127.x.y.z, so per-IP connection
and AUTH-failure limits do not make every later session look the same) to the incoming
(``smtp``), submission (STARTTLS, plaintext AUTH allowed in localserve) or submissions
(implicit TLS) listener, and sends a random or mutated command sequence: valid sessions
with mutated commands, parameters and addresses, EHLO/HELO/MAIL/RCPT/DATA/RSET/NOOP/
AUTH/STARTTLS/BDAT/VRFY/EXPN/HELP, random bytes, NUL and 8-bit bytes, bare LF and CR,
overlong lines, messages with odd headers (X-Mox-Extra, DSN corpus bodies), pipelined
bursts, and connections closed mid-command.  Sessions end with ``.``/``QUIT`` and read to
the end, except the ones that hang up early.

Every reply line must match RFC 5321's reply syntax, be CRLF-terminated, and belong to a
well-formed (multiline) reply; no reply may carry Python exception text; every connection
must get a greeting (the daemon keeps accepting); after the run a normal submission and
an incoming delivery succeed, and the daemon's log has no unhandled error or traceback.

300 sessions by default (seed fixed); ``MOXTW_FUZZ_LONG=1`` runs 20,000 with a random
seed (``MOXTW_FUZZ_SEED`` sets it).  The number of sessions and command lines is printed.
"""

from __future__ import annotations

import base64
import os
import random
import re
import smtplib
import socket
import ssl
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from moxtw.localserve import ensure_config
from tests.fuzz import COUNTS
from tests.helpers import Daemon, free_port

LONG = bool(os.environ.get("MOXTW_FUZZ_LONG"))
SESSIONS = int(os.environ.get("MOXTW_FUZZ_SESSIONS", "20000" if LONG else "300"))
CONCURRENCY = 8
SEED = int(os.environ.get("MOXTW_FUZZ_SEED", str(random.SystemRandom().randrange(2**32) if LONG else 5321)))
CORPUS = Path(__file__).parent.parent / "dsn_corpus"
LISTENERS = ("smtp", "submission", "submissions", "http", "metrics")
USER, PASSWORD = "mox@localhost", "moxmoxmox"

REPLY_LINE = re.compile(rb"^[2-5][0-9]{2}([ -].*)?$", re.DOTALL)
#: Text that means an exception leaked into a reply.
STARTTLS_OK = re.compile(rb"(^|\r\n)220 2\.0\.0 ")
LEAKS = re.compile(rb"Traceback|File \"|Exception|Error\(|builtins\.|twisted\.|moxtw\.|line \d+, in ")


# --- what the client sends ----------------------------------------------------------------


def b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


class Generator:
    """Random commands and messages; all randomness from one seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.r = rng
        self.corpus = [p.read_bytes().replace(b"\n", b"\r\n") for p in sorted(CORPUS.glob("*.eml"))]

    def choice(self, xs: Any) -> Any:
        return self.r.choice(xs)

    def localpart(self) -> str:
        return self.choice([
            "mox", "mox+fromid", "you", "a.b", '"quoted local"', "user+tag", "Mox", "rcptto451", "rcpttotemperror",
            "rcpttopermerror", "rcptto550", "mailfromtemperror", "mailfrom421", "x599", "x600", "x²²²", "ü",
            "日本", "a" * 70, "a" * 200, ".a", "a..b", "", '"a\\"b"', "mox+" + "z" * 30, "x" + "\u0663\u0665\u0661",
        ])

    def domain(self) -> str:
        return self.choice(["localhost", "LOCALHOST", "example.org", "xn--bcher-kva.example", "bücher.example",
                            "[127.0.0.1]", "1.2.3.4", "a..b", "-x.example", "x" * 70 + ".example", "", "localhost."])

    def address(self) -> str:
        kind = self.r.random()
        if kind < 0.7:
            return f"{self.localpart()}@{self.domain()}"
        return self.choice(["", "@a,@b:mox@localhost", "mox@localhost>", "<mox@localhost", "mox", "@localhost",
                            "mox@localhost@localhost", "mox@local host", self.junk(20).decode("latin-1")])

    def junk(self, n: int) -> bytes:
        pool = self.choice([
            bytes(range(256)),
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 <>:@.=-+\"\\",
            b"\x00\xff\xfe\x80\xc3\xa9\r\n\t <>=",
        ])
        return bytes(self.r.choice(pool) for _ in range(self.r.randint(0, n)))

    def mail_params(self) -> str:
        params = self.r.sample([
            "SIZE=1000", "SIZE=99999999999", "SIZE=²", "SIZE=" + "9" * 5000, "SIZE=", "SIZE", "BODY=8BITMIME",
            "BODY=7BIT", "BODY=BINARYMIME", "SMTPUTF8", "SMTPUTF8=yes", "REQUIRETLS", "HOLDFOR=60", "HOLDFOR=²",
            "HOLDFOR=" + "9" * 5000, "HOLDFOR=99999999999", "HOLDUNTIL=2030-01-01T00:00:00Z", "HOLDUNTIL=2030-01-01",
            "HOLDUNTIL=9999-12-31T23:59:59+00:00", "HOLDUNTIL=0001-01-01T00:00:00+14:00", "HOLDUNTIL=x", "AUTH=<>",
            "RET=HDRS", "ENVID=x", "=", "X=Y",
        ], self.r.randint(0, 3))
        return (" " + " ".join(params)) if params else ""

    def message(self) -> bytes:
        kind = self.r.random()
        if kind < 0.25:
            body = self.choice(self.corpus).replace(b"FROMID", self.choice([b"abc", b"", b"\xff"]))
        elif kind < 0.7:
            headers = [b"From: " + self.choice([b"mox@localhost", b"<mox@localhost>", b"Mox <mox+fromid@localhost>",
                                                 b"a@b", b"", b"mox@localhost, you@localhost", b"=?utf-8?q?x?= <mox@localhost>"])]
            for _ in range(self.r.randint(0, 6)):
                headers.append(self.choice([
                    b"To: you@localhost", b"Subject: " + self.junk(30).replace(b"\r", b"").replace(b"\n", b""),
                    b"Subject: =?utf-8?q?caf=C3=A9?=", b"Subject: =?x-unknown?b?!!?=", b"Message-ID: <x@y>",
                    b"Message-ID:", b"Date: not a date", b"X-Mox-Extra-Order: 42", b"x-mox-extra-order: 43",
                    b"X-Mox-Extra-: empty", "X-Mox-Extra-☺: ☹".encode(), b"X-Mox-Extra-A:\r\n folded value",
                    b"TLS-Required: No", b"Content-Type: multipart/report; boundary=x", b"Content-Type: text/plain; charset=hex",
                    b" continuation first", b"no colon line", b"From: second@localhost", b":",
                ]))
            body = b"\r\n".join(headers) + b"\r\n\r\n" + self.junk(200)
        else:
            body = self.junk(400)
        # Dot lines and bare line ends inside the data; the terminator comes from the caller.
        if self.r.random() < 0.2:
            body += b"\r\n..leading dot\r\n.\r"
        return body

    def command(self) -> bytes:
        """One command line (without line end), valid or mutated."""
        r = self.r
        cmd = self.choice([
            lambda: "EHLO " + self.choice(["client.example", "", "[127.0.0.1]", "x" * 300, "ü.example"]),
            lambda: "HELO " + self.choice(["client.example", ""]),
            lambda: f"MAIL FROM:<{self.address()}>{self.mail_params()}",
            lambda: f"MAIL FROM:{self.address()}",
            lambda: "MAIL FROM:<>",
            lambda: f"RCPT TO:<{self.address()}>" + self.choice(["", " NOTIFY=NEVER", " X=Y"]),
            lambda: "RCPT TO:" + self.address(),
            lambda: "DATA" + self.choice(["", " x"]),
            lambda: "RSET", lambda: "NOOP", lambda: "NOOP x", lambda: "HELP", lambda: "EXPN x", lambda: "VRFY mox",
            lambda: "QUIT x" if r.random() < 0.1 else "NOOP",
            lambda: "AUTH " + self.choice(["PLAIN", "LOGIN", "CRAM-MD5", "", "PLAIN ="]),
            lambda: "AUTH PLAIN " + self.choice([b64(f"\0{USER}\0{PASSWORD}"), b64(f"\0{USER}\0wrong"), b64("x"),
                                                 "!!!", b64(f"other\0{USER}\0{PASSWORD}"), b64(b"\0\xff\0\xfe")]),
            lambda: self.choice([b64(USER), b64(PASSWORD), "*", "=", "%%%"]),
            lambda: "STARTTLS" + self.choice(["", " x"]),
            lambda: "BDAT " + self.choice(["10 LAST", "0", "x", ""]),
            lambda: "ETRN x", lambda: "TURN", lambda: "", lambda: " ", lambda: ".",
        ])()
        line = cmd.encode("utf-8", "surrogateescape")
        m = r.random()
        if m < 0.08:
            line = line.lower()
        elif m < 0.16:
            pos = r.randint(0, len(line))
            line = line[:pos] + self.junk(6) + line[pos:]
        elif m < 0.2:
            line = line[: r.randint(0, len(line))]
        elif m < 0.23:
            line = line + b" " * r.randint(1, 5)
        elif m < 0.25:
            line = self.junk(60)
        return line

    def session(self) -> Session:
        r = self.r
        port = self.choice(["smtp", "smtp", "submission", "submission", "submissions"])
        s = Session(port=port)
        if port == "submission" and r.random() < 0.25:
            s.starttls = self.choice(["tls", "tls", "garbage"])
        lines: list[bytes] = []
        if r.random() < 0.8:  # mostly start like a client would
            lines.append(b"EHLO client.example")
            if port != "smtp" and r.random() < 0.7:
                lines.append(b"AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}").encode())
        if r.random() < 0.6:  # a plausible transaction, mutated below
            lines.append(f"MAIL FROM:<{self.choice(['mox@localhost', 'mox+fromid@localhost', self.address()])}>{self.mail_params() if r.random() < 0.3 else ''}".encode())
            for _ in range(r.randint(0, 3)):
                lines.append(f"RCPT TO:<{self.choice(['you@localhost', 'mox@localhost', self.address()])}>".encode())
            lines.append(b"DATA")
            lines += self.message().split(b"\r\n")
            lines.append(b".")
        for _ in range(r.randint(0, 12)):
            lines.append(self.command())
            if r.random() < 0.05:
                lines += self.message().split(b"\r\n") + [b"."]
        # Mutations of the whole sequence.
        if lines and r.random() < 0.2:
            r.shuffle(lines)
        if lines and r.random() < 0.1:
            i = r.randrange(len(lines))
            lines.insert(i, lines[i])
        eol = self.choice([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n"])
        data = b"".join(line + (eol if r.random() < 0.9 else self.choice([b"\n", b"\r\n"])) for line in lines)
        if r.random() < 0.03:
            data += b"X" * self.choice([20_000, 70_000])  # overlong line
        s.lines = len(lines)
        s.chunks = split(r, data)
        s.hang_up = r.random() < 0.12  # close mid-command without QUIT
        return s


def split(r: random.Random, data: bytes) -> list[bytes]:
    """Pipelining bursts: the data cut at random places (sometimes mid-line)."""
    chunks = []
    while data:
        n = r.choice([len(data), r.randint(1, 64), r.randint(1, 2048)])
        chunks.append(data[:n])
        data = data[n:]
    return chunks


@attrs.define
class Session:
    port: str
    starttls: str = ""
    chunks: list[bytes] = attrs.Factory(list)
    lines: int = 0
    hang_up: bool = False


# --- running a session --------------------------------------------------------------------


class ReplyError(AssertionError):
    pass


def check_replies(data: bytes, complete: bool) -> int:
    """Check the server's bytes: well-formed replies only.  Returns the number of replies."""
    lines = data.split(b"\r\n")
    tail = lines.pop()
    if tail and complete:
        raise ReplyError(f"reply not CRLF-terminated: {tail[:200]!r}")
    replies = 0
    pending: bytes | None = None  # code of an open multiline reply
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise ReplyError(f"bare CR/LF in reply line {line[:200]!r}")
        if not REPLY_LINE.match(line):
            raise ReplyError(f"not RFC 5321 reply syntax: {line[:200]!r}")
        if LEAKS.search(line):
            raise ReplyError(f"exception text in reply: {line[:300]!r}")
        code = line[:3]
        if pending is not None and code != pending:
            raise ReplyError(f"multiline reply {pending!r} continued with {line[:200]!r}")
        if line[3:4] == b"-":
            pending = code
        else:
            pending = None
            replies += 1
    if pending is not None and complete and not tail:
        raise ReplyError("multiline reply not finished")
    return replies


def read_reply(sock: Any, buf: bytearray) -> bytes:
    """Read until one complete reply is in ``buf``; returns (and removes) it."""
    while True:
        end = 0
        data = bytes(buf)
        for line_end in re.finditer(rb"\r\n", data):
            line = data[end : line_end.start()]
            end = line_end.end()
            if line[3:4] != b"-":
                del buf[:end]
                return data[:end]
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed while waiting for a reply: {bytes(buf)!r}")
        buf += chunk


def tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def run_session(ports: dict[str, int], s: Session, ip: str) -> tuple[int, bytes]:
    """Run one session; (replies seen, all bytes received).  Raises on a bad reply."""
    sock: Any = socket.create_connection(("127.0.0.1", ports[s.port]), timeout=60, source_address=(ip, 0))
    received = bytearray()
    try:
        if s.port == "submissions":
            sock = tls_context().wrap_socket(sock)
        buf = bytearray()
        greeting = read_reply(sock, buf)
        received += greeting
        if not greeting.startswith(b"220 "):
            raise ReplyError(f"no 220 greeting: {greeting!r}")
        if s.starttls:
            for line in (b"EHLO client.example\r\n", b"STARTTLS\r\n"):
                sock.sendall(line)
                reply = read_reply(sock, buf)
                received += reply
            if reply.startswith(b"220 "):
                if s.starttls == "garbage":
                    # Plaintext where the TLS handshake should be: the server's TLS layer
                    # fails (its alert is binary, not a reply) and closes.
                    try:
                        sock.sendall(b"EHLO not-tls\r\n\x16\x03\x01garbage\r\n" + b"".join(s.chunks))
                        while sock.recv(65536):
                            pass
                    except OSError:
                        pass
                    return check_replies(bytes(received), True), bytes(received)
                sock = tls_context().wrap_socket(sock)
        complete = True
        try:
            for chunk in s.chunks:
                sock.sendall(chunk)
            if s.hang_up:
                received += buf
                sock.settimeout(0.05)
                try:
                    received += sock.recv(65536)
                except (TimeoutError, OSError):
                    pass
                return check_replies(bytes(received), False), bytes(received)
            sock.sendall(b"\r\n.\r\nQUIT\r\n")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server closed (line too long, TLS failure): read what it said
        received += buf
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if STARTTLS_OK.search(received):
                # A pipelined STARTTLS was accepted: the server drops the rest of that
                # read (RFC 3207 §5) and waits for a TLS handshake that never comes.
                sock.settimeout(1.0)
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError):
                complete = False
                break
            except TimeoutError:
                if STARTTLS_OK.search(received):
                    complete = False
                    break
                raise
            if not chunk:
                break
            received += chunk
        else:
            raise ReplyError("server did not close the connection after QUIT within 60s")
        return check_replies(bytes(received), complete), bytes(received)
    finally:
        try:
            sock.close()
        except OSError:
            pass


# --- the test ---------------------------------------------------------------------------------


class SMTPFuzzTests(TestCase):
    timeout = 3600 if LONG else 300

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(self.directory)
        text = path.read_text()
        self.ports = {n: free_port() for n in LISTENERS}
        for name, port in self.ports.items():
            text, count = re.subn(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
            assert count == 1, name
        # No webapi worker process (CPU for the fuzzer), and limits that let the long run
        # submit as much as it likes.
        text = re.sub(r"^workers = \d+", "workers = 0", text, flags=re.M)
        text = re.sub(r"^max_outgoing_messages_per_day = \d+", "max_outgoing_messages_per_day = 10000000", text, flags=re.M)
        text = re.sub(r"^max_first_time_recipients_per_day = \d+", "max_first_time_recipients_per_day = 10000000", text, flags=re.M)
        path.write_text(text)

    async def test_fuzz(self) -> None:
        daemon = Daemon(self, "localserve", "--dir", str(self.directory)).start()
        for name in ("smtp", "submission", "submissions"):
            await daemon.wait_for_port(self.ports[name])
        started = time.monotonic()
        stats = await deferToThread(self.fuzz)
        elapsed = time.monotonic() - started
        COUNTS["test_smtp_fuzz.sessions"] += stats["sessions"]
        summary = (
            f"smtp fuzz: {stats['sessions']} sessions ({stats['by_port']}), {stats['lines']} command lines, "
            f"{stats['replies']} replies, {stats['bytes']} bytes received, seed {SEED}, {elapsed:.1f}s"
        )
        print("\n" + summary, file=sys.stderr)
        for failure in stats["failures"]:
            print("FAILED SESSION: " + failure, file=sys.stderr)
        self.assertEqual(stats["failures"], [], summary)
        self.assertEqual(stats["sessions"], SESSIONS)

        # Still alive and serving: a normal submission and an incoming delivery work.
        await deferToThread(self.normal_submission)
        code = await daemon.stop()
        self.assertIn(code, (0, -15), daemon.output[-3000:])
        for bad in ("Unhandled Error", "Traceback", "Unhandled error"):
            self.assertNotIn(bad, daemon.output, daemon.output[-20000:])

    def fuzz(self) -> dict[str, Any]:
        rng = random.Random(SEED)
        gen = Generator(rng)
        sessions = [(gen.session(), f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}") for _ in range(SESSIONS)]
        stats: dict[str, Any] = {"sessions": 0, "lines": 0, "replies": 0, "bytes": 0, "failures": [], "by_port": {}}

        lock = threading.Lock()

        def one(item: tuple[Session, str]) -> None:
            s, ip = item
            try:
                replies, received = run_session(self.ports, s, ip)
            except Exception as e:  # every failure is reported, with what was sent
                with lock:
                    stats["failures"].append(
                        f"{s.port} (starttls {s.starttls!r}) from {ip}: {type(e).__name__}: {e}; "
                        f"sent {b''.join(s.chunks)[:600]!r}"
                    )
                return
            with lock:
                stats["sessions"] += 1
                stats["lines"] += s.lines
                stats["replies"] += replies
                stats["bytes"] += len(received)
                stats["by_port"][s.port] = stats["by_port"].get(s.port, 0) + 1

        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(one, sessions))
        return stats

    def normal_submission(self) -> None:
        ctx = tls_context()
        with smtplib.SMTP("127.0.0.1", self.ports["submission"], timeout=30, source_address=("127.0.0.200", 0)) as s:
            s.starttls(context=ctx)
            s.login(USER, PASSWORD)
            refused = s.sendmail(USER, ["you@localhost"], b"From: mox@localhost\r\nTo: you@localhost\r\nSubject: after fuzz\r\n\r\nstill working\r\n")
            self.assertEqual(refused, {})
        with smtplib.SMTP("127.0.0.1", self.ports["smtp"], timeout=30, source_address=("127.0.0.201", 0)) as s:
            refused = s.sendmail("someone@example.org", ["mox@localhost"], b"From: someone@example.org\r\nSubject: incoming after fuzz\r\n\r\nhi\r\n")
            self.assertEqual(refused, {})
