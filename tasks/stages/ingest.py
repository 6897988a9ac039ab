"""Ingest: probe and sample the stored video, write the frames for faces and flow.

The stored copy is hashed as it is read and must still hash to the content hash the video
was registered with: a copy replaced after upload would be analysed, and its results
stored, under the original's identity. A copy that does not match, like a pinned model
version whose bundle fails its check, fails the video at once with its message.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.orm import Session

from core.errors import ContentMismatchError, InputError
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


#: The error stored on a video whose stored copy no longer matches its content hash.
CHANGED_AFTER_UPLOAD = (
    "the stored video no longer matches what was uploaded (content hash differs); not analysed"
)


def _content_hash(ctx: StageContext, video_id: str) -> str | None:
    with ctx.session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        return None if video is None else video.content_hash


def _sample(ctx: StageContext, ref: VideoRef) -> StageUpdate:
    assert ref.model_version is not None  # the guard pinned it
    start = time.perf_counter()
    try:
        bundle = ctx.load_bundle(ref.model_version)
        if ref.storage_uri is None:
            raise InputError(f"no stored copy of {ref.source} to read")
        expected = _content_hash(ctx, ref.id)
        with ctx.store.local_copy(ref.storage_uri, sha256=expected) as path:
            sampled = sample_video(
                path,
                bundle.metadata.num_frames,
                ctx.config.limits,
                ctx.config.frame_max_side,
                ctx.config.decode_threads,
                name=ref.source,
            )
    except ContentMismatchError as exc:
        log.warning("ingest of video %s refused: %s", ref.id, exc)
        return StageUpdate(VideoStatus.FAILED, error=CHANGED_AFTER_UPLOAD)
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
