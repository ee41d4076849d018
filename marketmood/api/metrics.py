"""Prometheus metrics of the API on its own registry (one per app, so tests never share counters)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# The method label takes these values only: the server accepts any token as a method, and one series per
# invented method would let anyone grow /metrics without bound.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("marketmood_api_requests", "HTTP requests.", ["method", "route", "status"], registry=r)
        self.latency = Histogram("marketmood_api_request_seconds", "Request handling time.", ["route"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.texts = Counter("marketmood_api_classified_texts", "Texts classified via POST /classify.", registry=r)


class RequestMetrics:
    """Pure ASGI middleware counting requests by route template and timing them (no BaseHTTPMiddleware: it
    would wrap errors raised while the body streams, e.g. the body-size limit, in an exception group)."""

    def __init__(self, app: Any, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _KNOWN_METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
