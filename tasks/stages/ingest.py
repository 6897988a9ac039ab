"""Ingest, the producer: probe the stored video and plan its segments; then each segment's
sampling, which decodes only that segment's window and writes its frames for faces and flow.

Ingest moves the video to `extracting` and stores its segments in the same transaction; its
task then sends one sampling message per segment, so the segments of one video are decoded
and analysed by different workers at once. A redelivered ingest finds the segments stored
(the first plan wins) and sends the messages of those not yet sampled again.

The content hash is computed once, when the video is stored; its key in the store is that
hash, and the store's size and version of the object (ETag, generation or modification time)
are recorded with it. Ingest and each segment compare that stamp with what the store reports
before reading (one metadata request, whatever the video's length): a copy replaced after
upload would be analysed, and its results stored, under the original's identity. A copy that
does not match, like a pinned model version whose bundle fails its check, fails the video
(or the segment) at once. Both read the stored video by ranges (`core.storage.store.StoredVideo`):
ingest its header and index, a segment its index and window; the bytes read are stored in
the stage's timings (`probe_bytes`, `sample_bytes`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from core.errors import ContentMismatchError, InputError
from core.status import VideoStatus
from core.storage.store import StoredStamp, StoredVideo
from core.video.probe import VideoInfo, probe_video
from core.video.segment_sampling import plan_video, sample_video_segment
from core.video.segments import Segment
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


def _stored_identity(ctx: StageContext, video_id: str) -> tuple[str | None, StoredStamp | None]:
    """The video's content hash and the stamp of its stored copy (None: stored before stamps)."""
    with ctx.session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        if video is None:
            return None, None
        return video.content_hash, StoredStamp.from_dict(video.storage_stamp)


def _stamp_once(ctx: StageContext, video_id: str, uri: str, sha256: str | None) -> StoredStamp:
    """A copy stored before stamps were kept: hashed once, here, and its stamp recorded.

    Its ingest does it; a video ingested before then has it done by its first segments."""
    with ctx.store.local_copy(uri, sha256=sha256):
        pass
    stamp = ctx.store.stamp(uri)
    with ctx.session_factory.begin() as session:
        repo.set_storage_uri(session=session, video_id=video_id, uri=uri, stamp=stamp.to_dict())
    return stamp


def _plan(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Probe the stored copy against the limits and cut it into segments."""
    start = time.perf_counter()
    try:
        if ref.storage_uri is None:
            raise InputError(f"no stored copy of {ref.source} to read")
        expected, stamp = _stored_identity(ctx, ref.id)
        if stamp is None:
            stamp = _stamp_once(ctx, ref.id, ref.storage_uri, expected)
        with ctx.store.open_video(ref.storage_uri, stamp) as video:
            try:
                info = probe_video(video, ctx.config.limits)
            except InputError as exc:
                raise type(exc)(str(exc).replace(str(video), ref.source)) from exc
            # Boundaries on keyframes, found in the container index (no decoding).
            keyframes = video if ctx.config.segment_keyframes else None
            segments = plan_video(info, ctx.config.segment_seconds, keyframes)
            read = video.bytes_read
    except ContentMismatchError as exc:
        log.warning("ingest of video %s refused: %s", ref.id, exc)
        return StageUpdate(VideoStatus.FAILED, error=CHANGED_AFTER_UPLOAD)
    except InputError as exc:
        # The user's file is named in the stored error; the copy read is logged here.
        log.info("ingest of video %s (stored as %s) failed: %s", ref.id, ref.storage_uri, exc)
        return StageUpdate(VideoStatus.FAILED, error=str(exc))
    ctx.on_read("ingest", read)
    return PlannedUpdate(
        VideoStatus.EXTRACTING,
        timings={"probe": time.perf_counter() - start, "probe_bytes": read},
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


def _video_plan(
    ctx: StageContext, video_id: str
) -> tuple[VideoInfo, list[Segment], StoredStamp | None]:
    """The probe and segment plan ingest stored for the video, and its copy's stamp."""
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
        return info, plan, StoredStamp.from_dict(video.storage_stamp)


def _sample(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    """Decode one segment's window, sample T frames and successors, store them."""
    assert ref.model_version is not None and ref.index is not None  # the guard checked
    start = time.perf_counter()
    try:
        bundle = ctx.load_bundle(ref.model_version)
        if ref.storage_uri is None:
            raise InputError(f"no stored copy of {ref.source} to read")
        info, plan, stamp = _video_plan(ctx, ref.video_id)
        if stamp is None:  # ingested before stamps were kept: its segments record it
            expected, _ = _stored_identity(ctx, ref.video_id)
            stamp = _stamp_once(ctx, ref.video_id, ref.storage_uri, expected)
        with _segment_source(ctx, ref.storage_uri, stamp, info) as (path, read):
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
    ctx.on_read("sample", read())
    ctx.store.put_arrays(
        ctx.layout.segment_frames(ref.video_id, ref.index),
        frames=sampled.frames,
        successors=sampled.successors,
    )
    return StageUpdate(
        VideoStatus.EXTRACTING,
        timings={"sample": seconds, "sample_bytes": read()},
        frames=len(sampled.frames),
        # Features are (re)computed from these frames.
        reset_flags=True,
    )


@contextlib.contextmanager
def _segment_source(
    ctx: StageContext, uri: str, stamp: StoredStamp, info: VideoInfo
) -> Iterator[tuple[Path | StoredVideo, Callable[[], int]]]:
    """What a segment decodes, and how many bytes it has read from the store so far.

    The stored video, read by ranges; a video whose header declares no frame count is
    sampled whole by OpenCV, from a local path (a remote object copied once for it).
    """
    if info.frame_count >= 1 and info.fps > 0:
        with ctx.store.open_video(uri, stamp) as video:
            yield video, lambda: video.bytes_read
        return
    with ctx.store.open_video(uri, stamp) as video, ctx.store.local_copy(uri) as path:
        yield path, lambda: video.size


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
