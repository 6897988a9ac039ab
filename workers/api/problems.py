"""Errors as RFC 9457 problem details (`application/problem+json`), never stack traces.

Every error the API answers has `type`, `title`, `status` and `detail`; an unexpected
exception is logged with its traceback on the server and answered with a bare 500, and any
database or broker URL in a message is masked first.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tasks.context import is_outage
from workers.api.uploads import BadUpload, UploadTooLarge
from workers.services.errors import ServiceError, Unreachable

log = logging.getLogger("oceanstream.api")

PROBLEM_TYPE = "about:blank"
MEDIA_TYPE = "application/problem+json"
#: Seconds a client is told to wait after a 503 (an outage is usually seconds to minutes).
RETRY_AFTER_S = 5


def problem(
    status: int, detail: str, *, title: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    from http import HTTPStatus

    body: dict[str, Any] = {
        "type": PROBLEM_TYPE,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def unavailable() -> JSONResponse:
    """503 for an outage: names no service, says when to try again (`RETRY_AFTER_S`)."""
    return problem(
        503,
        "a service the API needs cannot be reached; try again later",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def not_found(what: str) -> HTTPException:
    """The one answer for an unknown id and another tenant's id alike."""
    return HTTPException(status_code=404, detail=f"no {what} with this id")


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        ]
        return problem(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge) -> JSONResponse:
        # The rest of the body is not read: the client must not reuse the connection.
        return problem(413, str(exc), headers={"Connection": "close"})

    @app.exception_handler(BadUpload)
    async def bad_upload(request: Request, exc: BadUpload) -> JSONResponse:
        return problem(400, str(exc))

    @app.exception_handler(Unreachable)
    async def unreachable(request: Request, exc: Unreachable) -> JSONResponse:
        log.warning("service unavailable: %s", exc)
        return unavailable()

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return problem(400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_outage(exc):  # a database or broker outage a route did not map itself
            log.warning(
                "service unavailable on %s %s: %s",
                request.method,
                request.url.path,
                type(exc).__name__,
            )
            return unavailable()
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal error; the server log has the details")
