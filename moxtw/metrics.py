"""Prometheus metrics (prometheus-client), served on the metrics listener."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
