"""FastAPI dependencies: the settings, the session factory, and the calling tenant."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from fastapi import Depends, HTTPException, Request

from workers.api.context import ApiContext
from workers.services.tenants import Caller, authenticate, hash_key

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

BEARER = {"WWW-Authenticate": "Bearer"}
#: How long one API process trusts a key check: a revoked key is refused everywhere within it.
KEY_CACHE_S = 2.0


class KeyCache:
    """Recent key checks (by the key's hash), so a burst of requests costs one database read."""

    def __init__(self, ttl_s: float = KEY_CACHE_S, size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.size = size
        self._checked: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, session_factory: sessionmaker, key: str) -> Caller | None:
        digest = hash_key(key)
        now = time.monotonic()
        with self._lock:
            hit = self._checked.get(digest)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        caller = authenticate(session_factory, key)
        with self._lock:
            if len(self._checked) >= self.size:
                self._checked.clear()
            self._checked[digest] = (now, caller)
        return caller


def get_context(request: Request) -> ApiContext:
    context: ApiContext = request.app.state.context
    return context


def get_settings(context: ApiContext = Depends(get_context)) -> Settings:
    return context.settings


def get_session_factory(context: ApiContext = Depends(get_context)) -> sessionmaker:
    return context.session_factory


def get_caller(request: Request, context: ApiContext = Depends(get_context)) -> Caller:
    """The key's tenant; 401 without a valid key, 429 past the key's rate limit."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "send an API key as 'Authorization: Bearer KEY'", BEARER)
    caller = context.keys.authenticate(context.session_factory, token.strip())
    if caller is None:
        raise HTTPException(401, "the API key is unknown or revoked", BEARER)
    verdict = context.limiter.check(caller.key_id)
    if not verdict.allowed:
        raise HTTPException(
            429,
            f"more than {context.limiter.limit} requests in {context.limiter.window_s} s",
            {"Retry-After": str(verdict.retry_after_s)},
        )
    request.state.caller = caller
    return caller
