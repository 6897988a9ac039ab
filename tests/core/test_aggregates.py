"""core.persons.aggregates on plain values: a person's aggregate, the main person, the status.

The same rules run on database rows in `db.repository.aggregate_video` (tests/db/test_segments.py);
here they take any object with a final segment's fields, no ORM class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from core.persons.aggregates import (
    PersonAggregate,
    ScoredSegment,
    aggregate_person,
    decide_status,
    mark_main,
)
from core.status import VideoStatus


@dataclass(frozen=True)
class Final:
    index: int
    start_s: float
    end_s: float
    status: str
    error: str | None = None


def test_a_person_is_the_face_frame_weighted_mean_of_its_segments() -> None:
    low = ScoredSegment(0, 0.0, 15.0, face_frames=3, scores=(0.2,) * 5, prediction_id=1)
    high = ScoredSegment(2, 30.0, 45.0, face_frames=1, scores=(0.6,) * 5, prediction_id=2)
    aggregate = aggregate_person(4, [low, high])
    np.testing.assert_allclose(aggregate.scores, [0.3] * 5)
    np.testing.assert_allclose(aggregate.spread, [0.2] * 5)
    assert (aggregate.person, aggregate.face_frames, aggregate.segments) == (4, 4, 2)
    assert (aggregate.first_s, aggregate.last_s, aggregate.main) == (0.0, 45.0, False)
    with pytest.raises(ValueError, match="person 4 has no scored segment"):
        aggregate_person(4, [])


def test_the_main_person_has_most_face_frames() -> None:
    def agg(person: int, frames: int) -> PersonAggregate:
        return PersonAggregate(person, (0.5,) * 5, (0.0,) * 5, frames, 1, 0.0, 15.0)

    assert [a.main for a in mark_main([agg(3, 2), agg(1, 9), agg(0, 5)])] == [False, True, False]


def test_the_status_comes_from_the_final_segments() -> None:
    failed = Final(1, 15.0, 30.0, VideoStatus.FAILED.value, "cannot decode frame 400")
    no_face = Final(0, 0.0, 15.0, VideoStatus.NO_FACE.value)
    assert decide_status([no_face, failed], scored=True, model_version="m1") == (
        VideoStatus.DONE,
        "segment 1 (15-30 s): cannot decode frame 400",
    )
    assert decide_status([no_face], scored=False, model_version="m1") == (VideoStatus.NO_FACE, None)
    status, error = decide_status([no_face, failed], scored=False, model_version="m1")
    assert status == VideoStatus.FAILED and error == "segment 1 (15-30 s): cannot decode frame 400"
    status, error = decide_status([Final(0, 0.0, 15.0, "done")], scored=False, model_version="m1")
    assert status == VideoStatus.FAILED and error == "no segment has a result from 'm1'"
