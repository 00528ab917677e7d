"""Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

import asyncio
from collections import deque
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
LOOP_LAG = Histogram(
    "shoptalk_event_loop_lag_seconds",
    "How late the event loop woke a short timer: time it spent on work that blocked every session",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOOP_LAG_MAX = Gauge("shoptalk_event_loop_lag_max_seconds", "Largest event-loop lag of the last LAG_WINDOW_S seconds")
LAG_TICK_S = 0.02
LAG_WINDOW_S = 2.0


async def watch_event_loop(tick_s: float = LAG_TICK_S, window_s: float = LAG_WINDOW_S) -> None:
    """Measure the event loop's lag until cancelled: a timer of `tick_s` that wakes late was held up by blocking work.

    Every lag goes to `LOOP_LAG`; the largest of the last `window_s` seconds to `LOOP_LAG_MAX`.
    """
    loop = asyncio.get_running_loop()
    recent: deque[tuple[float, float]] = deque()
    while True:
        start = loop.time()
        await asyncio.sleep(tick_s)
        now = loop.time()
        lag = max(0.0, now - start - tick_s)
        LOOP_LAG.observe(lag)
        recent.append((now, lag))
        while recent[0][0] < now - window_s:
            recent.popleft()
        LOOP_LAG_MAX.set(max(value for _, value in recent))


class BatcherCollector:
    """Requests and batches of the shared micro-batchers (``assistant.runtime.scheduling``), read at scrape time.

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
