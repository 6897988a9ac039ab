"""Prometheus metrics of one API process, served at /metrics.

- `oceanstream_api_requests_total{method,route,status}`;
- `oceanstream_api_request_seconds{method,route}` (histogram);
- `oceanstream_api_uploaded_bytes_total`, `oceanstream_api_callbacks_queued_total`.

The route is the path template (`/v1/jobs/{job_id}`), never the path, so ids do not make new
series.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match


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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def route_of(request: Request) -> str:
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


class MetricsMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: object, metrics: ApiMetrics) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.metrics = metrics

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = route_of(request)
            self.metrics.requests.labels(request.method, route, str(status)).inc()
            self.metrics.latency.labels(request.method, route).observe(time.perf_counter() - start)
