"""Ingest, the producer: probe the stored video and plan its segments; then each segment's
sampling, which decodes only that segment's window and writes its frames for faces and flow.

Ingest moves the video to `extracting` and stores its segments in the same transaction; its
task then sends one sampling message per segment, so the segments of one video are decoded
and analysed by different workers at once. A redelivered ingest finds the segments stored
(the first plan wins) and sends the messages of those not yet sampled again.

The stored copy is hashed as it is read and must still hash to the content hash the video
was registered with: a copy replaced after upload would be analysed, and its results
stored, under the original's identity. A copy that does not match, like a pinned model
version whose bundle fails its check, fails the video (or the segment) at once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from core.errors import ContentMismatchError, InputError
from core.segment_sampling import plan_video, sample_video_segment
from core.segments import Segment
from core.status import VideoStatus
from core.video import VideoInfo, probe_video
from db import repository as repo
from db.models import Video
from db.repository.stages import StageUpdate
from tasks.context import StageContext
from tasks.stages.segment_rows import SEGMENT_ROWS
from tasks.stages.skeleton import StageSpec, VideoRef, run_stage

log = logging.getLogger(__name__)

#: The error stored on a video whose stored copy no longer matches its content hash.
CHANGED_AFTER_UPLOAD = (
    "the stored video no longer matches what was uploaded (content hash differs); not analysed"
)


@dataclass
class PlannedUpdate(StageUpdate):
    """Ingest's finish: the probe, and the segments to store with it."""

    segments: list[Segment] = field(default_factory=list)


def _claim(ctx: StageContext, session: Session, video: Video) -> str:
    """Move the video to `ingesting` and pin its model version, in the guard's transaction."""
    repo.transition_video(
        session=session,
        video_id=video.id,
        to_status=VideoStatus.INGESTING,
        from_statuses=[VideoStatus.PENDING],
    )
    # The first ingest to pin a version wins; a racing duplicate uses the same one.
    return repo.pin_model_version(
        session=session,
        video_id=video.id,
        version=video.model_version or ctx.active_version(session),
    )


def _content_hash(ctx: StageContext, video_id: str) -> str | None:
    with ctx.session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        return None if video is None else video.content_hash


def _plan(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Probe the stored copy against the limits and cut it into segments."""
    start = time.perf_counter()
    try:
        if ref.storage_uri is None:
            raise InputError(f"no stored copy of {ref.source} to read")
        expected = _content_hash(ctx, ref.id)
        with ctx.store.local_copy(ref.storage_uri, sha256=expected) as path:
            try:
                info = probe_video(path, ctx.config.limits)
            except InputError as exc:
                raise type(exc)(str(exc).replace(str(path), ref.source)) from exc
            # Boundaries on keyframes, found in the container index (no decoding).
            keyframes = path if ctx.config.segment_keyframes else None
            segments = plan_video(info, ctx.config.segment_seconds, keyframes)
    except ContentMismatchError as exc:
        log.warning("ingest of video %s refused: %s", ref.id, exc)
        return StageUpdate(VideoStatus.FAILED, error=CHANGED_AFTER_UPLOAD)
    except InputError as exc:
        # The user's file is named in the stored error; the copy read is logged here.
        log.info("ingest of video %s (stored as %s) failed: %s", ref.id, ref.storage_uri, exc)
        return StageUpdate(VideoStatus.FAILED, error=str(exc))
    return PlannedUpdate(
        VideoStatus.EXTRACTING,
        timings={"probe": time.perf_counter() - start},
        probe=info.to_dict(),
        segments=segments,
    )


def _store_segments(
    ctx: StageContext, session: Session, ref: VideoRef, changes: StageUpdate
) -> None:
    if isinstance(changes, PlannedUpdate) and changes.status == VideoStatus.EXTRACTING:
        repo.create_segments(session=session, video_id=ref.id, segments=changes.segments)


INGEST = StageSpec(
    name="ingest",
    runs_from=(VideoStatus.PENDING, VideoStatus.INGESTING),
    leads_to=VideoStatus.EXTRACTING,
    work=_plan,
    finishes_from=(VideoStatus.INGESTING,),
    claim=_claim,
    store=_store_segments,
)


def run_ingest(ctx: StageContext, video_id: str) -> list[str]:
    """Probe the stored video and plan its segments; the ids of the segments to sample."""
    if not run_stage(ctx, video_id, INGEST):
        return []
    with ctx.session_factory() as session:
        return [
            segment.id
            for segment in repo.get_segments(session=session, video_id=video_id)
            if segment.status in (VideoStatus.PENDING, VideoStatus.INGESTING)
        ]


def _video_plan(ctx: StageContext, video_id: str) -> tuple[VideoInfo, list[Segment], str | None]:
    """The probe and segment plan ingest stored for the video, and its content hash."""
    with ctx.session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        assert video is not None  # a segment's video
        info = VideoInfo(
            fps=float(video.fps or 0.0),
            frame_count=int(video.frame_count or 0),
            duration_s=float(video.duration_s or 0.0),
            width=int(video.width or 0),
            height=int(video.height or 0),
        )
        plan = [
            Segment(index=s.index, start_s=s.start_s, end_s=s.end_s)
            for s in repo.get_segments(session=session, video_id=video_id)
        ]
        return info, plan, video.content_hash


def _sample(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Decode one segment's window, sample T frames and successors, store them."""
    assert ref.model_version is not None and ref.index is not None  # the guard checked
    start = time.perf_counter()
    try:
        bundle = ctx.load_bundle(ref.model_version)
        if ref.storage_uri is None:
            raise InputError(f"no stored copy of {ref.source} to read")
        info, plan, expected = _video_plan(ctx, ref.video_id)
        with ctx.store.local_copy(ref.storage_uri, sha256=expected) as path:
            sampled = sample_video_segment(
                path,
                plan,
                ref.index,
                bundle.metadata.num_frames,
                info=info,
                limits=ctx.config.limits,
                max_side=ctx.config.frame_max_side,
                decode_threads=ctx.config.decode_threads,
                name=ref.source,
            )
    except ContentMismatchError as exc:
        log.warning("sampling of segment %s refused: %s", ref.id, exc)
        return StageUpdate(VideoStatus.FAILED, error=CHANGED_AFTER_UPLOAD)
    except InputError as exc:
        log.info("sampling of segment %s of video %s failed: %s", ref.id, ref.video_id, exc)
        return StageUpdate(VideoStatus.FAILED, error=str(exc))
    seconds = time.perf_counter() - start
    ctx.store.put_arrays(
        ctx.layout.segment_frames(ref.video_id, ref.index),
        frames=sampled.frames,
        successors=sampled.successors,
    )
    return StageUpdate(
        VideoStatus.EXTRACTING,
        timings={"sample": seconds},
        frames=len(sampled.frames),
        # Features are (re)computed from these frames.
        reset_flags=True,
    )


SAMPLE = StageSpec(
    name="sample",
    runs_from=(VideoStatus.PENDING, VideoStatus.INGESTING),
    leads_to=VideoStatus.EXTRACTING,
    work=_sample,
    finishes_from=(VideoStatus.PENDING, VideoStatus.INGESTING),
    rows=SEGMENT_ROWS,
)


def run_sample(ctx: StageContext, segment_id: str) -> list[str]:
    """Sample one segment; the feature stages to send it to next (none: nothing to do).

    Faces always; flow at once when the model computes it over whole frames, else after
    faces has found the persons whose regions it covers (`tasks.stages.features`).
    """
    if not run_stage(ctx, segment_id, SAMPLE):
        return []
    return ["faces", "flow"] if not needs_persons(ctx, segment_id) else ["faces"]


def needs_persons(ctx: StageContext, segment_id: str) -> bool:
    """Whether the segment's flow is computed over its persons' regions (a person bundle)."""
    with ctx.session_factory() as session:
        loaded = SEGMENT_ROWS.load(session, segment_id)
    if loaded is None or loaded[1].model_version is None:
        return False
    return ctx.load_bundle(loaded[1].model_version).metadata.region_mode == "person"
