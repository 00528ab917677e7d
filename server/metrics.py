"""Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

SESSIONS = Gauge("shoptalk_sessions", "Open realtime sessions")
TURNS = Counter("shoptalk_turns_total", "Completed user turns (final transcripts)")
ERRORS = Counter("shoptalk_errors_total", "Error events sent, by code", ["code"])
RESPONSE_LATENCY = Histogram(
    "shoptalk_response_seconds",
    "Reply latency from the start of the response, by stage",
    ["stage"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
SEARCHES = Counter("shoptalk_searches_total", "HTTP searches")


class BatcherCollector:
    """Requests and batches of the shared micro-batchers (``assistant.runtime.batching``), read at scrape time.

    Mean batch size = ``shoptalk_batcher_requests_total`` / ``shoptalk_batcher_batches_total``.
    """

    def __init__(self) -> None:
        self.batchers: dict[str, Any] = {}

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("shoptalk_batcher_requests", "Requests served by a micro-batcher",
                                       labels=["batcher"])
        batches = CounterMetricFamily("shoptalk_batcher_batches", "Batches a micro-batcher ran", labels=["batcher"])
        for name, batcher in list(self.batchers.items()):
            summary = batcher.summary()
            requests.add_metric([name], summary.get("submitted", 0))
            batches.add_metric([name], summary["batches"])
        yield requests
        yield batches


BATCHERS = BatcherCollector()
REGISTRY.register(BATCHERS)  # type: ignore[arg-type]


def watch_batchers(batchers: dict[str, Any]) -> None:
    """Export these batchers' counts (the latest app's, under their names)."""
    BATCHERS.batchers.update(batchers)
