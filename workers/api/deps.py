"""FastAPI dependencies: the settings, the session factory, and the calling tenant."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from fastapi import Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from tasks.context import is_outage
from workers.api.context import ApiContext
from workers.services.errors import Unreachable
from workers.services.tenants import Caller, authenticate, hash_key

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

BEARER = {"WWW-Authenticate": "Bearer"}
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


# These are `async def` although they never wait: FastAPI runs a plain `def` dependency in
# its thread pool, a thread hand-off per request for an attribute read.


def request_context(request: Request) -> ApiContext:
    """The process's `ApiContext` (set on the app by `create_app`)."""
    context: ApiContext = request.app.state.context
    return context


async def get_context(request: Request) -> ApiContext:
    return request_context(request)


async def get_settings(context: ApiContext = Depends(get_context)) -> Settings:
    return context.settings


async def get_session_factory(context: ApiContext = Depends(get_context)) -> sessionmaker:
    return context.session_factory


async def get_caller(request: Request, context: ApiContext = Depends(get_context)) -> Caller:
    """The key's tenant; 401 without a valid key, 429 past the key's rate limit, 503 (the
    problem handlers' answer to `Unreachable`) while the database cannot be read.

    Async: a recently checked key and the rate count (asyncio Redis) take no thread."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "send an API key as 'Authorization: Bearer KEY'", BEARER)
    try:
        if "keys" in context.settings.api_read_path_off:
            caller = await run_in_threadpool(authenticate, context.session_factory, token.strip())
        else:
            caller = await context.keys.authenticate_async(context.session_factory, token.strip())
    except Exception as exc:
        if is_outage(exc):  # the database is down: 503 with Retry-After, not a 500
            raise Unreachable(f"cannot check the API key: {type(exc).__name__}") from exc
        raise
    if caller is None:
        raise HTTPException(401, "the API key is unknown or revoked", BEARER)
    verdict = await context.limiter.check_async(caller.key_id)
    if not verdict.allowed:
        raise HTTPException(
            429,
            f"more than {context.limiter.limit} requests in {context.limiter.window_s} s",
            {"Retry-After": str(verdict.retry_after_s)},
        )
    request.state.caller = caller
    return caller
