"""Prometheus metrics of one API process, served at /metrics.

- `oceanstream_api_requests_total{method,route,status}`;
- `oceanstream_api_request_seconds{method,route}` (histogram);
- `oceanstream_api_uploaded_bytes_total`, `oceanstream_api_callbacks_queued_total`;
- `oceanstream_api_result_reads_total{source}`: `GET /v1/videos/{id}` answers by where their
  JSON came from, `cache` or `database` (`workers.api.result_cache`); 304s and 404s are not
  counted.

The route is the path template (`/v1/jobs/{job_id}`), never the path, so ids do not make new
series.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "oceanstream_api_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "oceanstream_api_request_seconds",
            "Time to answer a request (to the first byte of a streamed answer)",
            ["method", "route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.uploaded_bytes = Counter(
            "oceanstream_api_uploaded_bytes_total",
            "Bytes of accepted uploads",
            registry=self.registry,
        )
        self.callbacks_queued = Counter(
            "oceanstream_api_callbacks_queued_total",
            "Completion callbacks queued by this process",
            registry=self.registry,
        )

        self.result_reads = Counter(
            "oceanstream_api_result_reads_total",
            "Results answered, by where their JSON came from (cache or database)",
            ["source"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_of(scope: Scope) -> str:
    """The template of the route that answered (the router leaves it in the scope)."""
    route = scope.get("route")
    if route is not None:
        return str(getattr(route, "path", "other"))
    app = scope.get("app")
    for candidate in getattr(getattr(app, "router", None), "routes", ()):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", "other"))
    return "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP answer; plain ASGI (no task or stream per request)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        elapsed: float | None = None

        async def send_timed(message: Message) -> None:
            nonlocal status, elapsed
            if message["type"] == "http.response.start":
                status = message["status"]
                elapsed = time.perf_counter() - start  # to the first byte, as before
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            if elapsed is None:
                elapsed = time.perf_counter() - start
            count, latency = self._series(scope["method"], route_of(scope), status)
            count.inc()
            latency.observe(elapsed)

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter and latency histogram of (method, route, status), looked up
        once: routes are templates, so there are few."""
        key = (method, route, status)
        series = self._children.get(key)
        if series is None:
            series = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.latency.labels(method, route),
            )
            self._children[key] = series
        return series
