"""`/v1/videos/{id}`: one video's result, its attention map (JSON or PNG), erasure."""

from __future__ import annotations

import json
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from core.plots.attention import plot_attention_map
from core.plots.timeline import UNTRAINED_WARNING
from workers.api.context import ApiContext
from workers.api.deps import get_caller, get_context, request_context
from workers.api.problems import not_found
from workers.api.result_cache import read_uncached
from workers.services.erasure import UnknownVideo, erase_video
from workers.services.errors import UsageError
from workers.services.jobs import owns_video
from workers.services.results import stored_attention, stored_segment_attention
from workers.services.tenants import Caller
from workers.services.timeline import plot_video

router = APIRouter(prefix="/v1/videos", tags=["videos"])

# Matplotlib's figure machinery is not thread-safe; routes run in a thread pool.
_PLOT_LOCK = threading.Lock()


def _owned_or_404(context: ApiContext, video_id: str, caller: Caller) -> None:
    if not owns_video(context.session_factory, video_id, caller.tenant_id):
        raise not_found("video")


@router.get(
    "/{video_id}",
    summary="The video's result: the CLI's JSON result object",
    response_model=dict[str, Any],
)
async def get_video(video_id: str, request: Request) -> Response:
    """One query checks the video is the caller's and unchanged since this process last sent
    it (`workers.api.result_cache`); only a new or changed result is read and serialized
    again. The answer's `ETag` is the result's stamp; `If-None-Match` naming it is answered
    304 without a body. 404 for anyone else's or no video.

    The caller is found by calling `get_caller` here rather than through `Depends`: this is
    the route applications poll, and FastAPI's dependency solving was a tenth of its cost."""
    context = request_context(request)
    caller = await get_caller(request, context)
    offset, limit = _segment_page(request)
    if_none_match = request.headers.get("if-none-match")
    if "cache" in context.settings.api_read_path_off:
        answer = await run_in_threadpool(
            read_uncached, context.session_factory, caller.tenant_id, video_id, if_none_match
        )
    else:
        answer = await context.results.read_async(caller.tenant_id, video_id, if_none_match)
    if answer is None:
        raise not_found("video")
    # no-cache: a client or proxy may keep the answer but asks again (with If-None-Match)
    # before each use, so an erased or changed result is never shown from a cache. One ETag
    # serves every page of a result: the pages change together.
    headers = {"ETag": answer.etag, "Cache-Control": "private, no-cache"}
    if answer.body is None:
        return Response(status_code=304, headers=headers)
    body = page_segments(answer.body, offset, limit)
    return Response(body, media_type="application/json", headers=headers)


#: Segments in one result page by default: a 3-hour video has 720 segments of 15 s.
SEGMENTS_PAGE = 200
#: No segment takes fewer bytes (its index, start and end): a result under `limit` times this
#: cannot hold more than a page, and is sent as stored, unparsed.
_MIN_SEGMENT_BYTES = 40


def _segment_page(request: Request) -> tuple[int, int]:
    """`segments_offset` (>= 0) and `segments_limit` (1-1000) from the query string."""
    values = []
    for name, default, low, high in (
        ("segments_offset", 0, 0, None),
        ("segments_limit", SEGMENTS_PAGE, 1, 1000),
    ):
        raw = request.query_params.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            detail = f"{name} must be a whole number, got {raw!r}"
            raise HTTPException(status_code=400, detail=detail) from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}-{high}" if high is not None else f"at least {low}"
            raise HTTPException(status_code=400, detail=f"{name} must be {bounds}, got {value}")
        values.append(value)
    return values[0], values[1]


def page_segments(body: bytes, offset: int, limit: int) -> bytes:
    """The result with `segments` cut to `[offset, offset + limit)`, and the page described
    (`segments_total`, `segments_offset`, `segments_limit`) when it is cut."""
    if offset == 0 and len(body) <= limit * _MIN_SEGMENT_BYTES:
        return body
    result = json.loads(body)
    segments = result.get("segments") or []
    if offset == 0 and len(segments) <= limit:
        return body
    result["segments"] = segments[offset : offset + limit]
    result.update(segments_total=len(segments), segments_offset=offset, segments_limit=limit)
    return json.dumps(result).encode()


def _attention(
    context: ApiContext,
    video_id: str,
    caller: Caller,
    segment: int | None = None,
    person: int | None = None,
) -> Any:
    """The video's headline map, or with `segment` and/or `person` that (segment, person)'s
    (`stored_segment_attention` picks the rest as the CLI does)."""
    _owned_or_404(context, video_id, caller)
    try:
        if segment is None and person is None:
            return stored_attention(context.session_factory, video_id)
        return stored_segment_attention(
            context.session_factory, video_id, segment=segment, person=person
        )
    except UsageError as exc:
        # The caller owns the video (checked above): the message may say what exists.
        raise HTTPException(404, str(exc)) from None


_SEGMENT = Query(None, ge=0, description="A segment's index (`segments[].index`).")
_PERSON = Query(None, ge=0, description="A person's number (`persons[].person`).")


@router.get("/{video_id}/attention", summary="The stored cross-attention weights")
def get_attention(
    video_id: str,
    segment: int | None = _SEGMENT,
    person: int | None = _PERSON,
    caller: Caller = Depends(get_caller),
    context: ApiContext = Depends(get_context),
) -> dict[str, Any]:
    """`weights[direction][head][query][key]`; direction 0: face frames query flow frames,
    1: flow frames query face frames. Without `segment` and `person`: the video's headline
    map (its main person's, from that person's segment with most face frames)."""
    stored = _attention(context, video_id, caller, segment, person)
    weights = stored.weights
    return {
        "video_id": video_id,
        "model_version": stored.row.model_version,
        "model_trained": stored.row.model_trained,
        "shape": list(weights.shape),
        "directions": ["face->flow", "flow->face"],
        "weights": weights.astype(float).round(6).tolist(),
    }


@router.get(
    "/{video_id}/attention.png",
    summary="The attention map drawn: a row per direction, a panel per head",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_attention_png(
    video_id: str,
    segment: int | None = _SEGMENT,
    person: int | None = _PERSON,
    caller: Caller = Depends(get_caller),
    context: ApiContext = Depends(get_context),
) -> Response:
    stored = _attention(context, video_id, caller, segment, person)
    warning = None if stored.row.model_trained else UNTRAINED_WARNING
    with tempfile.TemporaryDirectory(prefix="attention-") as folder, _PLOT_LOCK:
        paths = plot_attention_map(
            stored.weights,
            save_path=Path(folder) / "attention.png",
            title=stored.title,
            warning=warning,
        )
        image = paths[0].read_bytes()
    return Response(image, media_type="image/png", headers={"Cache-Control": "private"})


@router.get(
    "/{video_id}/timeline.png",
    summary="The traits over time: a line per trait and person across the segments",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def get_timeline_png(
    video_id: str, caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> Response:
    """404 for a video without segments (analysed as a whole, or failed before them)."""
    _owned_or_404(context, video_id, caller)
    with tempfile.TemporaryDirectory(prefix="timeline-") as folder, _PLOT_LOCK:
        try:
            path = plot_video(context.session_factory, video_id, Path(folder) / "timeline.png")
        except UsageError:
            raise not_found("timeline for a video") from None
        image = path.read_bytes()
    return Response(image, media_type="image/png", headers={"Cache-Control": "private"})


@router.delete("/{video_id}", status_code=204, summary="Erase the video and all derived data")
def delete_video(
    video_id: str, caller: Caller = Depends(get_caller), context: ApiContext = Depends(get_context)
) -> Response:
    try:
        erase_video(context.settings, context.session_factory, video_id, caller.tenant_id)
    except UnknownVideo:
        raise not_found("video") from None
    return Response(status_code=204)
