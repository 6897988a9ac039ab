"""Rows of segments and their persons for the repository tests: a person seen in place, scores
stored for a segment, a guarded finish, the video's aggregate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.persons.person_links import ContinuityLinker
from core.status import VideoStatus
from db import repository as repo
from db.models import Video

Factory = sessionmaker[Session]
LINKER = ContinuityLinker()
LEFT, RIGHT, MIDDLE = [100.0, 100.0, 60.0, 60.0], [500.0, 100.0, 60.0, 60.0], [300, 300, 120, 120]


def person(index: int, face_frames: int, box: Sequence[float]) -> repo.SegmentPersonRecord:
    """A person seen in place at `box` (x, y, w, h) throughout the segment."""
    return repo.SegmentPersonRecord(index, face_frames, list(box), list(box), None)


def score(session: Session, segment_id: str, people: Sequence[Any], model: str) -> list[int]:
    """Store `people` as (record, scores, attention) and their predictions."""
    ids = repo.save_segment_persons(
        session=session, segment_id=segment_id, persons=[p[0] for p in people]
    )
    for segment_person_id, (_, scores, attention) in zip(ids, people, strict=True):
        repo.save_segment_prediction(
            session=session,
            segment_person_id=segment_person_id,
            model_version=model,
            scores=scores,
            model_trained=False,
            attention=attention,
        )
    return ids


def finish(session: Session, segment_id: str, status: str, **changes: Any) -> bool:
    return repo.finish_segment(
        session=session,
        segment_id=segment_id,
        changes=repo.SegmentUpdate(status=VideoStatus(status), **changes),
        from_statuses=None,
    )


def aggregate(factory: Factory, video_id: str, model: str) -> repo.AggregateOutcome | None:
    with factory.begin() as session:
        return repo.aggregate_video(
            session=session, video_id=video_id, model_version=model, linker=LINKER
        )


def load_video(factory: Factory, video_id: str) -> Video:
    with factory() as session:
        video = session.get(Video, video_id)
        assert video is not None
        return video
