"""Writing one video's outcome in one transaction.

`store_segmented` records an in-process analysis (`oceanstream analyze`) segment by segment,
as the distributed stages would have, and aggregates the video.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import delete

from core.status import VideoStatus
from db.models import Segment as SegmentRow
from db.repository.aggregates import AggregateOutcome, aggregate_video
from db.repository.segment_persons import (
    SegmentPersonRecord,
    save_segment_persons,
    save_segment_prediction,
)
from db.repository.segments import SegmentUpdate, create_segments, finish_segment, get_segments
from db.repository.stages import StageUpdate, finish_stage, pin_model_version

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.persons.person_links import PersonLinker
    from core.video.segments import Segment
    from core.video_analysis import SegmentedResult, SegmentResult


def store_segmented(
    *, session: Session, video_id: str, result: SegmentedResult, linker: PersonLinker
) -> AggregateOutcome | None:
    """Record an in-process analysis as the stages would have: the probe, the segments, each
    segment's persons, predictions and status, then the video's aggregate and final status.

    The video is re-pinned to the result's model version. A video analysed again keeps its
    segments when the plan is the same (predictions of other model versions stay with
    them); a different plan (another segment length) replaces them.
    """
    probe = None if result.info is None else result.info.to_dict()
    if result.error is not None or not result.segments:
        error = result.error or "the video has no segment to analyse"
        changes = StageUpdate(VideoStatus.FAILED, error=error, timings=result.timings, probe=probe)
        finish_stage(session=session, video_id=video_id, changes=changes, from_statuses=None)
        return None
    pin_model_version(
        session=session, video_id=video_id, version=result.model_version, replace=True
    )
    changes = StageUpdate(
        VideoStatus.EXTRACTING, timings=result.timings, probe=probe, reset_flags=True
    )
    finish_stage(session=session, video_id=video_id, changes=changes, from_statuses=None)
    plan = [s.segment for s in result.segments]
    _replace_other_plan(session, video_id, plan)
    ids = create_segments(session=session, video_id=video_id, segments=plan)
    for segment_id, outcome in zip(ids, result.segments, strict=True):
        _store_segment(session, segment_id, outcome, result)
    return aggregate_video(
        session=session, video_id=video_id, model_version=result.model_version, linker=linker
    )


def _replace_other_plan(session: Session, video_id: str, plan: list[Segment]) -> None:
    stored = get_segments(session=session, video_id=video_id)
    same = [(s.index, s.start_s, s.end_s) for s in stored] == [
        (s.index, s.start_s, s.end_s) for s in plan
    ]
    if stored and not same:
        session.execute(delete(SegmentRow).where(SegmentRow.video_id == video_id))


def _store_segment(
    session: Session, segment_id: str, outcome: SegmentResult, result: SegmentedResult
) -> None:
    if outcome.persons:
        records = [
            SegmentPersonRecord.of(index, p.person, p.embedding)
            for index, p in enumerate(outcome.persons)
        ]
        person_ids = save_segment_persons(session=session, segment_id=segment_id, persons=records)
        for person_id, person in zip(person_ids, outcome.persons, strict=True):
            save_segment_prediction(
                session=session,
                segment_person_id=person_id,
                model_version=result.model_version,
                scores=[float(x) for x in person.scores],
                model_trained=result.model_trained,
                attention=person.attention,
            )
    changes = SegmentUpdate(
        outcome.status,
        error=outcome.error,
        timings=outcome.timings,
        frames=outcome.frames,
        faces_found=outcome.faces_found,
        persons=len(outcome.persons),
        shots=outcome.shots if outcome.persons else None,
    )
    finish_segment(session=session, segment_id=segment_id, changes=changes, from_statuses=None)
