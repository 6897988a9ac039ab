"""`/healthz` (the process is up), `/readyz` (database and broker reachable), `/metrics`."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from workers.api.context import ApiContext
from workers.api.deps import get_context
from workers.services.jobs import check_broker

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and the broker can be reached")
def readyz(context: ApiContext = Depends(get_context)) -> JSONResponse:
    from sqlalchemy import text

    checks: dict[str, str] = {}
    try:
        with context.session_factory() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception:  # the reason stays in no answer: it may name a host or a user
        checks["database"] = "unreachable"
    try:
        check_broker(context.settings.broker_url.get_secret_value(), timeout_s=2.0)
        checks["broker"] = "ok"
    except Exception:
        checks["broker"] = "unreachable"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )


@router.get("/metrics", summary="Prometheus metrics of this process")
def metrics(context: ApiContext = Depends(get_context)) -> Response:
    return Response(context.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
