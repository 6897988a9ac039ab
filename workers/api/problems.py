"""Errors as RFC 9457 problem details (`application/problem+json`), never stack traces.

Every error the API answers has `type`, `title`, `status` and `detail`; an unexpected
exception is logged with its traceback on the server and answered with a bare 500, and any
database or broker URL in a message is masked first. Under `/app/` (the web app) the same
errors are answered by `page`, an HTML page for people, with the same status and message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from tasks.context import is_outage
from workers.api.uploads import BadUpload, UploadTooLarge
from workers.services.errors import ServiceError, Unreachable

log = logging.getLogger("oceanstream.api")

PROBLEM_TYPE = "about:blank"
MEDIA_TYPE = "application/problem+json"
#: Seconds a client is told to wait after a 503 (an outage is usually seconds to minutes).
RETRY_AFTER_S = 5
UNAVAILABLE = "a service the API needs cannot be reached; try again later"

#: Renders an error for a person: (request, status, detail, headers) -> an HTML response.
ErrorPage = Callable[[Request, int, str, "dict[str, str] | None"], Response]
WEB_PREFIX = "/app/"


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


def not_found(what: str) -> HTTPException:
    """The one answer for an unknown id and another tenant's id alike."""
    return HTTPException(status_code=404, detail=f"no {what} with this id")


def install_problem_handlers(app: FastAPI, page: ErrorPage | None = None) -> None:
    def answer(
        request: Request, status: int, detail: str, headers: dict[str, str] | None = None
    ) -> Response:
        if page is not None and request.url.path.startswith(WEB_PREFIX):
            return page(request, status, detail, headers)
        return problem(status, detail, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return answer(request, exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = [
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg', '')}"
            for error in exc.errors()
        ]
        return answer(request, 422, "; ".join(parts) or "invalid request")

    @app.exception_handler(UploadTooLarge)
    async def too_large(request: Request, exc: UploadTooLarge) -> Response:
        # The rest of the body is not read: the client must not reuse the connection.
        return answer(request, 413, str(exc), {"Connection": "close"})

    @app.exception_handler(BadUpload)
    async def bad_upload(request: Request, exc: BadUpload) -> Response:
        return answer(request, 400, str(exc))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        # A dropped upload: expected on any network, and its spool is already removed.
        log.info("client went away during %s %s; nothing stored", request.method, request.url.path)
        return Response(status_code=400)

    @app.exception_handler(Unreachable)
    async def unreachable(request: Request, exc: Unreachable) -> Response:
        log.warning("service unavailable: %s", exc)
        return answer(request, 503, UNAVAILABLE, {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        return answer(request, 400, str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        if is_outage(exc):  # a database or broker outage a route did not map itself
            log.warning(
                "service unavailable on %s %s: %s",
                request.method,
                request.url.path,
                type(exc).__name__,
            )
            return answer(request, 503, UNAVAILABLE, {"Retry-After": str(RETRY_AFTER_S)})
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return answer(request, 500, "internal error; the server log has the details")
