"""FastAPI dependencies: the settings, the session factory, and the calling tenant."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Depends, HTTPException, Request

from workers.api.auth import RateLimited, admit
from workers.api.context import ApiContext
from workers.services.tenants import Caller

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

BEARER = {"WWW-Authenticate": "Bearer"}


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

    The check itself is `workers.api.auth.admit`, shared with the web app."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "send an API key as 'Authorization: Bearer KEY'", BEARER)
    try:
        caller = await admit(context, token.strip())
    except RateLimited as exc:
        raise HTTPException(429, str(exc), {"Retry-After": str(exc.retry_after_s)}) from exc
    if caller is None:
        raise HTTPException(401, "the API key is unknown or revoked", BEARER)
    request.state.caller = caller
    return caller
