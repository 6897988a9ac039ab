"""Segments as the rows of the per-segment stages, and what a segment's last move entails.

A segment's stages (sampling, faces, flow, inference) go through the same guard, run and
finish as a video's (`tasks.stages.skeleton`); only the rows differ. The segment's video
gives what its messages need: the stored copy, the user's name for it, the pinned model
version. A finish that makes a segment final also, in the same transaction, aggregates its
video when that was the last segment (`db.repository.aggregate_video`, exactly once).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from core.status import VideoStatus
from db import repository as repo
from db.repository.stages import StageUpdate
from tasks.context import StageContext
from tasks.stages.skeleton import Rows, StageRow, VideoRef

if TYPE_CHECKING:
    from core.persons.person_links import PersonLinker


def load_segment(session: Session, segment_id: str) -> tuple[StageRow, VideoRef] | None:
    segment = repo.get_segment(session=session, segment_id=segment_id)
    if segment is None:
        return None
    video = segment.video
    ref = VideoRef(
        segment.id,
        video.storage_uri,
        video.model_version,
        video.source_path,
        video_id=video.id,
        index=segment.index,
    )
    return segment, ref


def finish_segment(
    ctx: StageContext,
    session: Session,
    segment_id: str,
    changes: StageUpdate,
    from_statuses: Sequence[VideoStatus],
) -> bool:
    """Move the segment (`db.repository.finish_segment`); a final move may finish its video."""
    return finish_and_aggregate(ctx.linker, session, segment_id, changes, from_statuses)


def finish_and_aggregate(
    linker: PersonLinker,
    session: Session,
    segment_id: str,
    changes: StageUpdate,
    from_statuses: Sequence[VideoStatus],
) -> bool:
    """`finish_segment` with only what it needs: how the video's persons are linked."""
    moved = repo.finish_segment(
        session=session, segment_id=segment_id, changes=changes, from_statuses=from_statuses
    )
    if moved and VideoStatus(changes.status).is_final:
        aggregate_if_last(linker, session, segment_id)
    return moved


def aggregate_if_last(linker: PersonLinker, session: Session, segment_id: str) -> None:
    """Aggregate the segment's video if every segment is final now (else nothing)."""
    segment = repo.get_segment(session=session, segment_id=segment_id)
    assert segment is not None  # just moved
    version = segment.video.model_version
    if version is None:  # never pinned: its segments cannot have been planned
        return
    repo.aggregate_video(
        session=session, video_id=segment.video_id, model_version=version, linker=linker
    )


SEGMENT_ROWS = Rows(
    kind="segment",
    load=load_segment,
    count=lambda session, segment_id, stage: repo.count_segment_delivery(
        session=session, segment_id=segment_id, stage=stage
    ),
    release=lambda session, segment_id, stage: repo.release_segment_delivery(
        session=session, segment_id=segment_id, stage=stage
    ),
    finish=finish_segment,
)
