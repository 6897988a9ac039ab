"""`/v1/jobs`: upload videos as a job, list, read and follow jobs, read results, erase."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from workers.api.context import ApiContext
from workers.api.deps import get_caller, get_context
from workers.api.problems import not_found
from workers.api.uploads import UploadLimits, read_upload
from workers.api.views import MAX_PAGE, after_job, encode_cursor, job_cursor, job_json, offset_of
from workers.services.callbacks import address_problem
from workers.services.csv_export import results_csv
from workers.services.erasure import erase_job
from workers.services.errors import UnknownJob
from workers.services.progress import JobView, job_view, list_job_views
from workers.services.results import job_results as rows_of
from workers.services.tenants import Caller
from workers.services.uploads import IdempotencyKeyReused, submit_uploads

if TYPE_CHECKING:
    from workers.settings import Settings

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

#: How often the event stream looks at the job, and how long it follows one at most.
EVENTS_POLL_S = 0.5
EVENTS_MAX_S = 3600.0
HEARTBEAT_S = 15.0

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "One or more videos (repeat the field).",
                        },
                        "callback_url": {
                            "type": "string",
                            "description": "POSTed a signed summary when the job is final.",
                        },
                    },
                }
            }
        },
    }
}


def _view_or_404(context: ApiContext, job_id: str, caller: Caller) -> JobView:
    try:
        return job_view(context.session_factory, job_id, caller.tenant_id)
    except UnknownJob:
        raise not_found("job") from None


async def _checked_callback(url: str | None, settings: Settings) -> str | None:
    """The callback URL to store, or 422: not http(s), no host, over 2048 characters, or
    (`address_problem`) a host that does not resolve or resolves to a non-public address
    unless `callback_allow_private`. The callback worker checks the address again before
    each attempt."""
    if url is None or not url.strip():
        return None
    url = url.strip()
    if len(url) > 2048:
        raise HTTPException(422, "callback_url is longer than 2048 characters")
    try:
        _ = urlsplit(url).port  # raises for a malformed host or a port out of range
    except ValueError:
        raise HTTPException(422, "callback_url is not a valid URL (its host or port)") from None
    # Resolving the host blocks: in a thread, not on the event loop.
    problem = await run_in_threadpool(address_problem, url, settings.callback_allow_private)
    if problem is not None:
        raise HTTPException(422, problem)
    return url


@router.post(
    "",
    status_code=202,
    summary="Upload videos as a new job",
    openapi_extra=UPLOAD_BODY,
    responses={
        413: {"description": "A file or the request is past its size limit"},
        422: {"description": "The Idempotency-Key was used for a different request"},
    },
)
async def create_job(
    request: Request,
    caller: Caller = Depends(get_caller),
    context: ApiContext = Depends(get_context),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", max_length=255),
    callback_url: str | None = Query(None, description="Or as the form field callback_url."),
) -> JSONResponse:
    """Stream the `files` parts to storage, register a job, queue its videos: 202 and the job.

    A repeated `Idempotency-Key` answers with the job the first request made (header
    `Idempotent-Replayed: true`) and stores nothing; the same key with different files or
    callback answers 422.
    """
    settings = context.settings
    limits = UploadLimits(
        max_file_bytes=settings.api_max_file_bytes,
        max_request_bytes=settings.api_max_request_bytes,
        max_files=settings.api_max_files,
    )
    form = await read_upload(
        request.headers.get("content-type", ""),
        request.headers.get("content-length"),
        request.stream(),
        limits,
        settings.api_upload_dir,
    )
    try:
        if not form.files:
            raise HTTPException(400, "no videos: send each in a form field named 'files'")
        target = await _checked_callback(form.fields.get("callback_url") or callback_url, settings)
        try:
            made = await run_in_threadpool(
                submit_uploads,
                settings,
                context.session_factory,
                form.files,
                tenant_id=caller.tenant_id,
                callback_url=target,
                idempotency_key=idempotency_key,
            )
        except IdempotencyKeyReused as exc:
            raise HTTPException(422, str(exc)) from None
        if made.created:
            context.metrics.uploaded_bytes.inc(sum(upload.size for upload in form.files))
    finally:
        form.cleanup()
    view = await run_in_threadpool(job_view, context.session_factory, made.job_id, caller.tenant_id)
    body = job_json(view)
    headers = {
        "Location": body["url"],
        "Idempotent-Replayed": "false" if made.created else "true",
    }
    return JSONResponse(body, status_code=202, headers=headers)


@router.get("", summary="The tenant's jobs, newest first (cursor-paginated)")
def list_jobs(
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    limit: int = Query(20, ge=1, le=MAX_PAGE),
    caller: Caller = Depends(get_caller),
    context: ApiContext = Depends(get_context),
) -> dict[str, Any]:
    views = list_job_views(
        context.session_factory, caller.tenant_id, limit=limit + 1, after=after_job(cursor)
    )
    page = views[:limit]
    more = len(views) > limit
    return {
        "items": [job_json(view) for view in page],
        "next_cursor": job_cursor(page[-1]) if more and page else None,
    }


@router.get("/{job_id}", summary="A job: counts per state, videos, progress")
def get_job(
    job_id: str, caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> dict[str, Any]:
    return job_json(_view_or_404(context, job_id, caller))


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: the job's progress until it is final",
    response_class=StreamingResponse,
)
def job_events(
    job_id: str, caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> StreamingResponse:
    """`event: progress` with the job's JSON whenever it changes, then `event: final`."""
    _view_or_404(context, job_id, caller)

    async def stream() -> AsyncIterator[str]:
        # Async, sleeping on the event loop: an open stream holds no worker thread.
        last, started, beat = "", time.monotonic(), time.monotonic()
        while time.monotonic() - started < EVENTS_MAX_S:
            try:
                view = await run_in_threadpool(
                    job_view, context.session_factory, job_id, caller.tenant_id
                )
            except UnknownJob:
                yield "event: erased\ndata: {}\n\n"
                return
            data = json.dumps(job_json(view))
            if data != last:
                yield f"event: progress\ndata: {data}\n\n"
                last, beat = data, time.monotonic()
            if view.progress.done:
                yield f"event: final\ndata: {data}\n\n"
                return
            if time.monotonic() - beat > HEARTBEAT_S:
                yield ": still working\n\n"
                beat = time.monotonic()
            await asyncio.sleep(EVENTS_POLL_S)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.get("/{job_id}/results", summary="The job's results, a row per video as given")
def job_results(
    job_id: str,
    format: Literal["json", "csv"] = Query("json"),
    cursor: str | None = Query(None, description="JSON only: next_cursor of the previous page"),
    limit: int = Query(MAX_PAGE, ge=1, le=1000),
    caller: Caller = Depends(get_caller),
    context: ApiContext = Depends(get_context),
) -> Any:
    """The CLI's JSON result objects (`results --format json`), in submission order; CSV whole."""
    _view_or_404(context, job_id, caller)
    rows = [row.to_dict() for row in rows_of(context.session_factory, job_id)]
    if format == "csv":
        return Response(
            results_csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="job-{job_id}.csv"'},
        )
    offset = offset_of(cursor)
    page = rows[offset : offset + limit]
    more = offset + limit < len(rows)
    return {"items": page, "next_cursor": encode_cursor(str(offset + limit)) if more else None}


@router.delete("/{job_id}", status_code=204, summary="Erase the job and its videos")
def delete_job(
    job_id: str, caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> Response:
    """Erase the job, its videos, frames, features, predictions and attention."""
    try:
        erase_job(context.settings, context.session_factory, job_id, caller.tenant_id)
    except UnknownJob:
        raise not_found("job") from None
    return Response(status_code=204)
