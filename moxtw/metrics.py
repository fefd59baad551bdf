"""Prometheus metrics (prometheus-client), served on the metrics listener.

Every metric is listed in ``docs/metrics.md`` with the mox metric it corresponds to.  Code
elsewhere calls the metrics and small helpers here in one line; what needs more (the
queue-length collector, merging the HTTP workers' metrics) lives here too.

**HTTP worker processes** (``[webapi] workers``) count webapi calls, submissions,
authentications and store latency in their own process.  They run in prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set by :class:`moxtw.workers.HTTPWorkers`
to ``<data_dir>/worker-metrics``, emptied at each start), so their counters and
histograms live in small memory-mapped files; the main process's ``/metrics`` adds them to
its own, so every series counts the whole daemon.  A restarted worker writes a new file and
the old one is still counted, so counters never go back.  Workers keep no gauges.

**Queue lengths** are not kept up to date on every change: they are counted in the
database when ``/metrics`` is scraped (:class:`QueueStats`), off the reactor thread.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from twisted.internet import error as _neterror
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python import threadable

if TYPE_CHECKING:
    from .delivery.client import AttemptResult
    from .queue.transport import RecipientOutcome
    from .smtp.server import ServerOptions
    from .store.database import Database

log = Logger()

webapi_requests = Counter(
    "moxtw_webapi_requests",
    "Webapi calls by method and result (ok, or the error code, badauth, ratelimited).",
    ["method", "result"],
)
webapi_duration = Histogram(
    "moxtw_webapi_duration_seconds",
    "Duration of webapi calls by method.",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
messages_queued = Counter(
    "moxtw_queue_messages_queued",
    "Messages (one per recipient) added to the outgoing queue, by source.",
    ["source"],
)
webhook_requests = Counter(
    "moxtw_webhook_requests",
    "Webhook requests by kind (outgoing, incoming) and result (the HTTP status code, timeout, error).",
    ["kind", "result"],
)
webhook_duration = Histogram(
    "moxtw_webhook_duration_seconds",
    "Duration of webhook requests by kind, response body included.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
)
webhook_queue = Gauge(
    "moxtw_webhook_queue_length",
    "Webhooks queued: waiting for their first attempt, in flight, or waiting to be retried.",
)

# --- webapi, submission, authentication --------------------------------------------------

webapi_process_requests = Counter(
    "moxtw_webapi_process_requests",
    "Webapi calls by the process that served them (main, worker0, worker1, ...).",
    ["process"],
)
webapi_submissions = Counter(
    "moxtw_webapi_submission",
    "Webapi Send results: ok, badfrom, domaindisabled, messagelimiterror, recipientlimiterror,"
    " fromiderror, usererror, queueerror, storesenterror.",
    ["result"],
)
smtp_submissions = Counter(
    "moxtw_smtpserver_submission",
    "SMTP submission results (DATA): ok, badfrom, badmessage, domaindisabled, messagelimiterror,"
    " recipientlimiterror, fromiderror, usererror, queueerror.",
    ["result"],
)
authentications = Counter(
    "moxtw_authentication",
    "Authentication attempts by kind (webapi, smtp), variant (httpbasic, plain, login) and"
    " result (ok, badcreds, logindisabled).",
    ["kind", "variant", "result"],
)
authentication_ratelimited = Counter(
    "moxtw_authentication_ratelimited",
    "Authentication attempts refused because the client's IP made too many failed attempts.",
    ["kind"],
)

# --- outgoing queue and delivery ---------------------------------------------------------

#: mox's buckets for mox_queue_delivery_duration_seconds.
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 20, 30, 60, 120)

queue_deliveries = Counter(
    "moxtw_queue_deliveries",
    "Delivery attempt results per queued message (one per recipient): ok, temperror, permerror,"
    " timeout, error (connection, DNS, TLS), suppressed.",
    ["result"],
)
queue_delivery_duration = Histogram(
    "moxtw_queue_delivery_duration_seconds",
    "Outgoing SMTP transactions (one attempt for a batch of messages to one domain), MX lookup"
    " and connecting included, by result (ok, okpartial, temperror, permerror, timeout, error),"
    " transport and tlsmode (opportunistic, requiretls).",
    ["result", "transport", "tlsmode"],
    buckets=DELIVERY_BUCKETS,
)
queue_connections = Counter(
    "moxtw_queue_connection",
    "Outgoing SMTP connection attempts (one per IP dialled) by result: ok, timeout, canceled, error.",
    ["result"],
)
queue_plaintext_fallback = Counter(
    "moxtw_queue_plaintext_fallback",
    "Deliveries retried in plain text after an opportunistic STARTTLS handshake failed.",
)

# --- SMTP server ---------------------------------------------------------------------------

smtp_connections = Counter(
    "moxtw_smtpserver_connection",
    "Incoming SMTP connections by listener (smtp, submission, submissions).",
    ["listener"],
)
smtp_transactions = Counter(
    "moxtw_smtpserver_transaction",
    "Incoming SMTP message transactions (the answer to the message after DATA) by listener and"
    " result: accepted, rejected (5xx), tempfail (4xx), error (internal).",
    ["listener", "result"],
)

# --- suppressions, DSNs, complaints ---------------------------------------------------------

suppressions_added = Counter(
    "moxtw_suppressions_added",
    "Addresses added to an account's suppression list, by source: api (webapi SuppressionAdd),"
    " delivery (failure while delivering), dsn (incoming DSN), complaint (abuse report).",
    ["source"],
)
dsns = Counter(
    "moxtw_dsn",
    "Incoming messages to a FromID address of a sent message: matched (a DSN, recorded as its"
    " event) or unrecognized (not a usable DSN).",
    ["result"],
)
complaints = Counter(
    "moxtw_complaints",
    "Abuse reports (ARF) about a sent message, recorded as complaint events.",
)

# --- store -----------------------------------------------------------------------------------

STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

store_transaction_duration = Histogram(
    "moxtw_store_transaction_duration_seconds",
    "Database transactions from hand-over to the database thread until committed (fsync"
    " included), by kind: batch (a group commit, message files written first) or single.",
    ["kind"],
    buckets=STORE_BUCKETS,
)
store_request_duration = Histogram(
    "moxtw_store_request_duration_seconds",
    "Group-commit requests (a Send, a delivery result, ...) from submission until committed,"
    " waiting for the batch in progress included.",
    buckets=STORE_BUCKETS,
)
store_batch_requests = Histogram(
    "moxtw_store_batch_requests",
    "Requests committed together per group-commit batch.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
)
store_blob_write_duration = Histogram(
    "moxtw_store_blob_write_duration_seconds",
    "Writing and fsyncing one message file.",
    buckets=STORE_BUCKETS,
)


# --- helpers for the instrumented code ---------------------------------------------------------

_children: dict[tuple[Any, tuple[str, ...]], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """``metric.labels(*labels)``, cached: ``labels()`` costs more than the update itself
    (a few microseconds), which counts on the Send path.  Label values must come from
    small fixed sets."""
    key = (metric, labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


def authentication(kind: str, variant: str, result: str) -> None:
    child(authentications, kind, variant, result).inc()


_process = "main"


def set_process(name: str) -> None:
    """Name this process for ``moxtw_webapi_process_requests`` (HTTP workers: ``worker<N>``)."""
    global _process
    _process = name


def webapi_call(method: str, result: str, duration: float) -> None:
    child(webapi_requests, method, result).inc()
    child(webapi_duration, method).observe(duration)
    child(webapi_process_requests, _process).inc()


#: Submission error codes (:class:`moxtw.submit.SubmitError`, webapi codes) to mox's labels.
_SUBMIT_RESULTS = {
    "messageLimitReached": "messagelimiterror",
    "recipientLimitReached": "recipientlimiterror",
    "fromid": "fromiderror",
    "user": "usererror",
    "server": "queueerror",
}


def submission(source: str, result: str) -> None:
    """A webapi Send (``source`` webapi) or SMTP submission (smtp) ended with ``result``:
    ``ok``, one of mox's result names, or a :class:`~moxtw.submit.SubmitError` code."""
    counter = webapi_submissions if source == "webapi" else smtp_submissions
    child(counter, _SUBMIT_RESULTS.get(result, result)).inc()


def delivery_result(ok: bool, permanent: bool, code: int, error: str, timeout: bool = False) -> str:
    """mox's delivery result label for one recipient's (or a transaction's) outcome."""
    if ok:
        return "ok"
    if permanent:
        return "permerror"
    if timeout:
        return "timeout"
    if code >= 400:
        return "temperror"
    # No reply: the connection, DNS or TLS failed, or a reply did not come in time.
    return "timeout" if "timeout" in error else "error"


def queue_result(kind: str, outcome: RecipientOutcome, suppressing: bool) -> None:
    """One queue message's attempt result was written (``kind``: the event written)."""
    if kind == "suppressed":
        result = "suppressed"
    else:
        value = outcome.result.value
        result = delivery_result(
            value == "delivered", value == "permanent", outcome.code, outcome.error, outcome.timeout_after_body
        )
    child(queue_deliveries, result).inc()
    if suppressing:
        suppressions_added.labels("delivery").inc()


def delivery_attempt(result: AttemptResult, duration: float, transport: str, require_tls: bool | None) -> None:
    """One outgoing SMTP transaction (all its recipients) ended after ``duration`` seconds."""
    recipients = result.recipients
    delivered = sum(1 for r in recipients if r.ok)
    if recipients and delivered == len(recipients):
        label = "ok"
    elif delivered:
        label = "okpartial"
    else:
        label = delivery_result(
            False,
            any(r.permanent for r in recipients),
            max((r.code for r in recipients), default=0),
            result.error,
            result.after_data_timeout,
        )
    tlsmode = "requiretls" if require_tls else "opportunistic"
    queue_delivery_duration.labels(label, transport or "direct", tlsmode).observe(duration)


def connection(failure: BaseException | None) -> None:
    """An outgoing connection attempt succeeded (None) or failed with ``failure``."""
    if failure is None:
        result = "ok"
    elif isinstance(failure, (_neterror.TimeoutError, TimeoutError)):
        result = "timeout"
    elif isinstance(failure, (CancelledError, _neterror.ConnectingCancelledError)):
        result = "canceled"
    else:
        result = "error"
    queue_connections.labels(result).inc()


def smtp_listener(options: ServerOptions) -> str:
    if options.implicit_tls:
        return "submissions"
    return "submission" if options.submission else "smtp"


def smtp_transaction(options: ServerOptions, result: str | int) -> None:
    """An SMTP message transaction ended: ``result`` is the reply code or a label."""
    if isinstance(result, int):
        result = "accepted" if result < 400 else "tempfail" if result < 500 else "rejected"
    smtp_transactions.labels(smtp_listener(options), result).inc()


class MatchRecorder:
    """Wraps the ``match(cursor)`` that :func:`moxtw.store.messages.deliver` runs in its
    transaction (:func:`moxtw.store.dsnmatch.match_report`) and remembers what it returned;
    :meth:`count` counts it once the transaction committed (a re-run transaction calls the
    wrapper again, so only the committed run's result is kept)."""

    def __init__(self, match: Callable[[Any], Any]) -> None:
        self.match = match
        self.result: Any = None

    def __call__(self, cursor: Any) -> Any:
        self.result = self.match(cursor)
        return self.result

    def count(self) -> None:
        matched = self.result
        if matched is None:
            return
        if matched.event == "complaint":
            complaints.inc()
            source = "complaint"
        else:
            dsns.labels("unrecognized" if matched.event == "unrecognized" else "matched").inc()
            source = "dsn"
        if matched.suppressing:
            suppressions_added.labels(source).inc()


def store_batch(starts: Sequence[float], now: float) -> None:
    """A group-commit batch committed at ``now``: its requests' submission times (both
    ``time.monotonic()``)."""
    store_batch_requests.observe(len(starts))
    for start in starts:
        store_request_duration.observe(now - start)


# --- queue lengths, counted when scraped ---------------------------------------------------------

#: Queue message states (``moxtw.store.outbox.queue_counts``).
QUEUE_STATES = ("due", "waiting", "inflight", "held")


class QueueStats:
    """``moxtw_queue_length{state}`` and ``moxtw_queue_hold``, counted when scraped.

    :meth:`collect` runs in the web thread pool (prometheus-client's ``MetricsResource``
    is a WSGI resource).  It asks the reactor thread for a count, one read-only request in
    the database's group commit (no fsync of its own, one scan of the queue table), and
    waits for it up to ``timeout`` seconds; scrapes that come while a count is running
    share it.  Called on the reactor thread (never waiting there), it reports the last
    count.  ``clock`` (default ``reactor``) gives the time that decides what is due.
    """

    def __init__(self, db: Database, reactor: Any, *, clock: Any = None, timeout: float = 5.0) -> None:
        self.db = db
        self.reactor = reactor
        self.clock = reactor if clock is None else clock
        self.timeout = timeout
        self.counts: dict[str, int] | None = None
        self._waiting: list[threading.Event] = []
        self._running = False

    def describe(self) -> list[Metric]:
        return self._families(None)

    def collect(self) -> list[Metric]:
        if not threadable.isInIOThread():
            done = threading.Event()
            self.reactor.callFromThread(self.refresh, done)
            done.wait(self.timeout)
        return self._families(self.counts)

    def _families(self, counts: dict[str, int] | None) -> list[Metric]:
        length = GaugeMetricFamily(
            "moxtw_queue_length",
            "Outgoing queue messages (one per recipient) by state: due (to be delivered now),"
            " waiting (for a retry or a future release), inflight (being delivered), held.",
            labels=["state"],
        )
        hold = GaugeMetricFamily("moxtw_queue_hold", "Outgoing queue messages on hold.")
        if counts is not None:
            for state in QUEUE_STATES:
                length.add_metric([state], counts.get(state, 0))
            hold.add_metric([], counts.get("held", 0))
        return [length, hold]

    def refresh(self, done: threading.Event | None = None) -> Deferred[None] | None:
        """Count now (reactor thread); ``done`` is set when the count is in."""
        if done is not None:
            self._waiting.append(done)
        if self._running:
            return None
        self._running = True
        return Deferred.fromCoroutine(self._count())

    async def _count(self) -> None:
        from .store.outbox import queue_counts

        try:
            self.counts = await self.db.run_batched("count queue for metrics", queue_counts, self.clock.seconds())
        except Exception:
            log.failure("counting the queue for metrics")
        finally:
            self._running = False
            waiting, self._waiting = self._waiting, []
            for event in waiting:
                event.set()


# --- what /metrics serves --------------------------------------------------------------------


def prepare_worker_dir(path: str) -> None:
    """Empty (or create) the HTTP workers' metrics directory before they start."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def _merge(into: Metric, extra: Metric) -> None:
    """Add ``extra``'s samples to ``into``'s (same name and labels: values summed)."""
    index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(into.samples)}
    for s in extra.samples:
        i = index.get((s.name, tuple(sorted(s.labels.items()))))
        if i is None:
            into.samples.append(s)
        else:
            into.samples[i] = into.samples[i]._replace(value=into.samples[i].value + s.value)


class Exposition:
    """This process's metrics (``registry``), the HTTP workers' counters and histograms
    from ``worker_dir`` added in, and the ``collectors`` (:class:`QueueStats`)."""

    def __init__(self, registry: CollectorRegistry, worker_dir: str | None, collectors: Iterable[Any]) -> None:
        self.registry = registry
        self.worker_dir = worker_dir
        self.collectors = list(collectors)

    def collect(self) -> list[Metric]:
        families = {m.name: m for m in self.registry.collect()}
        if self.worker_dir is not None and os.path.isdir(self.worker_dir):
            for m in MultiProcessCollector(None, path=self.worker_dir).collect():
                if m.type not in ("counter", "histogram"):
                    continue
                if m.name in families:
                    _merge(families[m.name], m)
                else:
                    families[m.name] = m
        out = list(families.values())
        for collector in self.collectors:
            out.extend(collector.collect())
        return out


def exposition_registry(*, worker_dir: str | None = None, collectors: Iterable[Any] = ()) -> CollectorRegistry:
    """The registry the metrics listener serves (see :class:`Exposition`)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Exposition(REGISTRY, worker_dir, collectors))
    return registry


# TLS certificate of the SMTP listeners (moxtw.tls; main process only)
tls_certificate_not_after = Gauge(
    "moxtw_tls_certificate_not_after_seconds",
    "Expiry (notAfter) of the TLS certificate served on the SMTP listeners, as a Unix time.",
)
tls_reloads = Counter(
    "moxtw_tls_reloads",
    "TLS certificate reloads (SIGHUP) by result (ok, error: the previous certificate stays in use).",
    ["result"],
)

# DNSBL (moxtw.dnsbl: monitoring-only checks of our outgoing IPs)
dnsbl_ips_success = Gauge(
    "moxtw_dnsbl_ips_success",
    "Whether an outgoing IP is not listed in a DNSBL zone: 1 not listed, 0 listed or the lookup "
    "failed, -1 our IPs could not be listed.",
    ["zone", "ip"],
)
dnsbl_lookup_duration = Histogram(
    "moxtw_dnsbl_lookup_duration_seconds",
    "Duration of DNSBL lookups (A, and TXT when listed) by zone and status (pass, fail, temperror).",
    ["zone", "status"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 20, 30),
)
