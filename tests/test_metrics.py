"""Prometheus metrics (moxtw.metrics): each metric moves when its event happens, the HTTP
workers' metrics are added to the main process's, and a running localserve daemon's
/metrics shows a Send and an SMTP submission being queued and delivered."""

from __future__ import annotations

import base64
import json
import os
import re
import smtplib
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from moxtw import metrics
from moxtw.address import Address
from moxtw.config import DomainConfig
from moxtw.delivery.client import AttemptResult, RecipientResult, deliver_to
from moxtw.inbound import Inbound
from moxtw.localserve import ensure_config
from moxtw.queue import Result
from moxtw.smtp.incoming import IncomingMessage
from moxtw.store import outbox
from moxtw.store.suppressions import add_suppression
from moxtw.store.webhooks import hook_queue_size
from tests.helpers import Daemon, free_port
from tests.queue.harness import FakeTransport, Harness, outcome, temporary
from tests.smtp.fixture import SMTPFixture
from tests.store import test_dsnmatch
from tests.test_dsnparse import sample as corpus_sample
from tests.webapi.fixture import WebAPIFixture
from tests.webhooks.harness import HOLD
from tests.webhooks.harness import Harness as WebhookHarness


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Changes:
    """Sample values now; :meth:`delta` is how much each moved since."""

    def __init__(self, *samples: tuple[str, dict[str, str]]) -> None:
        self.samples = samples
        self.before = [value(name, **labels) for name, labels in samples]

    def delta(self) -> list[float]:
        return [value(name, **labels) - b for (name, labels), b in zip(self.samples, self.before, strict=True)]


def s(name: str, **labels: str) -> tuple[str, dict[str, str]]:
    return name, labels


def plain(user: str = "mox@localhost", password: str = "moxmoxmox") -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def find(families: Iterable[Metric], name: str, **labels: str) -> float | None:
    for family in families:
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


# --- webapi -------------------------------------------------------------------------------


class WebAPIMetricsTests(TestCase):
    async def test_send_authentication_submission_suppression(self) -> None:
        f = await WebAPIFixture(
            self, edit=lambda t: t.replace("max_outgoing_messages_per_day = 1000", "max_outgoing_messages_per_day = 2")
        ).start()
        c = Changes(
            s("moxtw_webapi_requests_total", method="Send", result="ok"),
            s("moxtw_webapi_process_requests_total", process="main"),
            s("moxtw_webapi_submission_total", result="ok"),
            s("moxtw_webapi_submission_total", result="badfrom"),
            s("moxtw_webapi_submission_total", result="messagelimiterror"),
            s("moxtw_authentication_total", kind="webapi", variant="httpbasic", result="ok"),
            s("moxtw_authentication_total", kind="webapi", variant="httpbasic", result="badcreds"),
            s("moxtw_suppressions_added_total", source="api"),
            s("moxtw_queue_messages_queued_total", source="webapi"),
        )
        send = {"To": [{"Address": "a@remote.example"}, {"Address": "b@remote.example"}], "Text": "hi"}
        self.assertEqual((await f.call("Send", send)).status, 200)
        bad_from = {**send, "From": [{"Address": "other@elsewhere.example"}]}
        self.assertEqual((await f.call("Send", bad_from)).json["Code"], "badFrom")
        self.assertEqual((await f.call("Send", send)).json["Code"], "messageLimitReached")
        self.assertEqual((await f.call("Send", send, auth=("mox@localhost", "wrong"))).status, 401)
        reply = await f.call("SuppressionAdd", {"EmailAddress": "x@remote.example", "Manual": True, "Reason": "r"})
        self.assertEqual(reply.status, 200)
        # 5 calls, 4 authenticated; one submission of two recipients queued.
        self.assertEqual(c.delta(), [1, 5, 1, 1, 1, 4, 1, 1, 2])

    async def test_rate_limited_authentication(self) -> None:
        f = await WebAPIFixture(self).start()
        c = Changes(
            s("moxtw_authentication_ratelimited_total", kind="webapi"),
            s("moxtw_webapi_requests_total", method="SuppressionList", result="ratelimited"),
        )
        statuses = [(await f.call("SuppressionList", {}, auth=("mox@localhost", "wrong"))).status for _ in range(11)]
        self.assertEqual(statuses, [401] * 10 + [429])
        self.assertEqual(c.delta(), [1, 1])


# --- SMTP server -----------------------------------------------------------------------------


class SMTPServerMetricsTests(TestCase):
    async def message(self, c: Any, *lines: str) -> bytes:
        self.assertEqual(await c.command("DATA"), b"354 see you at the bare dot")
        have = len(c.client.replies)
        c.send(*lines, ".")
        return bytes((await c.replies(have + 1))[-1])

    async def test_submission(self) -> None:
        f = SMTPFixture(self)
        c = Changes(
            s("moxtw_smtpserver_connection_total", listener="submission"),
            s("moxtw_authentication_total", kind="smtp", variant="plain", result="badcreds"),
            s("moxtw_authentication_total", kind="smtp", variant="plain", result="ok"),
            s("moxtw_smtpserver_submission_total", result="badfrom"),
            s("moxtw_smtpserver_submission_total", result="badmessage"),
            s("moxtw_smtpserver_submission_total", result="ok"),
            s("moxtw_smtpserver_transaction_total", listener="submission", result="accepted"),
            s("moxtw_smtpserver_transaction_total", listener="submission", result="rejected"),
            s("moxtw_queue_messages_queued_total", source="smtp"),
        )
        conn = f.connect(f.factories.submission)
        await conn.command("EHLO client.example")
        self.assertEqual(await conn.command(f"AUTH PLAIN {plain(password='wrong')}"), b"535 5.7.8 bad user/pass")
        self.assertEqual(await conn.command(f"AUTH PLAIN {plain()}"), b"235 2.7.0 nice")
        self.assertEqual(await conn.command("MAIL FROM:<someone@elsewhere.example>"), b"550 5.7.1 must match authenticated user")
        await conn.command("MAIL FROM:<mox@localhost>")
        await conn.command("RCPT TO:<rcpt@remote.example>")
        reply = await self.message(conn, "From: <mox@localhost>", "From: <mox@localhost>", "", "two froms")
        self.assertTrue(reply.startswith(b"550 "), reply)
        await conn.command("MAIL FROM:<mox@localhost>")
        await conn.command("RCPT TO:<rcpt@remote.example>")
        reply = await self.message(conn, "From: <mox@localhost>", "Subject: hi", "", "body")
        self.assertEqual(reply, b"250 2.2.0 it is done")
        self.assertEqual(c.delta(), [1, 1, 1, 1, 1, 1, 1, 1, 1])

    async def test_auth_login_variant(self) -> None:
        f = SMTPFixture(self)
        c = Changes(s("moxtw_authentication_total", kind="smtp", variant="login", result="ok"))
        conn = f.connect(f.factories.submission)
        await conn.command("EHLO client.example")
        self.assertEqual(await conn.command("AUTH LOGIN"), b"334 VXNlcm5hbWU6")
        self.assertEqual(await conn.command(base64.b64encode(b"mox@localhost").decode()), b"334 UGFzc3dvcmQ6")
        self.assertEqual(await conn.command(base64.b64encode(b"moxmoxmox").decode()), b"235 2.7.0 nice")
        self.assertEqual(c.delta(), [1])

    async def test_incoming_transactions(self) -> None:
        f = SMTPFixture(self)
        c = Changes(
            s("moxtw_smtpserver_connection_total", listener="smtp"),
            s("moxtw_smtpserver_transaction_total", listener="smtp", result="accepted"),
            s("moxtw_smtpserver_transaction_total", listener="smtp", result="rejected"),
            s("moxtw_smtpserver_transaction_total", listener="smtp", result="tempfail"),
        )
        conn = f.connect(f.factories.smtp)
        await conn.command("EHLO sender.example")
        for rcpt, expect in (("mox", b"250 "), ("xpermerror", b"550 "), ("xtemperror", b"451 "), ("mox", b"250 ")):
            await conn.command("MAIL FROM:<alice@remote.example>")
            await conn.command(f"RCPT TO:<{rcpt}@localhost>")
            reply = await self.message(conn, "Subject: hi", "", "body")
            self.assertTrue(reply.startswith(expect), reply)
        self.assertEqual(c.delta(), [1, 2, 1, 1])

    def test_listener_names(self) -> None:
        f = SMTPFixture(self)
        assert f.factories.submissions is not None
        names = [
            metrics.smtp_listener(factory.options)
            for factory in (f.factories.smtp, f.factories.submission, f.factories.submissions.wrappedFactory)
        ]
        self.assertEqual(names, ["smtp", "submission", "submissions"])


# --- queue -----------------------------------------------------------------------------------


class QueueMetricsTests(TestCase):
    def setUp(self) -> None:
        self.h = Harness(self)
        self.store = self.h.open()

    async def test_delivery_results_and_suppression(self) -> None:
        answers = {
            "ok@remote.example": lambda m: outcome(m.id),
            "later@remote.example": temporary,
            "gone@remote.example": lambda m: outcome(m.id, Result.PERMANENT, 550, "5.1.1", "no such user"),
            "slow@remote.example": lambda m: outcome(
                m.id, Result.TEMPORARY, 0, "", "timeout waiting for remote smtp server during reply after message"
            ),
        }
        await self.h.run(add_suppression, "mox", "blocked@remote.example", "blocked@remote.example", True, "test", 0.0)
        c = Changes(
            s("moxtw_queue_deliveries_total", result="ok"),
            s("moxtw_queue_deliveries_total", result="temperror"),
            s("moxtw_queue_deliveries_total", result="permerror"),
            s("moxtw_queue_deliveries_total", result="timeout"),
            s("moxtw_queue_deliveries_total", result="suppressed"),
            s("moxtw_suppressions_added_total", source="delivery"),
        )
        for rcpt in [*answers, "blocked@remote.example"]:
            await self.h.queue(rcpt)
        q = self.h.service(FakeTransport(answer=lambda m: answers[str(m.recipient)](m)))
        await q.settle()
        self.assertEqual(c.delta(), [1, 1, 1, 1, 1, 1])

    async def collect(self, stats: metrics.QueueStats) -> dict[str, float]:
        families = await deferToThread(stats.collect)
        return {
            (sample.labels.get("state") or sample.name): float(sample.value)
            for family in families
            for sample in family.samples
        }

    async def test_queue_length_by_state(self) -> None:
        stats = metrics.QueueStats(self.store.db, reactor, clock=self.h.clock)
        self.assertEqual(await self.collect(stats), {"due": 0, "waiting": 0, "inflight": 0, "held": 0, "moxtw_queue_hold": 0})
        now = self.h.clock.seconds()
        await self.h.queue("due@remote.example")
        (later,) = await self.h.queue("later@remote.example", next_attempt=now + 3600)
        (held,) = await self.h.queue("held@remote.example")
        await self.h.run(outbox.set_hold, [held], True)
        self.assertEqual(await self.collect(stats), {"due": 1, "waiting": 1, "inflight": 0, "held": 1, "moxtw_queue_hold": 1})

        transport = FakeTransport(hold=True)
        q = self.h.service(transport)
        await q.settle()
        self.assertEqual(len(transport.pending), 1)
        self.assertEqual(await self.collect(stats), {"due": 0, "waiting": 1, "inflight": 1, "held": 1, "moxtw_queue_hold": 1})
        transport.release()
        await q.settle()
        self.assertEqual(await self.collect(stats), {"due": 0, "waiting": 1, "inflight": 0, "held": 1, "moxtw_queue_hold": 1})
        # On the reactor thread collect() does not wait: it reports the last count.
        await self.h.run(outbox.set_hold, [held], False)
        self.assertEqual(stats.counts, {"waiting": 1, "held": 1})
        families = stats.collect()
        self.assertEqual(find(families, "moxtw_queue_hold"), 1.0)

    async def test_concurrent_collects_share_one_count(self) -> None:
        stats = metrics.QueueStats(self.store.db, reactor, clock=self.h.clock)
        first = stats.refresh()
        second = stats.refresh(threading.Event())
        self.assertIsNotNone(first)
        self.assertIsNone(second)
        await first
        self.assertEqual(stats.counts, {})


class DeliveryMetricsTests(SynchronousTestCase):
    def attempt(self, *recipients: RecipientResult, **kwargs: Any) -> AttemptResult:
        return AttemptResult(tuple(recipients), **kwargs)

    def test_transaction_results(self) -> None:
        ok = RecipientResult("a@x", ok=True, permanent=False, code=250)
        temp = RecipientResult("b@x", ok=False, permanent=False, code=451, error="451 try later")
        perm = RecipientResult("c@x", ok=False, permanent=True, code=550, error="550 no")
        conn = RecipientResult("d@x", ok=False, permanent=False, error="connecting to 192.0.2.1 port 25: refused")
        cases = [
            (self.attempt(ok), "ok"),
            (self.attempt(ok, temp), "okpartial"),
            (self.attempt(temp), "temperror"),
            (self.attempt(perm, temp), "permerror"),
            (self.attempt(conn, error=conn.error), "error"),
            (self.attempt(conn, error="timeout waiting", after_data_timeout=True), "timeout"),
        ]
        for result, label in cases:
            key = s("moxtw_queue_delivery_duration_seconds_count", result=label, transport="direct", tlsmode="opportunistic")
            c = Changes(key, s("moxtw_queue_delivery_duration_seconds_bucket", **key[1], le="0.5"))
            metrics.delivery_attempt(result, 0.2, "", None)
            self.assertEqual(c.delta(), [1, 1], label)
        c = Changes(s("moxtw_queue_delivery_duration_seconds_bucket", result="ok", transport="relay", tlsmode="requiretls", le="1.0"),
                    s("moxtw_queue_delivery_duration_seconds_bucket", result="ok", transport="relay", tlsmode="requiretls", le="5.0"))
        metrics.delivery_attempt(self.attempt(ok), 2.0, "relay", True)
        self.assertEqual(c.delta(), [0, 1])

    def test_connection_results(self) -> None:
        c = Changes(*(s("moxtw_queue_connection_total", result=r) for r in ("ok", "timeout", "canceled", "error")))
        from twisted.internet.defer import CancelledError

        for failure in (None, TimeoutError(), CancelledError(), ConnectionRefusedError(), None):
            metrics.connection(failure)
        self.assertEqual(c.delta(), [2, 1, 1, 1])


class ConnectionMetricsTests(TestCase):
    async def test_refused_connection_is_counted(self) -> None:
        port = free_port()
        c = Changes(s("moxtw_queue_connection_total", result="error"),
                    s("moxtw_queue_delivery_duration_seconds_count", result="error", transport="direct", tlsmode="opportunistic"))
        result = await deliver_to(reactor, "localhost", "127.0.0.1", port, mail_from="a@example.org",
                                  recipients=["b@example.org"], data=b"Subject: x\r\n\r\nx\r\n", ehlo_hostname="test")
        self.assertFalse(result.delivered)
        # deliver_to is below the queue's transport: only the connection is counted.
        self.assertEqual(c.delta(), [1, 0])


# --- webhooks --------------------------------------------------------------------------------


class WebhookMetricsTests(TestCase):
    async def test_results_and_queue_length_stay_true(self) -> None:
        h = WebhookHarness(self)
        h.open()
        c = Changes(
            s("moxtw_webhook_requests_total", kind="outgoing", result="200"),
            s("moxtw_webhook_requests_total", kind="outgoing", result="error"),
        )
        h.receiver.answers["a.example"] = lambda r: HOLD
        h.client.refuse.add("b.example")
        await h.event(account="a", queue_msg_id=1)
        await h.event(account="b", queue_msg_id=2)
        svc = h.service()
        await svc.settle()
        # a's request is in flight, b's failed and waits for its retry: both queued.
        self.assertEqual(value("moxtw_webhook_queue_length"), 2.0)
        self.assertEqual(await h.run(hook_queue_size), 2)
        await h.answer_held(svc, 200)
        self.assertEqual(value("moxtw_webhook_queue_length"), 1.0)
        self.assertEqual(await h.run(hook_queue_size), 1)
        h.client.refuse.clear()
        await h.advance(svc, 60)
        self.assertEqual(value("moxtw_webhook_queue_length"), 0.0)
        self.assertEqual(await h.run(hook_queue_size), 0)
        self.assertEqual(c.delta(), [2, 1])

    async def test_timeout_result(self) -> None:
        h = WebhookHarness(self, timeout=10.0)
        h.open()
        c = Changes(s("moxtw_webhook_requests_total", kind="outgoing", result="timeout"))
        h.receiver.answers["a.example"] = lambda r: HOLD
        await h.event(account="a", queue_msg_id=1)
        svc = h.service()
        await svc.settle()
        await h.advance(svc, 10)
        self.assertEqual(c.delta(), [1])


# --- incoming reports --------------------------------------------------------------------------


class ReportMetricsTests(TestCase):
    def setUp(self) -> None:
        self.h = Harness(self)
        store = self.h.open()
        self.h.config = attrs.evolve(
            self.h.config, domains={"example.org": DomainConfig("example.org", catchall_separators=("+",))}
        )
        pool = ThreadPool(minthreads=0, maxthreads=1, name="test-metrics")
        pool.start()
        self.addCleanup(pool.stop)
        self.inbound = Inbound(self.h.config, store, reactor, pool)

    async def receive(self, rcpt: str, data: bytes) -> None:
        lp, dom = rcpt.split("@")
        await self.inbound(IncomingMessage(account="mox", recipient=Address(lp, dom), mail_from="", data=data,
                                           remote_ip="127.0.0.1", tls=False, helo="mx.remote.test"))

    async def sent(self, from_id: str, rcpt: str = "nobody@remote.test") -> int:
        return await test_dsnmatch.MatchTests.sent(self, self.h, from_id, rcpt)  # type: ignore[arg-type]

    async def test_dsn_matched_unrecognized_and_complaint(self) -> None:
        c = Changes(
            s("moxtw_dsn_total", result="matched"),
            s("moxtw_dsn_total", result="unrecognized"),
            s("moxtw_complaints_total"),
            s("moxtw_suppressions_added_total", source="dsn"),
            s("moxtw_suppressions_added_total", source="complaint"),
        )
        await self.sent("zz9")
        await self.receive("mox+zz9@example.org", corpus_sample("postfix_bounce.eml", "zz9"))
        self.assertEqual(c.delta(), [1, 0, 0, 1, 0])
        await self.sent("yy8")
        await self.receive("mox+yy8@example.org", b"From: <x@remote.test>\r\nSubject: hello\r\n\r\nnot a dsn\r\n")
        self.assertEqual(c.delta(), [1, 1, 0, 1, 0])
        await self.sent("cc1", "user@mailbox.test")
        await self.receive("mox+cc1@example.org", corpus_sample("arf_abuse.eml", "cc1").replace(b"app+cc1@", b"mox+cc1@"))
        self.assertEqual(c.delta(), [1, 1, 1, 1, 1])
        # A FromID that matches no sent message is an ordinary message: not counted.
        await self.receive("mox+nothing@example.org", corpus_sample("postfix_bounce.eml", "nothing"))
        self.assertEqual(c.delta(), [1, 1, 1, 1, 1])


# --- store -------------------------------------------------------------------------------------


class StoreMetricsTests(TestCase):
    async def test_transactions_batches_and_blob_writes(self) -> None:
        h = Harness(self)
        store = h.open()
        c = Changes(
            s("moxtw_store_transaction_duration_seconds_count", kind="batch"),
            s("moxtw_store_transaction_duration_seconds_count", kind="single"),
            s("moxtw_store_batch_requests_count"),
            s("moxtw_store_batch_requests_sum"),
            s("moxtw_store_request_duration_seconds_count"),
            s("moxtw_store_blob_write_duration_seconds_count"),
        )

        def nothing(cursor: Any) -> None:
            cursor.execute("SELECT 1")

        # Three requests in one reactor turn: one batch; then a transaction of its own.
        ds: list[Deferred[Any]] = [
            store.db.run_batched("a", nothing),
            store.run_with_blob("b", b"data", lambda cursor, key: key),
            store.db.run_batched("c", nothing),
        ]
        for d in ds:
            await d
        await store.db.run("d", nothing)
        self.assertEqual(c.delta(), [1, 1, 1, 3, 3, 1])


# --- HTTP workers ------------------------------------------------------------------------------

WORKER = """
from moxtw import metrics
metrics.set_process("worker0")
for _ in range(3):
    metrics.webapi_call("Send", "ok", 0.02)
metrics.submission("webapi", "ok")
metrics.webhook_queue.set(5)
"""


class WorkerMergeTests(TestCase):
    async def test_worker_counters_and_histograms_are_added(self) -> None:
        directory = Path(self.mktemp()).absolute()
        metrics.prepare_worker_dir(str(directory))
        (directory / "stale.db").write_bytes(b"")  # emptied by prepare_worker_dir
        metrics.prepare_worker_dir(str(directory))
        self.assertEqual(list(directory.iterdir()), [])
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
        out, err, code = await getProcessOutputAndValue(sys.executable, ["-c", WORKER], env=env, path=os.getcwd())
        self.assertEqual(code, 0, err)

        exposition = metrics.Exposition(REGISTRY, str(directory), [])
        families = exposition.collect()
        for name, labels, added in (
            ("moxtw_webapi_requests_total", {"method": "Send", "result": "ok"}, 3),
            ("moxtw_webapi_duration_seconds_count", {"method": "Send"}, 3),
            ("moxtw_webapi_duration_seconds_bucket", {"method": "Send", "le": "0.025"}, 3),
            ("moxtw_webapi_duration_seconds_bucket", {"method": "Send", "le": "0.01"}, 0),
            ("moxtw_webapi_submission_total", {"result": "ok"}, 1),
            ("moxtw_webapi_process_requests_total", {"process": "worker0"}, 3),
            ("moxtw_webhook_queue_length", {}, 0),
        ):
            self.assertEqual(find(families, name, **labels), value(name, **labels) + added, (name, labels))
        # Each family once; workers' gauges are left out (no pid-labelled series).
        names = [f.name for f in families]
        self.assertEqual(len(names), len(set(names)))
        self.assertIsNone(find(families, "moxtw_webhook_queue_length", pid="worker0"))
        self.assertEqual(
            [sample.labels for f in families if f.name == "moxtw_webhook_queue_length" for sample in f.samples], [{}]
        )

    def test_no_worker_dir(self) -> None:
        families = metrics.Exposition(REGISTRY, "/nonexistent/moxtw-metrics", []).collect()
        self.assertEqual(
            find(families, "moxtw_webapi_requests_total", method="Send", result="ok"),
            REGISTRY.get_sample_value("moxtw_webapi_requests_total", {"method": "Send", "result": "ok"}),
        )


# --- a running daemon --------------------------------------------------------------------------


class DaemonMetricsTests(TestCase):
    timeout = 120
    maxDiff = None

    async def scrape(self, port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await HTTPClient(Agent(reactor, pool=pool)).get(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(response.code, 200)
        text = (await response.content()).decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    async def test_scrape_after_send_and_submission(self) -> None:
        directory = Path(self.mktemp()).absolute()
        path, _ = ensure_config(directory)
        ports = {n: free_port() for n in ("smtp", "submission", "submissions", "http", "metrics")}
        text = path.read_text()
        for name, port in ports.items():
            text = re.sub(rf"^{name} = \[.*\]", f'{name} = ["tcp:{port}:interface=127.0.0.1"]', text, flags=re.M)
        path.write_text(text)
        daemon = Daemon(self, "localserve", "--dir", str(directory)).start()
        for port in ports.values():
            await daemon.wait_for_port(port)
        await daemon.wait_for_output("serving the webapi on")

        # Webapi Sends on new connections (the kernel spreads them over the main process
        # and its worker, localserve has one); the last one is released tomorrow.
        sends = 16
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pool = HTTPConnectionPool(reactor, persistent=False)
        client = HTTPClient(Agent(reactor, pool=pool))
        for i in range(sends):
            request: dict[str, Any] = {"To": [{"Address": f"to{i}@localhost"}], "Subject": "metrics", "Text": "hi"}
            if i == sends - 1:
                request["FutureRelease"] = tomorrow
            response = await client.post(
                f"http://127.0.0.1:{ports['http']}/webapi/v0/Send",
                data={"request": json.dumps(request)},
                auth=("mox@localhost", "moxmoxmox"),
            )
            body = await response.content()
            self.assertEqual(response.code, 200, body)

        def submit() -> None:
            with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as smtp:
                smtp.login("mox@localhost", "moxmoxmox")
                smtp.sendmail(
                    "mox@localhost", ["sub@localhost"], b"From: <mox@localhost>\r\nSubject: metrics\r\n\r\nhi\r\n"
                )

        await deferToThread(submit)

        delivered = sends  # the webapi messages but the one released tomorrow, and the submission
        for _ in range(400):
            m = await self.scrape(ports["metrics"])
            if m.get(("moxtw_queue_deliveries_total", (("result", "ok"),))) == delivered:
                break
            await deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail(f"deliveries did not reach {delivered}\n{daemon.output}")

        def get(name: str, **labels: str) -> float | None:
            return m.get((name, tuple(sorted(labels.items()))))

        processes = {k[1][0][1]: v for k, v in m.items() if k[0] == "moxtw_webapi_process_requests_total"}
        expected = {
            # webapi (whichever process served the call)
            ("moxtw_webapi_requests_total", (("method", "Send"), ("result", "ok"))): sends,
            ("moxtw_webapi_duration_seconds_count", (("method", "Send"),)): sends,
            ("moxtw_webapi_submission_total", (("result", "ok"),)): sends,
            ("moxtw_authentication_total", (("kind", "webapi"), ("result", "ok"), ("variant", "httpbasic"))): sends,
            ("moxtw_queue_messages_queued_total", (("source", "webapi"),)): sends,
            # SMTP submission
            ("moxtw_authentication_total", (("kind", "smtp"), ("result", "ok"), ("variant", "plain"))): 1,
            # (+1: wait_for_port's connection)
            ("moxtw_smtpserver_connection_total", (("listener", "submission"),)): 1 + 1,
            ("moxtw_smtpserver_transaction_total", (("listener", "submission"), ("result", "accepted"))): 1,
            ("moxtw_smtpserver_submission_total", (("result", "ok"),)): 1,
            ("moxtw_queue_messages_queued_total", (("source", "smtp"),)): 1,
            # queue and delivery (localserve delivers to its own smtp listener)
            ("moxtw_queue_length", (("state", "waiting"),)): 1,
            ("moxtw_queue_length", (("state", "due"),)): 0,
            ("moxtw_queue_length", (("state", "inflight"),)): 0,
            ("moxtw_queue_length", (("state", "held"),)): 0,
            ("moxtw_queue_hold", ()): 0,
            ("moxtw_queue_connection_total", (("result", "ok"),)): delivered,
            ("moxtw_queue_delivery_duration_seconds_count", (("result", "ok"), ("tlsmode", "opportunistic"), ("transport", "localserve"))): delivered,
            ("moxtw_smtpserver_connection_total", (("listener", "smtp"),)): delivered + 1,
            ("moxtw_smtpserver_transaction_total", (("listener", "smtp"), ("result", "accepted"))): delivered,
            # store: a message file per queued message and per message delivered into the Inbox
            ("moxtw_store_blob_write_duration_seconds_count", ()): sends + 1 + delivered,
        }
        self.assertEqual({k: m.get(k) for k in expected}, expected)
        # Both processes served Sends (all 16 to one of two has a chance of 2**-15), and
        # the worker's are in the totals above.
        self.assertEqual(sorted(processes), ["main", "worker0"])
        self.assertEqual(sum(processes.values()), sends, processes)
        self.assertGreaterEqual(get("moxtw_store_transaction_duration_seconds_count", kind="batch") or 0, 1)
        self.assertGreaterEqual(get("moxtw_store_batch_requests_sum") or 0, sends + 1 + delivered)
        self.assertEqual(get("moxtw_webhook_queue_length"), 0)

        await daemon.stop()
        self.assertNotIn("Traceback", daemon.output)
