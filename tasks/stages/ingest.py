"""Ingest: probe and sample the stored video, write the frames for faces and flow."""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session

from core.errors import InputError
from core.pipeline import sample_video
from core.status import VideoStatus
from db import repository as repo
from db.models import Video
from db.repository.stages import StageUpdate
from tasks.context import StageContext
from tasks.stages.skeleton import StageSpec, VideoRef, run_stage

log = logging.getLogger(__name__)


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


def _sample(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    assert ref.model_version is not None  # the guard pinned it
    bundle = ctx.load_bundle(ref.model_version)
    start = time.perf_counter()
    try:
        if ref.storage_uri is None:
            raise InputError(f"no stored copy of {ref.source} to read")
        with ctx.store.local_copy(ref.storage_uri) as path:
            sampled = sample_video(
                path,
                bundle.metadata.num_frames,
                ctx.config.limits,
                ctx.config.frame_max_side,
                ctx.config.decode_threads,
                name=ref.source,
            )
    except InputError as exc:
        # The user's file is named in the stored error; the copy read is logged here.
        log.info("ingest of video %s (stored as %s) failed: %s", ref.id, ref.storage_uri, exc)
        return StageUpdate(VideoStatus.FAILED, error=str(exc))
    seconds = time.perf_counter() - start
    ctx.store.put_arrays(
        ctx.layout.frames(ref.id), frames=sampled.frames, successors=sampled.successors
    )
    return StageUpdate(
        VideoStatus.EXTRACTING,
        timings={"sample": seconds},
        probe=sampled.info.to_dict(),
        frames=len(sampled.frames),
        # Features are (re)computed from these frames.
        reset_flags=True,
    )


INGEST = StageSpec(
    name="ingest",
    runs_from=(VideoStatus.PENDING, VideoStatus.INGESTING),
    leads_to=VideoStatus.EXTRACTING,
    work=_sample,
    finishes_from=(VideoStatus.INGESTING,),
    claim=_claim,
)


def run_ingest(ctx: StageContext, video_id: str) -> bool:
    """Probe and sample the stored video, write the frames; True: enqueue faces and flow."""
    return run_stage(ctx, video_id, INGEST)
