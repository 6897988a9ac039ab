"""Response headers every answer carries, and the per-key request rate limit (in Redis).

The rate limit is a fixed window per API key, counted in Redis so it holds across API
processes: `oceanstream:api:rate:<key id>:<window number>`, expiring with its window. Past
the limit the answer is 429 with `Retry-After` (seconds to the next window). When Redis
cannot be reached the request goes through (the limit protects the service; an outage of
the counter must not take the API down with it) and a warning is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("oceanstream.api")

#: No inline script or style anywhere; pages load their own files only.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
#: The Swagger UI at /docs loads its script and styles from a CDN and runs one inline script.
DOCS_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: a browser then sends a form post's Origin, which the web
    # app checks (under no-referrer it sends "null").
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        policy = (
            DOCS_CONTENT_SECURITY_POLICY
            if request.url.path in ("/docs", "/docs/oauth2-redirect")
            else CONTENT_SECURITY_POLICY
        )
        response.headers.setdefault("Content-Security-Policy", policy)
        return response


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    retry_after_s: int


class RateLimiter:
    """`limit` requests per `window_s` seconds per key, counted in Redis."""

    def __init__(self, redis_client: Any, limit: int, window_s: int) -> None:
        self.redis = redis_client
        self.limit = limit
        self.window_s = window_s

    def check(self, key_id: str) -> RateVerdict:
        now = time.time()
        window = int(now // self.window_s)
        counter = f"oceanstream:api:rate:{key_id}:{window}"
        retry_after = max(1, int((window + 1) * self.window_s - now + 0.999))
        try:
            pipe = self.redis.pipeline()
            pipe.incr(counter)
            pipe.expire(counter, self.window_s + 1)
            count = int(pipe.execute()[0])
        except Exception as exc:  # redis raises its own connection and timeout errors
            log.warning("rate limit not counted (Redis unreachable: %s)", type(exc).__name__)
            return RateVerdict(True, 0)
        return RateVerdict(count <= self.limit, retry_after)
