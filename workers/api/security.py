"""Response headers every answer carries, and the per-key request rate limit (in Redis).

The rate limit is a fixed window per API key, counted in Redis so it holds across API
processes: `oceanstream:api:rate:<key id>:<window number>`, expiring with its window (a
one-command Lua script counts and sets the expiry). Past
the limit the answer is 429 with `Retry-After` (seconds to the next window). When Redis
cannot be reached the request goes through (the limit protects the service; an outage of
the counter must not take the API down with it) and a warning is logged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class SecurityHeaders:
    """Adds `SECURITY_HEADERS` and a Content-Security-Policy to every answer that lacks them;
    plain ASGI (no task or stream per request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = (
            DOCS_CONTENT_SECURITY_POLICY
            if scope["path"] in ("/docs", "/docs/oauth2-redirect")
            else CONTENT_SECURITY_POLICY
        )

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    retry_after_s: int


#: Counts one request and returns the window's count; the first count of a window sets its
#: expiry. One command, one round trip, atomic (no MULTI/EXEC around an INCR and an EXPIRE).
COUNT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RateLimiter:
    """`limit` requests per `window_s` seconds per key, counted in Redis.

    One round trip per check (`COUNT_SCRIPT`, by its SHA once Redis knows it). `check_async`
    counts on the asyncio client, so an API route spends no thread on it; `check` is for
    synchronous code.
    """

    def __init__(
        self, redis_client: Any, limit: int, window_s: int, async_client: Any = None
    ) -> None:
        self.redis = redis_client
        self.async_redis = async_client
        self.limit = limit
        self.window_s = window_s
        self._count = redis_client.register_script(COUNT_SCRIPT)
        self._count_async = (
            None if async_client is None else async_client.register_script(COUNT_SCRIPT)
        )

    def check(self, key_id: str) -> RateVerdict:
        counter, retry_after = self._window(key_id)
        try:
            count = int(self._count(keys=[counter], args=[self.window_s + 1]))
        except Exception as exc:  # redis raises its own connection and timeout errors
            return self._uncounted(exc)
        return RateVerdict(count <= self.limit, retry_after)

    async def check_async(self, key_id: str) -> RateVerdict:
        if self._count_async is None:
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self.check, key_id)
        counter, retry_after = self._window(key_id)
        try:
            count = int(await self._count_async(keys=[counter], args=[self.window_s + 1]))
        except Exception as exc:  # redis raises its own connection and timeout errors
            return self._uncounted(exc)
        return RateVerdict(count <= self.limit, retry_after)

    def _window(self, key_id: str) -> tuple[str, int]:
        """The counter of the current window and the seconds to the next one."""
        now = time.time()
        window = int(now // self.window_s)
        retry_after = max(1, int((window + 1) * self.window_s - now + 0.999))
        return f"oceanstream:api:rate:{key_id}:{window}", retry_after

    def _uncounted(self, exc: Exception) -> RateVerdict:
        log.warning("rate limit not counted (Redis unreachable: %s)", type(exc).__name__)
        return RateVerdict(True, 0)

    async def aclose(self) -> None:
        if self.async_redis is not None:
            await self.async_redis.aclose()
