"""A Send answered 200 survives an immediate kill of the daemon.

A real ``twistd -n moxtw --config FILE`` process takes Sends over real HTTP, 16 in flight;
after the 100th 200 answer it gets SIGKILL while other requests are still in flight.  Then
the SQLite database and the message files are read directly: every QueueMsgID that was
answered 200 must have its queue row (recipient, Message-ID, subject as sent) and its
message file, parsing as the message that was sent.  Finally the daemon restarts on the same
data directory and answers the webapi (the store reopened cleanly after the crash).

With ``[webapi] workers`` (localserve has one), the daemon is a process tree: the main
process and HTTP worker processes serving the same port and store.  The crash kills the
whole tree at once, as an OOM kill or a power cut would.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import re
import secrets
import signal
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from moxtw.localserve import ensure_config
from tests.helpers import Daemon, free_port, http_client, port_open

LOGIN = ("mox@localhost", "moxmoxmox")
TOTAL = 200
IN_FLIGHT = 16
KILL_AFTER = 100
LISTENERS = ("smtp", "submission", "submissions", "http", "metrics")


def write_config(directory: Path) -> tuple[Path, int]:
    """A localserve config with free loopback ports and high daily limits; (path, http port)."""
    path, _ = ensure_config(directory)
    ports = {name: free_port() for name in LISTENERS}
    lines = []
    for line in path.read_text().splitlines():
        name = line.split("=", 1)[0].strip()
        if name in ports and line.lstrip().startswith(f"{name} = ["):
            line = f'{name} = ["tcp:{ports[name]}:interface=127.0.0.1"]'
        lines.append(line)
    text = "\n".join(lines) + "\n"
    for key, value in (("max_outgoing_messages_per_day", 1000), ("max_first_time_recipients_per_day", 200)):
        old = f"{key} = {value}"
        assert old in text, f"{old!r} not in the localserve config"
        text = text.replace(old, f"{key} = 1000000")
    path.write_text(text)
    for name, port in ports.items():
        assert re.search(rf'^{name} = \["tcp:{port}:interface=127\.0\.0\.1"\]$', text, re.M), name
    return path, ports["http"]


def descendants(pid: int) -> list[int]:
    """The PIDs of every live descendant of ``pid`` (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(0), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(daemon: Daemon) -> list[int]:
    """SIGKILL the daemon's main process and every process it started; their PIDs."""
    pids = descendants(daemon.process.pid)
    daemon.process.signalProcess("KILL")
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class DurabilityTests(TestCase):
    timeout = 120

    async def test_answered_sends_survive_sigkill(self) -> None:
        directory = Path(self.mktemp()).absolute()
        config, port = write_config(directory)
        data_dir = directory / "data"
        url = f"http://127.0.0.1:{port}/webapi/v0/"

        daemon = self.start_daemon(config)
        await daemon.wait_for_port(port)
        # Let the HTTP workers come up too, so that both kinds of process answer Sends
        # (best effort: the property must hold either way; the summary says which).
        workers = tomllib.loads(config.read_text())["webapi"].get("workers", 0)
        for _ in range(200):
            if not workers or daemon.output.count("serving the webapi on") >= workers:
                break
            await deferLater(reactor, 0.05, lambda: None)
        workers_ready = daemon.output.count("serving the webapi on")
        client = http_client(self)

        run = secrets.token_hex(4)
        sent: dict[int, dict[str, str]] = {}  # QueueMsgID -> what was sent and answered
        state: dict[str, Any] = {"next": 0, "in_flight": 0, "killed": False, "in_flight_at_kill": 0, "errors": []}

        async def send(i: int) -> None:
            address = f"rcpt{i}@localhost"
            subject = f"durability {run} #{i}"
            text = f"message {i} of run {run}\nsecond line {secrets.token_hex(8)}"
            request = {"To": [{"Address": address}], "Subject": subject, "Text": text}
            state["in_flight"] += 1
            try:
                response = await client.post(url + "Send", data={"request": json.dumps(request)}, auth=LOGIN)
                body = await response.content()
            except Exception as e:  # the daemon was killed under this request
                state["errors"].append(f"#{i}: {type(e).__name__}")
                return
            finally:
                state["in_flight"] -= 1
            if response.code != 200:
                state["errors"].append(f"#{i}: HTTP {response.code} {body[:200]!r}")
                return
            result = json.loads(body)
            (submission,) = result["Submissions"]
            self.assertEqual(submission["Address"], address)
            sent[submission["QueueMsgID"]] = {
                "address": address,
                "subject": subject,
                "text": text,
                "message_id": result["MessageID"],
            }
            if len(sent) == KILL_AFTER and not state["killed"]:
                state["killed"] = True
                state["in_flight_at_kill"] = state["in_flight"]
                state["killed_pids"] = kill_tree(daemon)

        async def worker() -> None:
            while not state["killed"] and state["next"] < TOTAL:
                i = state["next"]
                state["next"] += 1
                await send(i)

        await defer.gatherResults([defer.Deferred.fromCoroutine(worker()) for _ in range(IN_FLIGHT)])
        code = await daemon.proto.ended
        accepted = len(sent)
        summary = (
            f"fired {state['next']}, accepted {accepted}, in flight at SIGKILL {state['in_flight_at_kill']}, "
            f"failed {len(state['errors'])}, HTTP workers {workers_ready}/{workers} ready, "
            f"{1 + len(state.get('killed_pids', []))} process(es) killed"
        )
        self.assertTrue(state["killed"], f"never reached {KILL_AFTER} answers: {summary}; {state['errors'][:5]}\n{daemon.output}")
        self.assertEqual(code, -signal.SIGKILL, summary)
        self.assertGreater(state["in_flight_at_kill"], 0, f"no request in flight at SIGKILL: {summary}")
        self.assertEqual(len(set(sent)), accepted)
        # Nothing of the killed daemon runs on: no worker serves the port or holds the store.
        for _ in range(200):
            if not port_open(port) and not any(alive(p) for p in state["killed_pids"]):
                break
            await deferLater(reactor, 0.05, lambda: None)
        left = [p for p in state["killed_pids"] if alive(p)]
        self.assertEqual(left, [], f"processes of the killed daemon still running: {summary}")
        self.assertFalse(port_open(port), f"port {port} still served after the kill: {summary}")

        # The database and message files as the killed process left them.  The queue
        # delivers while the Sends come in (localserve delivers to its own Inbox), so an
        # answered message is either still queued, with its row and message file, or
        # retired as delivered, with its copy in the Inbox.
        found = 0
        delivered = 0
        problems: list[str] = []
        db = sqlite3.connect(data_dir / "moxtw.sqlite3")
        try:
            total_rows = db.execute("SELECT count(*) FROM queue_msg").fetchone()[0]
            inbox = inbox_files(db, data_dir)
            for queue_id, expected in sorted(sent.items()):
                row = db.execute(
                    "SELECT recipient_address, recipient_localpart, recipient_domain, message_id, subject, blob"
                    " FROM queue_msg WHERE id = ?",
                    (queue_id,),
                ).fetchone()
                wanted = (expected["address"], *expected["address"].split("@"), expected["message_id"], expected["subject"])
                if row is None:
                    retired = db.execute(
                        "SELECT recipient_address, recipient_localpart, recipient_domain, message_id, subject, success, event"
                        " FROM queue_retired WHERE id = ?",
                        (queue_id,),
                    ).fetchone()
                    if retired is None:
                        problems.append(f"QueueMsgID {queue_id}: neither queued nor retired")
                    elif tuple(retired[:5]) != wanted or tuple(retired[5:]) != (1, "delivered"):
                        problems.append(f"QueueMsgID {queue_id}: retired {retired}, sent {wanted}")
                    elif expected["message_id"] not in inbox:
                        problems.append(f"QueueMsgID {queue_id}: retired as delivered, not in the Inbox")
                    else:
                        problem = check_message_file(inbox[expected["message_id"]], expected)
                        if problem:
                            problems.append(f"QueueMsgID {queue_id} (delivered): {problem}")
                        else:
                            found += 1
                            delivered += 1
                    continue
                address, localpart, domain, message_id, subject, blob = row
                if (address, localpart, domain, message_id, subject) != wanted:
                    problems.append(f"QueueMsgID {queue_id}: row {row[:5]}, sent {wanted}")
                    continue
                problem = check_message_file(data_dir / "msgs" / blob[:2] / blob, expected)
                if problem:
                    problems.append(f"QueueMsgID {queue_id}: {problem}")
                    continue
                found += 1
        finally:
            db.close()
        summary += f", found {found} ({delivered} delivered before the kill, {total_rows} still queued)"
        print(f"durability: {summary}")
        self.assertEqual(problems, [], summary)
        self.assertEqual(found, accepted, summary)

        # A restart on the same data directory opens the store and serves the webapi.
        again = self.start_daemon(config)
        await again.wait_for_port(port)
        client = http_client(self)
        response = await client.post(url + "SuppressionList", data={"request": "{}"}, auth=LOGIN)
        body = await response.content()
        self.assertEqual((response.code, body), (200, b'{"Suppressions":[]}\n'), again.output)
        # Queue IDs are not reused after the crash.
        request = {"To": [{"Address": "after@localhost"}], "Text": "after the restart"}
        response = await client.post(url + "Send", data={"request": json.dumps(request)}, auth=LOGIN)
        result = json.loads(await response.content())
        self.assertEqual(response.code, 200, result)
        self.assertGreater(result["Submissions"][0]["QueueMsgID"], max(sent), summary)
        started = descendants(again.process.pid)
        self.assertIn(await again.stop(signal.SIGTERM), (0, -signal.SIGTERM), again.output)
        self.assertNotIn("Traceback", again.output)
        for _ in range(100):
            if not any(alive(p) for p in started):
                break
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual([p for p in started if alive(p)], [], f"left running after SIGTERM:\n{again.output}")

    def start_daemon(self, config: Path) -> Daemon:
        daemon = Daemon(self, "--config", str(config)).start()

        def kill_children() -> None:
            # Runs before Daemon.kill (cleanups run last-in first-out): if the test
            # stopped half-way, take the worker processes down with the main process.
            if not daemon.proto.ended.called:
                for pid in descendants(daemon.process.pid):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

        self.addCleanup(kill_children)
        return daemon


def inbox_files(db: sqlite3.Connection, data_dir: Path) -> dict[str, Path]:
    """Message-ID → message file of every message in the Inbox of account mox."""
    files: dict[str, Path] = {}
    rows = db.execute(
        "SELECT m.blob FROM message m JOIN mailbox b ON b.id = m.mailbox_id WHERE b.account = 'mox' AND b.name = 'Inbox'"
    ).fetchall()
    for (blob,) in rows:
        path = data_dir / "msgs" / blob[:2] / blob
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        if msg["Message-Id"]:
            files[str(msg["Message-Id"])] = path
    return files


def check_message_file(path: Path, expected: dict[str, str]) -> str | None:
    """None if ``path`` holds the message that was sent, else what is wrong with it."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"message file {path}: {e}"
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    if msg["Subject"] != expected["subject"]:
        return f"message file Subject {msg['Subject']!r}, sent {expected['subject']!r}"
    if msg["Message-Id"] != expected["message_id"]:
        return f"message file Message-Id {msg['Message-Id']!r}, sent {expected['message_id']!r}"
    body = msg.get_body(("plain",))
    text = body.get_content() if body is not None else None
    if not isinstance(text, str) or text.replace("\r\n", "\n").rstrip("\n") != expected["text"]:
        return f"message file text {text!r}, sent {expected['text']!r}"
    return None
