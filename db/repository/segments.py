"""Segments of a video: their plan, reads, the guarded finish and per-segment delivery counts.

A video is analysed as windows (`core.segments`). Every write here is safe under redelivery:
segments are inserted if absent, keyed by their index, and a segment's state moves with one
guarded UPDATE, like a video's (`finish_stage`). The persons found in a segment, their
predictions and the timeline read are `db.repository.segment_persons`; the video-level
aggregate is `db.repository.aggregates`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import segments as plan
from core.status import VideoStatus
from db.models import FEATURE_STAGES, VIDEO_STATUSES, Segment, Video, new_id
from db.repository._common import FETCH, NotFoundError, dialect_insert
from db.repository.stages import StageUpdate, stage_values
from db.repository.videos import check_status
from db.types import utcnow


@dataclass
class SegmentUpdate(StageUpdate):
    """A `StageUpdate` for a segment, which also counts the persons its faces stage found.

    A segment has no probe data (the probe is the video's): `probe` must stay None.
    """

    persons: int | None = None


def create_segments(
    *, session: Session, video_id: str, segments: Sequence[plan.Segment]
) -> list[str]:
    """Store the video's segment plan; returns the segment ids in index order.

    Idempotent and the first plan wins: the video row is locked, and a video that already
    has segments keeps them (a redelivered ingest, or one planned with other settings, gets
    the stored ids back). Inserts are also `ON CONFLICT DO NOTHING` on (video, index).
    """
    _check_plan(segments)
    locked = session.execute(select(Video.id).where(Video.id == video_id).with_for_update())
    if locked.first() is None:
        raise NotFoundError(f"no video with id {video_id!r}")
    stored = _segment_ids(session, video_id)
    if stored:
        return stored
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "video_id": video_id,
            "index": segment.index,
            "start_s": float(segment.start_s),
            "end_s": float(segment.end_s),
            "status": VideoStatus.PENDING.value,
            "deliveries": {},
            "timings": {},
            "created_at": now,
            "updated_at": now,
        }
        for segment in segments
    ]
    insert = dialect_insert(session, Segment).on_conflict_do_nothing(
        index_elements=[Segment.video_id, Segment.index]
    )
    session.execute(insert, rows)
    return _segment_ids(session, video_id)


def get_segments(*, session: Session, video_id: str) -> list[Segment]:
    """The video's segments in index order (none for a video not yet planned)."""
    return list(
        session.scalars(select(Segment).where(Segment.video_id == video_id).order_by(Segment.index))
    )


def get_segment(*, session: Session, segment_id: str) -> Segment | None:
    """The segment with `segment_id`, or None."""
    return session.get(Segment, segment_id)


def finish_segment(
    *,
    session: Session,
    segment_id: str,
    changes: StageUpdate,
    from_statuses: Collection[str] | None,
) -> bool:
    """Apply `changes` to a segment in one guarded UPDATE, as `finish_stage` does to a video.

    True if the segment moved to `changes.status`. The row is locked first, so of faces and
    flow finishing at once exactly one sees both flags set (`changes.ready`) and moves the
    segment on; a segment found in another status, or a feature flag already set, is left
    untouched and gives False. `SegmentUpdate.persons` stores the persons count.
    """
    check_status(changes.status)
    if changes.probe is not None:
        raise ValueError("a segment has no probe data; store the probe on its video")
    allowed = list(VIDEO_STATUSES if from_statuses is None else from_statuses)
    for status in allowed:
        check_status(status)
    row = session.execute(
        select(Segment.status, Segment.timings, Segment.faces_ready, Segment.flow_ready)
        .where(Segment.id == segment_id)
        .with_for_update()
    ).first()
    if row is None or row.status not in allowed:
        return False
    values = stage_values(row.timings, changes)
    if isinstance(changes, SegmentUpdate) and changes.persons is not None:
        values["persons"] = _non_negative("persons", changes.persons)
    moves = True
    if changes.ready is not None:
        if changes.ready not in FEATURE_STAGES:
            raise ValueError(f"ready must be one of {FEATURE_STAGES}, got {changes.ready!r}")
        own, other = "faces_ready", "flow_ready"
        if changes.ready == "flow":
            own, other = other, own
        if getattr(row, own):
            return False
        values[own] = True
        moves = bool(getattr(row, other))
    if moves:
        values.update(status=str(changes.status), error=changes.error)
    stmt = (
        update(Segment)
        .where(Segment.id == segment_id, Segment.status.in_(allowed))
        .values({**values, "updated_at": utcnow()})
        .returning(Segment.id)
    )
    return session.execute(stmt, execution_options=FETCH).first() is not None and moves


def count_segment_delivery(*, session: Session, segment_id: str, stage: str) -> int:
    """Count one more start of `stage` for the segment; returns the new count (see
    `count_delivery`, its video-level twin)."""
    return _bump_delivery(session, segment_id, stage, +1)


def release_segment_delivery(*, session: Session, segment_id: str, stage: str) -> int:
    """Take back one start of `stage` (never below 0) after an outage; returns the count."""
    return _bump_delivery(session, segment_id, stage, -1)


def _check_plan(segments: Sequence[plan.Segment]) -> None:
    indexes = [segment.index for segment in segments]
    if indexes != list(range(len(segments))) or not segments:
        raise ValueError(f"segments must be indexed 0..n-1 in order, got indexes {indexes}")
    for segment in segments:
        if not (math.isfinite(segment.start_s) and math.isfinite(segment.end_s)) or not (
            0 <= segment.start_s <= segment.end_s
        ):
            raise ValueError(f"segment {segment.index} needs 0 <= start_s <= end_s, got {segment}")


def _segment_ids(session: Session, video_id: str) -> list[str]:
    stmt = select(Segment.id).where(Segment.video_id == video_id).order_by(Segment.index)
    return list(session.scalars(stmt))


def _bump_delivery(session: Session, segment_id: str, stage: str, step: int) -> int:
    row = session.execute(
        select(Segment.deliveries).where(Segment.id == segment_id).with_for_update()
    ).first()
    if row is None:
        raise NotFoundError(f"no segment with id {segment_id!r}")
    counts = dict(row.deliveries or {})
    counts[stage] = max(0, int(counts.get(stage, 0)) + step)
    session.execute(
        update(Segment)
        .where(Segment.id == segment_id)
        .values(deliveries=counts, updated_at=utcnow()),
        execution_options=FETCH,
    )
    return counts[stage]


def _non_negative(name: str, value: int) -> int:
    if int(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)
