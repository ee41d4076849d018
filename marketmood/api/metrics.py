"""Prometheus metrics of the API on its own registry (one per app, so tests never share counters)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("marketmood_api_requests", "HTTP requests.", ["method", "route", "status"], registry=r)
        self.latency = Histogram("marketmood_api_request_seconds", "Request handling time.", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.texts = Counter("marketmood_api_classified_texts", "Texts classified via POST /classify.", registry=r)
