"""The API key check and the rate limit, written once for `/v1` (a bearer key) and the web app
(a cookie): `admit` answers who is calling, or raises `RateLimited` or `Unreachable`."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from starlette.concurrency import run_in_threadpool

from tasks.context import is_outage
from workers.services.errors import Unreachable
from workers.services.tenants import Caller, authenticate, hash_key

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.api.context import ApiContext

#: How long one API process trusts a key check: a revoked key is refused everywhere within it.
KEY_CACHE_S = 2.0


class KeyCache:
    """Recent key checks (by the key's hash), so a burst of requests costs one database read.

    A check, refusals included, is trusted for `ttl_s` seconds: a key revoked through another
    process or the CLI is refused by this one at most that long after.
    """

    def __init__(self, ttl_s: float = KEY_CACHE_S, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._checked: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, session_factory: sessionmaker, key: str) -> Caller | None:
        digest, read_at = hash_key(key), time.monotonic()
        hit = self._recent(digest, read_at)
        if hit is not None:
            return hit[1]
        return self._remember(digest, read_at, authenticate(session_factory, key))

    async def authenticate_async(self, session_factory: sessionmaker, key: str) -> Caller | None:
        """As `authenticate`; a recent check costs no thread, only a miss reads in one."""
        digest, read_at = hash_key(key), time.monotonic()
        hit = self._recent(digest, read_at)
        if hit is not None:
            return hit[1]
        caller = await run_in_threadpool(authenticate, session_factory, key)
        return self._remember(digest, read_at, caller)

    def _recent(self, digest: str, now: float) -> tuple[float, Caller | None] | None:
        with self._lock:
            hit = self._checked.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit
        return None

    def _remember(self, digest: str, read_at: float, caller: Caller | None) -> Caller | None:
        """Kept as of `read_at`, taken before the read: its age is never understated."""
        with self._lock:
            if len(self._checked) >= self.size:
                self._checked.clear()
            self._checked[digest] = (read_at, caller)
        return caller


class RateLimited(Exception):
    """The key made more than `limit` requests in `window_s` seconds."""

    def __init__(self, limit: int, window_s: int, retry_after_s: int) -> None:
        super().__init__(f"more than {limit} requests in {window_s} s")
        self.retry_after_s = retry_after_s


async def admit(context: ApiContext, key: str) -> Caller | None:
    """The key's tenant, counted against its rate limit; None for an unknown or revoked key.

    Raises `Unreachable` while the database cannot be read (the problem handlers answer 503
    with Retry-After), `RateLimited` past the key's limit. A recently checked key and the rate
    count (asyncio Redis) take no thread."""
    try:
        if "keys" in context.settings.api_read_path_off:
            caller = await run_in_threadpool(authenticate, context.session_factory, key)
        else:
            caller = await context.keys.authenticate_async(context.session_factory, key)
    except Exception as exc:
        if is_outage(exc):
            raise Unreachable(f"cannot check the API key: {type(exc).__name__}") from exc
        raise
    if caller is None:
        return None
    limiter = context.limiter
    verdict = await limiter.check_async(caller.key_id)
    if not verdict.allowed:
        raise RateLimited(limiter.limit, limiter.window_s, verdict.retry_after_s)
    return caller
