"""The FastAPI application factory (`oceanstream serve` runs what it returns).

Nothing is built at import: `create_app(settings, session_factory)` makes the app with its
rate limiter (Redis), metrics, middleware and routers, and its lifespan starts and stops the
housekeeping thread (callbacks, retention).
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from workers import package_version
from workers.api import web
from workers.api.auth import KeyCache
from workers.api.background import Housekeeper
from workers.api.context import ApiContext
from workers.api.metrics import ApiMetrics, MetricsMiddleware
from workers.api.problems import install_problem_handlers
from workers.api.rate_limit import RateLimiter
from workers.api.result_cache import ResultCache
from workers.api.routers import health, jobs, tenant, videos
from workers.api.security import SecurityHeaders
from workers.broker.kombu_redis import redis_url

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

DESCRIPTION = """Apparent Big Five (OCEAN) impressions of videos, with cross-attention maps.

Every `/v1` route needs `Authorization: Bearer KEY` (`oceanstream keys create --tenant NAME`).
A key sees only its tenant's jobs and videos; another tenant's id answers 404 like an unknown
one. `GET /v1/tenant` names the key's tenant; an admin key (`keys create --admin`) also sees
and may rotate the webhook secret that signs the tenant's completion callbacks.
Scores made by an untrained model (`model_trained: false`) are no assessment of anyone.
"""


def create_app(settings: Settings, session_factory: sessionmaker) -> FastAPI:
    import redis
    import redis.asyncio

    try:
        counter_url = redis_url(settings.broker_url.get_secret_value())
    except ValueError:
        counter_url = settings.broker_url.get_secret_value()
    off = settings.api_read_path_off  # for benchmarks (docs/benchmarks.md)
    limiter = RateLimiter(
        redis.Redis.from_url(counter_url, socket_timeout=2.0, socket_connect_timeout=2.0),
        settings.api_rate_limit,
        settings.api_rate_window_s,
        async_client=redis.asyncio.Redis.from_url(
            counter_url,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
            single_connection_client="rate" not in off,
        ),
        batched="rate" not in off,
    )
    metrics = ApiMetrics()
    results = ResultCache(session_factory, metrics.result_reads, batched_checks="stamps" not in off)
    context = ApiContext(settings, session_factory, limiter, metrics, KeyCache(), results)
    housekeeper = Housekeeper(context)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        housekeeper.start()
        # What start-up made (modules, routes, the ORM's mappers) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it, and the event
        # loop no longer stops for about 0.1 s every few thousand requests (docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            housekeeper.stop()
            await limiter.aclose()
            await results.aclose()

    app = FastAPI(
        title="OceanStream",
        version=package_version(),
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.context = context
    install_problem_handlers(app, page=web.error_page)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.api_cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Retry-After", "Idempotent-Replayed"],
        )
    app.add_middleware(SecurityHeaders)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(videos.router)
    app.include_router(tenant.router)
    _add_web_app(app)
    return app


def _add_web_app(app: FastAPI) -> None:
    from fastapi import Request
    from fastapi.responses import RedirectResponse, Response
    from fastapi.staticfiles import StaticFiles

    app.include_router(web.router)
    app.mount("/app/static", StaticFiles(directory=web.STATIC_DIR), name="static")

    @app.exception_handler(web.SignInRequired)
    async def sign_in(request: Request, exc: web.SignInRequired) -> RedirectResponse:
        return RedirectResponse("/app/login", status_code=303)

    @app.get("/", include_in_schema=False)
    async def home() -> RedirectResponse:
        return RedirectResponse("/app/jobs", status_code=303)

    icon = (web.STATIC_DIR / "favicon.svg").read_bytes()

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        # Browsers ask for /favicon.ico whatever the page links; an SVG answers them all.
        return Response(
            icon, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"}
        )
