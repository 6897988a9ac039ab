"""Segments of a video: their plan, reads, the guarded finish and per-segment delivery counts.

A video is analysed as windows (`core.video.segments`). Every write here is safe under redelivery:
segments are inserted if absent, keyed by their index, and a segment's state moves with one
guarded UPDATE, like a video's (`finish_stage`). The persons found in a segment, their
predictions and the timeline read are `db.repository.segment_persons`; the video-level
aggregate is `db.repository.aggregates`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.status import FINAL_STATUSES, VideoStatus
from core.video import segments as plan
from db.models import Segment, Video, new_id
from db.repository._common import FETCH, NotFoundError, dialect_insert
from db.repository.stages import StageUpdate, guarded_finish
from db.types import as_utc, utcnow


@dataclass
class SegmentUpdate(StageUpdate):
    """A `StageUpdate` for a segment, which also counts the persons its faces stage found.

    A segment has no probe data (the probe is the video's): `probe` must stay None.
    """

    persons: int | None = None
    # Video times at which a new shot is first seen in the segment (`core.persons.shots.cut_times`).
    shots: list[float] | None = None


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


def append_segment(*, session: Session, video_id: str, start_s: float, end_s: float) -> str:
    """Add the next segment of a video whose segments arrive over time (a live source).

    The new segment takes the next index after the video's last one and starts `pending`;
    it must not start before the last one ends (a gap between them is allowed: the source
    was away). The video row is locked, so two appends never take the same index. Returns
    the new segment's id.
    """
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or not 0 <= start_s < end_s:
        raise ValueError(f"a segment needs 0 <= start_s < end_s, got {start_s}, {end_s}")
    locked = session.execute(select(Video.id).where(Video.id == video_id).with_for_update())
    if locked.first() is None:
        raise NotFoundError(f"no video with id {video_id!r}")
    last = session.execute(
        select(Segment.index.label("number"), Segment.end_s)
        .where(Segment.video_id == video_id)
        .order_by(Segment.index.desc())
        .limit(1)
    ).first()
    if last is not None and start_s < last.end_s - 1e-6:
        raise ValueError(
            f"segment starting at {start_s:g} s overlaps segment {last.number}, which ends at "
            f"{last.end_s:g} s"
        )
    now = utcnow()
    segment = Segment(
        id=new_id(),
        video_id=video_id,
        index=0 if last is None else int(last.number) + 1,
        start_s=float(start_s),
        end_s=float(end_s),
        status=VideoStatus.PENDING.value,
        deliveries={},
        timings={},
        created_at=now,
        updated_at=now,
    )
    session.add(segment)
    session.flush()
    return segment.id


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
    untouched and gives False. `SegmentUpdate.persons` stores the persons count, and
    `SegmentUpdate.shots` the shot changes.
    """
    if changes.probe is not None:
        raise ValueError("a segment has no probe data; store the probe on its video")
    extra: dict[str, Any] = {}
    if isinstance(changes, SegmentUpdate) and changes.persons is not None:
        extra["persons"] = _non_negative("persons", changes.persons)
    if isinstance(changes, SegmentUpdate) and changes.shots is not None:
        extra["shots"] = _shot_times(changes.shots)
    return guarded_finish(session, Segment, segment_id, changes, from_statuses, extra)


def _shot_times(shots: Sequence[float]) -> list[float]:
    times = [float(t) for t in shots]
    if not all(math.isfinite(t) and t >= 0 for t in times) or times != sorted(times):
        raise ValueError(f"shots must be finite, non-negative times in order, got {shots!r}")
    return times


def count_segment_delivery(*, session: Session, segment_id: str, stage: str) -> int:
    """Count one more start of `stage` for the segment; returns the new count (see
    `count_delivery`, its video-level twin)."""
    return _bump_delivery(session, segment_id, stage, +1)


def release_segment_delivery(*, session: Session, segment_id: str, stage: str) -> int:
    """Take back one start of `stage` (never below 0) after an outage; returns the count."""
    return _bump_delivery(session, segment_id, stage, -1)


def find_stuck_segments(
    *, session: Session, older_than: datetime, statuses: Collection[str]
) -> list[Segment]:
    """Segments in one of `statuses`, of videos not final, with no update since `older_than`.

    `find_stuck_videos` for segments: every write to a segment touches `updated_at`.
    """
    final = [s.value for s in FINAL_STATUSES]
    stmt = (
        select(Segment)
        .join(Video, Video.id == Segment.video_id)
        .where(
            Segment.status.in_([str(s) for s in statuses]),
            Segment.updated_at < as_utc(older_than),
            Video.status.not_in(final),
        )
        .order_by(Segment.updated_at, Segment.id)
    )
    return list(session.execute(stmt).scalars())


def touch_segment(*, session: Session, segment_id: str) -> None:
    """Bump `updated_at`, so that `find_stuck_segments` waits a full deadline again."""
    session.execute(
        update(Segment).where(Segment.id == segment_id).values(updated_at=utcnow()),
        execution_options=FETCH,
    )


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
