"""The web app: server-rendered pages over the same services as `/v1`, for people.

Sign-in stores the API key in an HttpOnly, SameSite=Strict cookie (Secure over https); every
form carries a CSRF token derived from the key (HMAC), checked on POST, and a POST whose
Origin is another site is refused. Pages use no inline script or style (the CSP forbids
them): `static/app.js` follows a job's events, bars are `<meter>` elements.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from core.status import VideoStatus
from core.traits import TRAITS
from workers.api.auth import RateLimited, admit
from workers.api.context import ApiContext
from workers.api.deps import get_context
from workers.api.routers.jobs import job_events
from workers.api.routers.videos import get_attention_png, get_timeline_png
from workers.api.uploads import UploadLimits, read_upload
from workers.api.views import after_job, job_cursor, job_json
from workers.services.errors import UnknownJob
from workers.services.progress import job_view, list_job_views
from workers.services.results import job_results
from workers.services.tenants import Caller, authenticate
from workers.services.uploads import submit_uploads

router = APIRouter(prefix="/app", include_in_schema=False)
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
STATIC_DIR = Path(__file__).with_name("static")
COOKIE = "oceanstream_key"
PAGE = 20
#: What a person reads for an unknown, erased or another tenant's id (one answer for all).
GONE = "there is no {what} with this id: it was erased, or the link is wrong"


class SignInRequired(Exception):
    """No valid key in the cookie: the handler sends the browser to the sign-in page."""


def csrf_token(key: str) -> str:
    return hmac.new(key.encode(), b"oceanstream-csrf", hashlib.sha256).hexdigest()


async def web_caller(request: Request, context: ApiContext = Depends(get_context)) -> Caller:
    key = request.cookies.get(COOKIE, "")
    try:
        caller = await admit(context, key) if key else None
    except RateLimited as exc:
        raise HTTPException(
            429, "too many requests", {"Retry-After": str(exc.retry_after_s)}
        ) from exc
    if caller is None:
        raise SignInRequired
    return caller


def _same_site(request: Request) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") != str(request.base_url).rstrip("/"):
        raise HTTPException(403, "cross-site form posts are refused")


def _check_csrf(request: Request, token: str | None) -> None:
    _same_site(request)
    key = request.cookies.get(COOKIE, "")
    if not token or not hmac.compare_digest(token, csrf_token(key)):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page")


#: Headings of the error page, in the reader's words; other statuses use HTTP's phrase.
ERROR_TITLES = {
    400: "That did not work",
    403: "Refused",
    404: "Not found",
    413: "Upload too large",
    422: "That did not work",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Try again in a moment",
}


def error_page(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """The app's own page for an error: what happened, in a sentence, and a way back."""
    message = detail[:1].upper() + detail[1:]
    if not message.endswith((".", "?", "!")):
        message += "."
    title = ERROR_TITLES.get(status) or HTTPStatus(status).phrase
    signed_in = bool(request.cookies.get(COOKIE))
    response = _page(
        request,
        "error.html",
        status=status,
        title=title,
        message=message,
        back="/app/jobs" if signed_in else "/app/login",
        back_label="Back to your jobs" if signed_in else "Sign in",
    )
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _page(request: Request, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    key = request.cookies.get(COOKIE, "")
    values.setdefault("csrf", csrf_token(key) if key else "")
    return TEMPLATES.TemplateResponse(request, name, values, status_code=status)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", error=None)


@router.post("/login")
async def login(request: Request, context: ApiContext = Depends(get_context)) -> Response:
    _same_site(request)
    form = await request.form(max_files=0, max_fields=4)
    key = str(form.get("key", "")).strip()
    caller = await run_in_threadpool(authenticate, context.session_factory, key) if key else None
    if caller is None:
        return _page(request, "login.html", status=401, error="That key is unknown or revoked.")
    response = RedirectResponse("/app/jobs", status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/app",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=4)
    _check_csrf(request, str(form.get("csrf", "")))
    response = RedirectResponse("/app/login", status_code=303)
    response.delete_cookie(COOKIE, path="/app")
    return response


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    cursor: str | None = None,
    caller: Caller = Depends(web_caller),
    context: ApiContext = Depends(get_context),
) -> HTMLResponse:
    views = list_job_views(
        context.session_factory, caller.tenant_id, limit=PAGE + 1, after=after_job(cursor)
    )
    page = views[:PAGE]
    next_cursor = job_cursor(page[-1]) if len(views) > PAGE and page else None
    return _page(
        request,
        "jobs.html",
        jobs=[job_json(view) for view in page],
        next_cursor=next_cursor,
        max_files=context.settings.api_max_files,
    )


@router.post("/jobs")
async def upload(
    request: Request,
    caller: Caller = Depends(web_caller),
    context: ApiContext = Depends(get_context),
) -> Response:
    _same_site(request)
    settings = context.settings
    form = await read_upload(
        request.headers.get("content-type", ""),
        request.headers.get("content-length"),
        request.stream(),
        UploadLimits(
            settings.api_max_file_bytes, settings.api_max_request_bytes, settings.api_max_files
        ),
        settings.api_upload_dir,
    )
    try:
        _check_csrf(request, form.fields.get("csrf"))
        if not form.files:
            raise HTTPException(400, "choose one or more videos")
        made = await run_in_threadpool(
            submit_uploads,
            settings,
            context.session_factory,
            form.files,
            tenant_id=caller.tenant_id,
        )
    finally:
        form.cleanup()
    return RedirectResponse(f"/app/jobs/{made.job_id}", status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    job_id: str,
    caller: Caller = Depends(web_caller),
    context: ApiContext = Depends(get_context),
) -> HTMLResponse:
    try:
        view = job_view(context.session_factory, job_id, caller.tenant_id)
    except UnknownJob:
        raise HTTPException(404, GONE.format(what="job")) from None
    rows = {row.video_id: row.to_dict() for row in job_results(context.session_factory, job_id)}
    return _page(request, "job.html", job=job_json(view), rows=rows, traits=TRAITS)


@router.get("/jobs/{job_id}/events")
def job_page_events(
    job_id: str, caller: Caller = Depends(web_caller), context: ApiContext = Depends(get_context)
) -> StreamingResponse:
    return job_events(job_id, caller, context)


@router.get("/videos/{video_id}", response_class=HTMLResponse)
def video_page(
    request: Request,
    video_id: str,
    job: str | None = None,
    person: str | None = None,
    segment: str | None = None,
    caller: Caller = Depends(web_caller),
    context: ApiContext = Depends(get_context),
) -> HTMLResponse:
    answer = context.results.read(caller.tenant_id, video_id)
    if answer is None or answer.body is None:
        raise HTTPException(404, GONE.format(what="video"))
    row = json.loads(answer.body)
    chosen = {"person": _index(person), "segment": _index(segment)}
    query = urlencode({name: value for name, value in chosen.items() if value is not None})
    return _page(
        request,
        "video.html",
        row=row,
        traits=TRAITS,
        final=VideoStatus(row["status"]).is_final,
        job_id=job if job and _JOB_ID.fullmatch(job) else None,
        chosen_person=chosen["person"],
        chosen_segment=chosen["segment"],
        attention_query=f"?{query}" if query else "",
    )


_JOB_ID = re.compile(r"[0-9a-fA-F-]{8,64}")


def _index(value: str | None) -> int | None:
    """A person's or segment's number from a form's select: empty (the default) is None."""
    return int(value) if value and value.isdigit() else None


@router.get("/videos/{video_id}/attention.png")
def video_attention(
    video_id: str,
    segment: int | None = Query(None, ge=0),
    person: int | None = Query(None, ge=0),
    caller: Caller = Depends(web_caller),
    context: ApiContext = Depends(get_context),
) -> Response:
    return get_attention_png(video_id, segment, person, caller=caller, context=context)


@router.get("/videos/{video_id}/timeline.png")
def video_timeline(
    video_id: str, caller: Caller = Depends(web_caller), context: ApiContext = Depends(get_context)
) -> Response:
    return get_timeline_png(video_id, caller, context)
