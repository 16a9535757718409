"""Prometheus metrics of the receiver, served as text by ``GET /metrics``.

Under gunicorn (``flavours serve``) every worker process writes its samples to
``PROMETHEUS_MULTIPROC_DIR`` and ``/metrics`` aggregates them, so a scrape sees the whole server
whichever worker answers it.
"""

from __future__ import annotations

import functools
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "flavours_webhook_requests_total",
    "Webhook requests by topic and HTTP status.",
    ["topic", "status"],
)
LANDED_EVENTS = Counter(
    "flavours_landed_events_total", "Events made durable in the landing store.", ["topic"]
)
LANDING_FAILURES = Counter(
    "flavours_landing_failures_total", "Batches the landing store failed to make durable."
)
BATCH_EVENTS = Histogram(
    "flavours_batch_events",
    "Events per landed object.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
BATCH_WRITE_SECONDS = Histogram(
    "flavours_batch_write_seconds",
    "Time to make one batch durable (write, fsync, rename; or PUT).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ACK_LATENCY = Histogram(
    "flavours_ack_latency_seconds",
    "Time from a worker thread taking a webhook to answering it (queueing for a thread excluded).",
    ["topic"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@functools.cache
def request_counter(topic: str, status: int) -> Counter:
    """``REQUESTS`` for one topic and status (cached: ``labels`` takes a lock every call)."""
    return REQUESTS.labels(topic, str(status))


@functools.cache
def ack_latency(topic: str) -> Histogram:
    """``ACK_LATENCY`` for one topic (cached like ``request_counter``)."""
    return ACK_LATENCY.labels(topic)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type, across worker processes when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
