"""A real Postfix bounce, matched by FromID to the message it concerns.

Everything is a real process or server on loopback:

* a private Postfix (:class:`tests.postfix.PostfixMX`, ``postfix start-fg`` on 127.0.0.2
  at a free port) that delivers ``example.test`` into Maildirs, accepts ``relay.test``
  for relaying, and routes by ``transport_maps``: ``relay.test`` to a next hop in this
  test, ``example.org`` (moxtw's domain, where Postfix's bounces go) to moxtw's incoming
  SMTP listener on its free port;
* the next hop for ``relay.test`` (:class:`RejectingNextHop`, a few lines of Twisted):
  it takes the connection and MAIL FROM and answers RCPT TO with ``550 5.1.1`` — but only
  once the test lets it, so that moxtw's ``delivered`` webhook is seen before the bounce
  exists (otherwise moxtw could rightly supersede that webhook by the newer event);
* a ``twisted.names`` DNS server: ``example.test`` and ``relay.test`` MX
  ``mx.example.test`` (127.0.0.2, Postfix), ``example.org`` MX ``mail.example.org``
  (127.0.0.1, moxtw; Postfix cannot query a DNS server on another port, so its
  ``transport_maps`` entry stands in for that MX lookup);
* a webhook receiver (twisted.web) with ``/outgoing`` and ``/incoming``;
* a production-style ``twistd -n moxtw --config FILE``: account ``app`` with FromID login
  ``app+fromid@example.org``, domain ``example.org`` with catchall separator ``+``, both
  webhooks, ``[queue] port`` = Postfix's, ``[dns]`` the test DNS server.

One webapi Send, logged in as the FromID login address, to ``someone@example.test`` and
``gone@relay.test``: each recipient gets its own MAIL FROM ``app+<fromid>@example.org``.
Postfix accepts both (two ``delivered`` webhooks); then the next hop refuses
``gone@relay.test`` and Postfix sends its RFC 3464 bounce to ``app+<fromid>@example.org``.
moxtw must match that bounce to the message: a ``failed`` webhook with ``DSN: true``, the
same QueueMsgID, FromID, Message-ID, Subject and Extra, SMTPCode 550 / SMTPEnhancedCode
5.1.1 taken from the bounce's ``Diagnostic-Code``, ``Suppressing: true``; the recipient on
the suppression list (webapi SuppressionList); the bounce itself in the Inbox (webapi
MessageGet), and no incoming webhook for it — neither sent nor stored.  Nothing happens
for ``someone@example.test``, which was delivered.

Skipped when Postfix is not installed or this is not root (Postfix's master needs it).
"""

from __future__ import annotations

import json
import secrets
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import protocol
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web import resource, server

from moxtw.passwords import hash_password
from tests import postfix
from tests.delivery.peers import DNSServer
from tests.helpers import Daemon, free_port, http_client
from tests.integration.test_localserve_delivery import Receiver

reactor: Any = _reactor

PASSWORD = "bounce-test-password"
FROMID_LOGIN = ("app+fromid@example.org", PASSWORD)
MX_DOMAIN = "example.test"  # Postfix delivers it into Maildirs
RELAY_DOMAIN = "relay.test"  # Postfix relays it to the next hop, which refuses
GOOD = f"someone@{MX_DOMAIN}"
GONE = f"gone@{RELAY_DOMAIN}"
NEXT_HOP_REPLY = "550 5.1.1 <gone@relay.test>: no such user here"
#: Generous: a deadline for a slow, shared machine, not a timing assertion.
DEADLINE = 90.0


class _NextHopSMTP(LineReceiver):
    transport: Any
    delimiter = b"\r\n"

    def __init__(self, hop: RejectingNextHop) -> None:
        self.hop = hop
        self.closed = False

    def connectionMade(self) -> None:
        self.hop.protocols.append(self)
        self.send("220 nexthop.relay.test ESMTP rejecting next hop")

    def connectionLost(self, reason: Any = None) -> None:
        self.closed = True

    def send(self, line: str) -> None:
        if not self.closed:
            self.sendLine(line.encode())

    def lineReceived(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        self.hop.commands.append(text)
        verb = text.split(" ", 1)[0].upper()
        if verb == "EHLO":
            # No PIPELINING: the client waits for each reply, so holding one is simple.
            self.send("250-nexthop.relay.test")
            self.send("250 ENHANCEDSTATUSCODES")
        elif verb == "HELO":
            self.send("250 nexthop.relay.test")
        elif verb == "MAIL":
            self.send("250 2.1.0 ok")
        elif verb == "RCPT":
            self.hop.rcpts.append(text)
            self.hop.answer(self)
        elif verb == "RSET":
            self.send("250 2.0.0 ok")
        elif verb == "QUIT":
            self.send("221 2.0.0 bye")
            self.transport.loseConnection()
        else:
            self.send("503 5.5.1 not here")


class RejectingNextHop(protocol.Factory):
    """An SMTP server on 127.0.0.1 that refuses every RCPT TO with ``reply``, answering
    only after :meth:`open` (until then the client waits for the reply)."""

    def __init__(self, testcase: Any, reply: str) -> None:
        self.reply = reply
        self.opened = False
        self.waiting: list[_NextHopSMTP] = []
        self.protocols: list[_NextHopSMTP] = []
        self.commands: list[str] = []
        self.rcpts: list[str] = []
        self.listening = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port = int(self.listening.getHost().port)
        testcase.addCleanup(self.stop)

    def buildProtocol(self, addr: Any) -> _NextHopSMTP:
        return _NextHopSMTP(self)

    def answer(self, proto: _NextHopSMTP) -> None:
        if self.opened:
            proto.send(self.reply)
        else:
            self.waiting.append(proto)

    def open(self) -> None:
        self.opened = True
        waiting, self.waiting = self.waiting, []
        for proto in waiting:
            proto.send(self.reply)

    async def stop(self) -> None:
        await self.listening.stopListening()
        for proto in self.protocols:
            if not proto.closed:
                proto.transport.abortConnection()


def write_config(directory: Path, *, dns_port: int, mx_port: int, http_port: int, smtp_port: int, hook_port: int) -> Path:
    path = directory / "moxtw.toml"
    path.write_text(
        f"""
hostname = "mail.example.org"
data_dir = "{directory / "data"}"
admin_password_hash = ""

[listeners]
http = ["tcp:{http_port}:interface=127.0.0.1"]
smtp = ["tcp:{smtp_port}:interface=127.0.0.1"]

[queue]
port = {mx_port}
retry_scale = 1

[dns]
nameservers = ["127.0.0.1:{dns_port}"]
timeout = "2s"

[domains."example.org"]
catchall_separators = ["+"]

[accounts.app]
domain = "example.org"
addresses = ["app@example.org"]
password_hash = "{hash_password(PASSWORD)}"
fromid_login_addresses = ["{FROMID_LOGIN[0]}"]
keep_retired_messages = "72h"
keep_retired_webhooks = "72h"

[accounts.app.outgoing_webhook]
url = "http://127.0.0.1:{hook_port}/outgoing"
authorization = "Bearer out-t0ken"

[accounts.app.incoming_webhook]
url = "http://127.0.0.1:{hook_port}/incoming"
authorization = "Bearer in-t0ken"
"""
    )
    return path


def read_db(path: Path, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` from the running daemon's database, opened read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in db.execute(query, args).fetchall()]
    finally:
        db.close()


class PostfixBounceTests(TestCase):
    timeout = 180

    def setUp(self) -> None:
        why = postfix.missing()
        if why is not None:
            raise SkipTest(why)

    async def wait(self, what: str, check: Callable[[], bool], daemon: Daemon, mx: postfix.PostfixMX) -> None:
        """Poll ``check`` until it holds; fail after DEADLINE with both daemons' logs."""
        deadline = time.monotonic() + DEADLINE
        while not check():
            if time.monotonic() > deadline or daemon.proto.ended.called or mx.proto.ended.called:
                self.fail(
                    f"still waiting for {what}\n--- webhooks:\n{self.outgoing.requests}\n{self.incoming.requests}"
                    f"\n--- moxtw:\n{daemon.output}\n--- postfix:\n{mx.output}"
                )
            await deferLater(reactor, 0.1, lambda: None)

    def events(self) -> list[dict[str, Any]]:
        return [body for _, body in self.outgoing.requests]

    async def test_postfix_bounce_matched_by_fromid(self) -> None:
        started = time.monotonic()
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)

        # Webhook receiver: one site, a path per webhook kind.
        self.outgoing, self.incoming = Receiver(), Receiver()
        root = resource.Resource()
        root.putChild(b"outgoing", self.outgoing)
        root.putChild(b"incoming", self.incoming)
        site = server.Site(root)
        site.noisy = False
        hook_port = free_port()
        listening = reactor.listenTCP(hook_port, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)

        hop = RejectingNextHop(self, NEXT_HOP_REPLY)
        smtp_port = free_port()
        mx = postfix.PostfixMX(
            self,
            directory / "postfix",
            domain=MX_DOMAIN,
            host="127.0.0.2",
            mailboxes=("someone",),
            relay_domains=(RELAY_DOMAIN,),
            transport={
                RELAY_DOMAIN: f"smtp:[127.0.0.1]:{hop.port}",
                "example.org": f"smtp:[127.0.0.1]:{smtp_port}",
            },
        )
        await mx.start()

        dns = DNSServer(self)
        dns.zone.mx(MX_DOMAIN, (10, f"mx.{MX_DOMAIN}"))
        dns.zone.mx(RELAY_DOMAIN, (10, f"mx.{MX_DOMAIN}"))
        dns.zone.a(f"mx.{MX_DOMAIN}", mx.host)
        dns.zone.mx("example.org", (10, "mail.example.org"))
        dns.zone.a("mail.example.org", "127.0.0.1")

        http_port = free_port()
        config = write_config(
            directory, dns_port=dns.port, mx_port=mx.port, http_port=http_port, smtp_port=smtp_port, hook_port=hook_port
        )
        db_path = directory / "data" / "moxtw.sqlite3"
        daemon = Daemon(self, "--config", str(config)).start()
        await daemon.wait_for_port(http_port)
        await daemon.wait_for_port(smtp_port)

        client = http_client(self)
        api = f"http://127.0.0.1:{http_port}/webapi/v0/"

        async def call(method: str, request: dict[str, Any]) -> dict[str, Any]:
            response = await client.post(api + method, data={"request": json.dumps(request)}, auth=FROMID_LOGIN)
            body: dict[str, Any] = json.loads(await response.content())
            self.assertEqual(response.code, 200, f"{method}: {body}")
            return body

        run = secrets.token_hex(4)
        subject = f"bounce test {run}"
        sent = await call(
            "Send",
            {
                "To": [{"Address": GOOD}, {"Address": GONE}],
                "Subject": subject,
                "Text": f"Hello from moxtw, run {run}.",
                "Extra": {"order": "7"},
            },
        )
        message_id = sent["MessageID"]
        subs = {s["Address"]: s for s in sent["Submissions"]}
        self.assertEqual(set(subs), {GOOD, GONE}, sent)
        gone_id, gone_fromid = subs[GONE]["QueueMsgID"], subs[GONE]["FromID"]
        good_id, good_fromid = subs[GOOD]["QueueMsgID"], subs[GOOD]["FromID"]
        self.assertTrue(gone_fromid and good_fromid and gone_fromid != good_fromid, sent)

        def got(queue_id: int, event: str, dsn: bool) -> bool:
            return any(
                b["QueueMsgID"] == queue_id and b["Event"] == event and b["DSN"] is dsn for b in self.events()
            )

        # Postfix accepted both recipients: moxtw is done with them.  The next hop holds
        # its answer for gone@relay.test until the test has seen these webhooks.
        await self.wait("delivered webhooks for both recipients",
                        lambda: got(good_id, "delivered", False) and got(gone_id, "delivered", False), daemon, mx)
        hop.open()
        await self.wait("the DSN-based failed webhook", lambda: got(gone_id, "failed", True), daemon, mx)
        # Postfix logs after the fact (after moxtw's 250 to the bounce; delivery into the
        # Maildir runs on its own): wait for those lines too.
        bounce_sent = f"to=<app+{gone_fromid}@example.org>, relay=127.0.0.1[127.0.0.1]:{smtp_port}"
        await self.wait("Postfix's log of the bounce sent to moxtw", lambda: bounce_sent in mx.output, daemon, mx)
        await self.wait(f"the message in the Maildir of {GOOD}", lambda: bool(mx.messages("someone")), daemon, mx)
        # The bounce is in the Inbox in the transaction that made the event.
        inbox = read_db(
            db_path,
            "SELECT m.id, m.rcpt_to, m.mail_from, m.dsn FROM message m JOIN mailbox b ON b.id = m.mailbox_id"
            " WHERE b.account = 'app' AND b.name = 'Inbox' ORDER BY m.id",
        )

        # --- The webhooks: delivered for each recipient, then the bounce's failed event.
        by_message: dict[int, list[tuple[str, bool]]] = {}
        for body in self.events():
            by_message.setdefault(body["QueueMsgID"], []).append((body["Event"], body["DSN"]))
        self.assertEqual(by_message, {good_id: [("delivered", False)], gone_id: [("delivered", False), ("failed", True)]})
        headers, failed = next(r for r in self.outgoing.requests if r[1]["Event"] == "failed")
        self.assertEqual(headers["authorization"], "Bearer out-t0ken")
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(
            {k: failed[k] for k in ("Version", "Event", "DSN", "Suppressing", "QueueMsgID", "FromID")},
            {"Version": 0, "Event": "failed", "DSN": True, "Suppressing": True, "QueueMsgID": gone_id, "FromID": gone_fromid},
        )
        self.assertEqual((failed["MessageID"], failed["Subject"], failed["Extra"]), (message_id, subject, {"order": "7"}))
        self.assertEqual((failed["SMTPCode"], failed["SMTPEnhancedCode"]), (550, "5.1.1"), failed)
        delivered = next(b for b in self.events() if b["QueueMsgID"] == gone_id and b["Event"] == "delivered")
        self.assertEqual((delivered["FromID"], delivered["MessageID"], delivered["Suppressing"]), (gone_fromid, message_id, False))
        self.assertLess(
            int(next(h for h, b in self.outgoing.requests if b is delivered)["x-mox-webhook-id"]),
            int(headers["x-mox-webhook-id"]),
        )

        # --- The suppression list, through the webapi.
        suppressions = (await call("SuppressionList", {}))["Suppressions"]
        self.assertEqual(
            [(s["Account"], s["BaseAddress"], s["OriginalAddress"], s["Manual"], s["Reason"]) for s in suppressions],
            [("app", GONE, GONE, False, 'delivery failure from DSN with smtp code 550, enhanced code "1.1"')],
        )
        present = await call("SuppressionPresent", {"EmailAddress": GONE})
        self.assertEqual(present, {"Present": True})

        # --- The bounce in the Inbox: Postfix's DSN to the FromID address.
        self.assertEqual(
            [row[1:] for row in inbox], [(f"app+{gone_fromid}@example.org", "", 1)], "only the bounce came in"
        )
        got_message = await call("MessageGet", {"MsgID": inbox[0][0]})
        meta, message, structure = got_message["Meta"], got_message["Message"], got_message["Structure"]
        self.assertEqual(
            (meta["DSN"], meta["RcptTo"], meta["MailFrom"], meta["MailboxName"]),
            (True, f"app+{gone_fromid}@example.org", "", "Inbox"),
        )
        self.assertEqual(message["Subject"], "Undelivered Mail Returned to Sender")
        self.assertEqual([a["Address"] for a in message["From"]], [f"MAILER-DAEMON@mx.{MX_DOMAIN}"])
        self.assertEqual([a["Address"] for a in message["To"]], [f"app+{gone_fromid}@example.org"])
        self.assertEqual(structure["ContentType"], "multipart/report")
        self.assertIn("message/delivery-status", [p["ContentType"] for p in structure["Parts"]])
        self.assertIn(GONE, message["Text"])
        raw = await client.post(api + "MessageRawGet", data={"request": json.dumps({"MsgID": inbox[0][0]})}, auth=FROMID_LOGIN)
        raw_text = (await raw.content()).decode("utf-8", "replace")
        self.assertEqual(raw.code, 200, raw_text)
        self.assertIn(f"Final-Recipient: rfc822; {GONE}", raw_text)
        self.assertIn("Action: failed", raw_text)
        self.assertIn("Status: 5.1.1", raw_text)
        self.assertIn(f"Diagnostic-Code: smtp; {NEXT_HOP_REPLY}", raw_text)
        self.assertIn(f"Message-Id: {message_id}", raw_text)  # the original's headers

        # --- No incoming webhook for it: none sent, none stored (it would have been
        # stored in the transaction that stored the message, before the event above).
        self.assertEqual(self.incoming.requests, [])
        self.assertEqual(read_db(db_path, "SELECT count(*) FROM event WHERE kind = 'incoming'"), [(0,)])
        self.assertEqual(read_db(db_path, "SELECT count(*) FROM hook_retired WHERE kind = 'incoming'"), [(0,)])

        # --- moxtw's record of the message: delivered to Postfix, then the bounce in its
        # history; now counted as a failure.  The delivered recipient is untouched.
        self.assertEqual(
            read_db(db_path, "SELECT id, event, success, from_id FROM queue_retired ORDER BY id"),
            sorted([(good_id, "delivered", 1, good_fromid), (gone_id, "delivered", 0, gone_fromid)]),
        )
        history = read_db(db_path, "SELECT success, code, secode, error FROM queue_attempt WHERE msg_id = ? ORDER BY id", gone_id)
        self.assertEqual([h[:3] for h in history], [(1, 250, "0.0"), (0, 550, "1.1")], history)
        self.assertTrue(history[1][3].startswith("incoming message: "), history)
        self.assertEqual(
            read_db(db_path, "SELECT count(*) FROM queue_attempt WHERE msg_id = ?", good_id), [(1,)]
        )

        # --- Postfix: accepted both, refused by the next hop, bounced to moxtw's FromID.
        self.assertEqual(hop.rcpts, [f"RCPT TO:<{GONE}>"])
        self.assertIn(f"MAIL FROM:<app+{gone_fromid}@example.org>", " ".join(hop.commands))
        self.assertIn(f"to=<{GONE}>, relay=127.0.0.1[127.0.0.1]:{hop.port}", mx.output)
        self.assertIn(f"said: {NEXT_HOP_REPLY} (in reply to RCPT TO command)", mx.output)
        self.assertIn("sender non-delivery notification", mx.output)
        self.assertIn(f"{bounce_sent}, delay=", mx.output)
        self.assertIn("status=sent (250 2.2.0 it is done)", mx.output)
        self.assertEqual(len(mx.messages("someone")), 1)
        self.assertIn("status=sent (delivered to maildir)", mx.output)

        self.assertIn(await daemon.stop(signal.SIGTERM), (0, -signal.SIGTERM), daemon.output)
        self.assertNotIn("Traceback", daemon.output)
        await mx.stop()
        self.assertIsNone(mx.master_pid())
        print(f"postfix bounce test: {time.monotonic() - started:.1f}s")
