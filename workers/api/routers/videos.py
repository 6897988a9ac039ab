"""`/v1/videos/{id}`: one video's result, its attention map (JSON or PNG), erasure."""

from __future__ import annotations

import hashlib
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from workers.api.context import ApiContext
from workers.api.deps import get_caller, get_context, request_context
from workers.api.problems import not_found
from workers.services.errors import UsageError
from workers.services.tenants import Caller

router = APIRouter(prefix="/v1/videos", tags=["videos"])

# Matplotlib's figure machinery is not thread-safe; routes run in a thread pool.
_PLOT_LOCK = threading.Lock()


def _owned_or_404(context: ApiContext, video_id: str, caller: Caller) -> None:
    from workers.services.jobs import owns_video

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
    again. 404 for anyone else's or no video.

    The caller is found by calling `get_caller` here rather than through `Depends`: this is
    the route applications poll, and FastAPI's dependency solving was a tenth of its cost."""
    context = request_context(request)
    caller = await get_caller(request, context)
    if "cache" in context.off:
        answer = await run_in_threadpool(
            read_result, context, caller.tenant_id, video_id, request.headers.get("if-none-match")
        )
        if answer is None:
            raise not_found("video")
        etag, body = answer
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if body is None:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)
    body = await context.results.read_async(caller.tenant_id, video_id)
    if body is None:
        raise not_found("video")
    return Response(body, media_type="application/json")


def read_result(
    context: ApiContext, tenant_id: str, video_id: str, if_none_match: str | None
) -> tuple[str, bytes | None] | None:
    """The ETag of the tenant's video's result and its JSON (None when `if_none_match`
    names that ETag); None when the tenant has no such video."""
    from db.repository.results import query_results, result_stamp
    from workers.api.result_cache import dump_json

    with context.session_factory() as session:
        stamp = result_stamp(session=session, video_id=video_id, tenant_id=tenant_id)
        if stamp is None:
            return None
        etag = result_etag(stamp)
        if if_none_match is not None and etag_matches(if_none_match, etag):
            return etag, None
        rows = query_results(session=session, video_id=video_id)
    if not rows:
        return None
    return etag, dump_json(rows[0].to_dict())


def result_etag(stamp: tuple[Any, ...]) -> str:
    return '"' + hashlib.sha256(repr(stamp).encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _attention(
    context: ApiContext,
    video_id: str,
    caller: Caller,
    segment: int | None = None,
    person: int | None = None,
) -> Any:
    """The video's headline map, or with `segment` and/or `person` that (segment, person)'s
    (`stored_segment_attention` picks the rest as the CLI does)."""
    from workers.services.results import stored_attention, stored_segment_attention

    _owned_or_404(context, video_id, caller)
    try:
        if segment is None and person is None:
            return stored_attention(context.session_factory, video_id)
        return stored_segment_attention(
            context.session_factory, video_id, segment=segment, person=person
        )
    except UsageError:
        raise not_found("attention map for a video") from None


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
    from core.attention_plot import plot_attention_map

    stored = _attention(context, video_id, caller, segment, person)
    with tempfile.TemporaryDirectory(prefix="attention-") as folder, _PLOT_LOCK:
        paths = plot_attention_map(
            stored.weights, save_path=Path(folder) / "attention.png", title=stored.title
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
    from workers.services.timeline import plot_video

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
    from workers.services.erasure import UnknownVideo, erase_video

    try:
        erase_video(context.settings, context.session_factory, video_id, caller.tenant_id)
    except UnknownVideo:
        raise not_found("video") from None
    return Response(status_code=204)
