"""Prometheus metrics (``GET /metrics``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
