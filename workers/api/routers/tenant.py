"""`/v1/tenant`: the caller's own tenant; its webhook secret for admin keys only."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from workers.api.context import ApiContext
from workers.api.deps import get_caller, get_context
from workers.services.tenants import Caller, TenantInfo, UnknownTenant, tenant_info
from workers.services.tenants import rotate_webhook_secret as rotate

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])

#: A secret in an answer must not be kept by a browser or a proxy.
NO_STORE = {"Cache-Control": "no-store"}


def _tenant_json(info: TenantInfo, *, admin: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"id": info.id, "name": info.name, "admin": admin}
    if info.webhook_secret is not None:
        body["webhook_secret"] = info.webhook_secret
    return body


def _gone() -> HTTPException:
    # The key was checked less than the key cache's lifetime ago and its tenant has been
    # deleted since: answered as a revoked key would be a moment later.
    return HTTPException(401, "the API key is unknown or revoked", {"WWW-Authenticate": "Bearer"})


@router.get("", summary="The caller's tenant (its webhook secret for an admin key)")
async def get_tenant(
    caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> JSONResponse:
    """The tenant's id and name; an admin key also gets `webhook_secret`, the secret that
    signs the tenant's completion callbacks."""
    try:
        info = await run_in_threadpool(
            tenant_info, context.session_factory, caller.tenant_id, with_secret=caller.admin
        )
    except UnknownTenant:
        raise _gone() from None
    return JSONResponse(_tenant_json(info, admin=caller.admin), headers=NO_STORE)


@router.post(
    "/webhook-secret",
    summary="Rotate the tenant's webhook secret (admin keys only)",
    responses={403: {"description": "The key is not an admin key of its tenant"}},
)
async def rotate_webhook_secret(
    caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> JSONResponse:
    """A new random webhook secret, stored and shown once in this answer; callback attempts
    from now on are signed with it, and the old one no longer verifies them."""
    if not caller.admin:
        raise HTTPException(403, "rotating the webhook secret needs an admin key of the tenant")
    try:
        info = await run_in_threadpool(rotate, context.session_factory, caller.tenant_id)
    except UnknownTenant:
        raise _gone() from None
    return JSONResponse(_tenant_json(info, admin=True), headers=NO_STORE)
