"""Segments × persons: idempotent writes, guarded segment updates, and the video's aggregate,
computed exactly once, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from core.persons.aggregates import PersonAggregate, mark_main
from core.persons.faces import FaceCrops
from core.persons.person_links import EmbeddingLinker, link_video
from core.persons.regions import Region
from core.persons.tracks import Person as TrackedPerson
from core.persons.tracks import Track
from core.status import VideoStatus
from core.traits import TRAITS
from core.video.segments import Segment as PlannedSegment
from core.video.segments import plan_segments
from db import repository as repo
from db.models import (
    AttentionMap,
    Person,
    Prediction,
    Segment,
    SegmentPerson,
    SegmentPrediction,
    Video,
)
from tests.support.rows import add_model, attention_map, new_video, run_together
from tests.support.segments import (
    LEFT,
    LINKER,
    MIDDLE,
    RIGHT,
    Factory,
    aggregate,
    finish,
    load_video,
    person,
    score,
)

FINAL = [s.value for s in (VideoStatus.DONE, VideoStatus.NO_FACE, VideoStatus.FAILED)]


def planned(factory: Factory, label: str, duration_s: float) -> tuple[str, list[str], str]:
    """A video in inference with its segments planned; returns (video id, segment ids, model)."""
    video_id = new_video(factory, label, status="inference")
    with factory.begin() as session:
        model = add_model(session)
        ids = repo.create_segments(
            session=session, video_id=video_id, segments=plan_segments(duration_s)
        )
    return video_id, ids, model


def count(factory: Factory, entity: Any) -> int:
    with factory() as session:
        return int(session.scalar(select(func.count()).select_from(entity)) or 0)


# --- segments --------------------------------------------------------------------------------


def test_create_segments_is_idempotent_and_the_first_plan_wins(session_factory: Factory) -> None:
    video_id, ids, _ = planned(session_factory, "plan", 40.0)
    assert len(ids) == 3 and len(set(ids)) == 3 and all(len(i) == 32 for i in ids)
    with session_factory.begin() as session:
        assert (
            repo.create_segments(session=session, video_id=video_id, segments=plan_segments(40.0))
            == ids
        )
        # A redelivery planned with other settings gets the stored plan back.
        assert (
            repo.create_segments(
                session=session, video_id=video_id, segments=plan_segments(40.0, 10.0)
            )
            == ids
        )
        stored = repo.get_segments(session=session, video_id=video_id)
        assert [(s.index, s.start_s, s.end_s, s.status) for s in stored] == [
            (0, 0.0, 15.0, "pending"),
            (1, 15.0, 30.0, "pending"),
            (2, 30.0, 40.0, "pending"),
        ]
        segment = repo.get_segment(session=session, segment_id=ids[1])
        assert segment is not None and segment.video_id == video_id
        assert (segment.deliveries, segment.timings, segment.faces_ready) == ({}, {}, False)


def test_racing_creators_store_one_plan(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "race-plan", status="ingesting")

    def create(index: int) -> list[str]:
        with session_factory.begin() as session:
            plan = plan_segments(60.0)
            return repo.create_segments(session=session, video_id=video_id, segments=plan)

    results = run_together(4, create)
    assert all(result == results[0] for result in results) and len(results[0]) == 4
    assert count(session_factory, Segment) == 4


def test_create_segments_refuses_a_bad_plan_and_a_missing_video(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "bad-plan")
    with session_factory.begin() as session:
        with pytest.raises(ValueError, match=r"indexed 0\.\.n-1"):
            repo.create_segments(
                session=session, video_id=video_id, segments=[PlannedSegment(1, 0.0, 5.0)]
            )
        with pytest.raises(ValueError, match="start_s <= end_s"):
            repo.create_segments(
                session=session, video_id=video_id, segments=[PlannedSegment(0, 5.0, 1.0)]
            )
        with pytest.raises(repo.NotFoundError):
            repo.create_segments(session=session, video_id="0" * 32, segments=plan_segments(5))


def test_finish_segment_is_one_guarded_update(session_factory: Factory) -> None:
    _, (segment_id,), _ = planned(session_factory, "guard", 15.0)
    extracting = [VideoStatus.EXTRACTING]
    with session_factory.begin() as session:
        assert repo.finish_segment(
            session=session,
            segment_id=segment_id,
            changes=repo.SegmentUpdate(
                status=VideoStatus.EXTRACTING, frames=16, timings={"sample": 1.0}, reset_flags=True
            ),
            from_statuses=[VideoStatus.PENDING],
        )
        # A duplicate delivery finds the segment moved on and changes nothing.
        assert not repo.finish_segment(
            session=session,
            segment_id=segment_id,
            changes=repo.SegmentUpdate(status=VideoStatus.EXTRACTING, frames=99),
            from_statuses=[VideoStatus.PENDING],
        )
        faces = repo.SegmentUpdate(
            status=VideoStatus.INFERENCE, ready="faces", faces_found=12, persons=2
        )
        flow = repo.SegmentUpdate(status=VideoStatus.INFERENCE, ready="flow", timings={"flow": 2})
        assert not repo.finish_segment(
            session=session, segment_id=segment_id, changes=faces, from_statuses=extracting
        )
        assert not repo.finish_segment(  # the faces flag is set: a redelivery does nothing
            session=session, segment_id=segment_id, changes=faces, from_statuses=extracting
        )
        assert repo.finish_segment(
            session=session, segment_id=segment_id, changes=flow, from_statuses=extracting
        )
        with pytest.raises(ValueError, match="no probe data"):
            repo.finish_segment(
                session=session,
                segment_id=segment_id,
                changes=repo.StageUpdate(status=VideoStatus.FAILED, probe={"fps": 25}),
                from_statuses=None,
            )
    with session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        assert segment is not None
        assert (segment.status, segment.frames, segment.faces_found, segment.persons) == (
            "inference",
            16,
            12,
            2,
        )
        assert segment.timings == {"sample": 1.0, "flow": 2.0}
        assert (segment.faces_ready, segment.flow_ready) == (True, True)


def test_faces_and_flow_racing_move_the_segment_once(session_factory: Factory) -> None:
    _, (segment_id,), _ = planned(session_factory, "join", 15.0)
    with session_factory.begin() as session:
        assert finish(session, segment_id, "extracting")

    def ready(index: int) -> bool:
        with session_factory.begin() as session:
            return repo.finish_segment(
                session=session,
                segment_id=segment_id,
                changes=repo.SegmentUpdate(
                    status=VideoStatus.INFERENCE, ready=("faces", "flow")[index % 2]
                ),
                from_statuses=[VideoStatus.EXTRACTING],
            )

    assert sorted(run_together(2, ready)) == [False, True]


def test_segment_deliveries_count_per_stage(session_factory: Factory) -> None:
    _, (segment_id,), _ = planned(session_factory, "deliver", 15.0)
    with session_factory.begin() as session:
        assert repo.count_segment_delivery(session=session, segment_id=segment_id, stage="faces")
        assert (
            repo.count_segment_delivery(session=session, segment_id=segment_id, stage="faces") == 2
        )
        assert (
            repo.release_segment_delivery(session=session, segment_id=segment_id, stage="flow") == 0
        )
        with pytest.raises(repo.NotFoundError):
            repo.count_segment_delivery(session=session, segment_id="nope", stage="faces")
    with session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        assert segment is not None and segment.deliveries == {"faces": 2, "flow": 0}


# --- persons and predictions -----------------------------------------------------------------


def test_segment_persons_are_stored_once(session_factory: Factory) -> None:
    _, (segment_id,), _ = planned(session_factory, "persons", 15.0)
    crops = FaceCrops(
        crops=np.zeros((4, 8, 8, 3), np.uint8),
        mask=np.array([False, True, True, False]),
        boxes=np.array(
            [[np.nan] * 4, [10, 20, 30, 40], [12, 22, 30, 40], [np.nan] * 4], np.float32
        ),
        confidence=np.zeros(4, np.float32),
    )
    tracked = TrackedPerson(Track(detections=()), crops, Region(0, 0, 90, 120))
    record = repo.SegmentPersonRecord.of(0, tracked)
    assert (record.face_frames, record.first_box, record.last_box) == (
        2,
        [10.0, 20.0, 30.0, 40.0],
        [12.0, 22.0, 30.0, 40.0],
    )
    with session_factory.begin() as session:
        first = repo.save_segment_persons(
            session=session, segment_id=segment_id, persons=[record, person(1, 1, RIGHT)]
        )
        again = repo.save_segment_persons(
            session=session, segment_id=segment_id, persons=[person(0, 9, LEFT), person(1, 9, LEFT)]
        )
        assert again == first and len(first) == 2
        with pytest.raises(ValueError, match="distinct"):
            repo.save_segment_persons(
                session=session, segment_id=segment_id, persons=[person(0, 1, LEFT)] * 2
            )
        with pytest.raises(ValueError, match="4 finite numbers"):
            repo.save_segment_persons(
                session=session, segment_id=segment_id, persons=[person(3, 1, [1, 2, 3])]
            )
        with pytest.raises(repo.NotFoundError):
            repo.save_segment_persons(session=session, segment_id="nope", persons=[])
    with session_factory() as session:
        rows = session.scalars(select(SegmentPerson).order_by(SegmentPerson.index)).all()
        assert [(r.index, r.face_frames, r.person) for r in rows] == [(0, 2, None), (1, 1, None)]
        assert rows[0].region == {"x": 0, "y": 0, "width": 90, "height": 120}


def test_segment_prediction_is_an_upsert_that_keeps_its_attention(
    session_factory: Factory,
) -> None:
    _, (segment_id,), model = planned(session_factory, "upsert", 15.0)
    attention = attention_map(3)
    with session_factory.begin() as session:
        (sp_id,) = score(session, segment_id, [(person(0, 16, LEFT), [0.1] * 5, attention)], model)
        again = repo.save_segment_prediction(
            session=session,
            segment_person_id=sp_id,
            model_version=model,
            scores=[0.2, 0.3, 0.4, 0.5, 0.6],
            model_trained=False,
            attention=None,
        )
        assert again.scores == (0.2, 0.3, 0.4, 0.5, 0.6)
        with pytest.raises(ValueError, match="contradicts"):
            repo.save_segment_prediction(
                session=session,
                segment_person_id=sp_id,
                model_version=model,
                scores=[0.2] * 5,
                model_trained=True,
                attention=None,
            )
        with pytest.raises(ValueError, match="in \\[0, 1\\]"):
            repo.save_segment_prediction(
                session=session,
                segment_person_id=sp_id,
                model_version=model,
                scores=[1.2] * 5,
                model_trained=False,
                attention=None,
            )
    assert count(session_factory, SegmentPrediction) == 1
    with session_factory() as session:
        loaded = repo.load_segment_attention(session=session, segment_prediction_id=again.id)
        assert loaded is not None
        np.testing.assert_allclose(loaded, attention, atol=1e-3)


# --- aggregation -----------------------------------------------------------------------------


def test_aggregate_weights_by_face_frames_and_spreads_across_segments(
    session_factory: Factory,
) -> None:
    video_id, ids, model = planned(session_factory, "weights", 45.0)
    rng = np.random.default_rng(7)
    scores = rng.uniform(0.05, 0.95, size=(3, 5))
    frames = [16, 8, 4]
    maps = [attention_map(i) for i in range(3)]
    with session_factory.begin() as session:
        for segment_id, s, f, a in zip(ids, scores, frames, maps, strict=True):
            score(session, segment_id, [(person(0, f, LEFT), s, a)], model)
            assert finish(session, segment_id, "done", frames=16, faces_found=f, persons=1)
    outcome = aggregate(session_factory, video_id, model)
    assert outcome is not None and outcome.status == VideoStatus.DONE and outcome.error is None
    assert outcome.main == 0 and len(outcome.persons) == 1

    mean = (scores * np.array(frames)[:, None]).sum(axis=0) / sum(frames)
    spread = np.sqrt(((scores - scores.mean(axis=0)) ** 2).mean(axis=0))
    with session_factory() as session:
        (stored,) = repo.video_persons(session=session, video_id=video_id, model_version=model)
        np.testing.assert_allclose(stored.scores, mean, rtol=1e-12)
        np.testing.assert_allclose(stored.spread, spread, rtol=1e-12)
        assert list(stored.spreads) == list(TRAITS)
        assert (stored.person, stored.face_frames, stored.segments, stored.main) == (0, 28, 3, True)
        assert (stored.first_s, stored.last_s, stored.model_trained) == (0.0, 45.0, False)
        # Every existing reader sees the main person's aggregate as the video's result.
        prediction = repo.get_prediction(session=session, video_id=video_id, model_version=model)
        assert prediction is not None
        np.testing.assert_allclose(prediction.scores, mean, rtol=1e-12)
        headline = repo.load_attention(session=session, prediction_id=prediction.id)
        assert headline is not None  # from segment 0, the one with most face frames
        np.testing.assert_allclose(headline, maps[0], atol=1e-3)
        (result,) = repo.query_results(session=session, video=video_id)
        assert result.status == "done" and result.traits == pytest.approx(
            dict(zip(TRAITS, mean, strict=True))
        )
        assert (result.frames, result.faces_found) == (48, 28)
        timeline = repo.video_timeline(session=session, video_id=video_id, model_version=model)
        assert [(r.segment, r.start_s, r.end_s, r.person, r.faces_found) for r in timeline] == [
            (0, 0.0, 15.0, 0, 16),
            (1, 15.0, 30.0, 0, 8),
            (2, 30.0, 45.0, 0, 4),
        ]
        for row, expected in zip(timeline, scores, strict=True):
            assert row.traits is not None
            np.testing.assert_allclose(list(row.traits.values()), expected)


def test_aggregate_waits_for_every_segment_and_runs_once(session_factory: Factory) -> None:
    video_id, ids, model = planned(session_factory, "once", 30.0)
    with session_factory.begin() as session:
        score(session, ids[0], [(person(0, 10, LEFT), [0.5] * 5, None)], model)
        assert finish(session, ids[0], "done")
    assert aggregate(session_factory, video_id, model) is None  # segment 1 still running
    assert load_video(session_factory, video_id).status == "inference"
    assert count(session_factory, Person) == 0
    with session_factory.begin() as session:
        assert finish(session, ids[1], "no_face", faces_found=0, persons=0)
    outcome = aggregate(session_factory, video_id, model)
    assert outcome is not None and outcome.status == VideoStatus.DONE
    before = load_video(session_factory, video_id)
    # A redelivered aggregation finds the video final and changes nothing.
    assert aggregate(session_factory, video_id, model) is None
    after = load_video(session_factory, video_id)
    assert (after.status, after.updated_at) == (before.status, before.updated_at)
    assert count(session_factory, Person) == 1 and count(session_factory, Prediction) == 1
    # The segment without a face is one row of the timeline, without a person.
    with session_factory() as session:
        timeline = repo.video_timeline(session=session, video_id=video_id, model_version=model)
    assert [(r.segment, r.status, r.person, r.traits is None) for r in timeline] == [
        (0, "done", 0, False),
        (1, "no_face", None, True),
    ]


def test_the_last_two_segments_finishing_at_once_aggregate_exactly_once(
    session_factory: Factory,
) -> None:
    """Each racer finishes its own segment and aggregates in the same transaction."""
    for attempt in range(3):
        video_id, ids, model = planned(session_factory, f"race-{attempt}", 30.0)
        with session_factory.begin() as session:
            for i, segment_id in enumerate(ids):
                score(session, segment_id, [(person(0, 8 + i, LEFT), [0.4] * 5, None)], model)

        def last(
            index: int, ids: list[str] = ids, video_id: str = video_id, model: str = model
        ) -> bool:
            with session_factory.begin() as session:
                assert finish(session, ids[index], "done")
                outcome = repo.aggregate_video(
                    session=session, video_id=video_id, model_version=model, linker=LINKER
                )
                return outcome is not None

        assert sorted(run_together(2, last)) == [False, True]
        assert load_video(session_factory, video_id).status == "done"
        with session_factory() as session:
            persons = repo.video_persons(session=session, video_id=video_id, model_version=model)
            assert [(p.person, p.segments, p.face_frames) for p in persons] == [(0, 2, 17)]
            predictions = session.scalars(
                select(Prediction).where(Prediction.video_id == video_id)
            ).all()
            assert len(predictions) == 1


def test_racing_aggregations_of_a_finished_video_store_one_result(
    session_factory: Factory,
) -> None:
    video_id, ids, model = planned(session_factory, "race-all", 45.0)
    with session_factory.begin() as session:
        for segment_id in ids:
            score(session, segment_id, [(person(0, 8, LEFT), [0.3] * 5, attention_map())], model)
            assert finish(session, segment_id, "done")
    outcomes = run_together(6, lambda _: aggregate(session_factory, video_id, model))
    assert sum(outcome is not None for outcome in outcomes) == 1
    assert count(session_factory, Person) == 1
    assert count(session_factory, Prediction) == 1 and count(session_factory, AttentionMap) == 1


def test_continuity_links_persons_across_segments(session_factory: Factory) -> None:
    """A leaves after segment 1, B joins in segment 1, C appears elsewhere in segment 2."""
    video_id, ids, model = planned(session_factory, "links", 45.0)
    a, b, c = [0.2] * 5, [0.6] * 5, [0.9] * 5
    with session_factory.begin() as session:
        score(session, ids[0], [(person(0, 16, LEFT), a, None)], model)
        score(
            session,
            ids[1],
            [(person(0, 12, RIGHT), b, attention_map(1)), (person(1, 6, LEFT), a, None)],
            model,
        )
        score(
            session,
            ids[2],
            [(person(0, 16, RIGHT), b, attention_map(2)), (person(1, 5, MIDDLE), c, None)],
            model,
        )
        for segment_id in ids:
            assert finish(session, segment_id, "done")
    outcome = aggregate(session_factory, video_id, model)
    assert outcome is not None and outcome.main == 1
    assert [
        (p.person, p.segments, p.face_frames, p.first_s, p.last_s, p.main) for p in outcome.persons
    ] == [
        (0, 2, 22, 0.0, 30.0, False),
        (1, 2, 28, 15.0, 45.0, True),
        (2, 1, 5, 30.0, 45.0, False),
    ]
    with session_factory() as session:
        timeline = repo.video_timeline(session=session, video_id=video_id, model_version=model)
        assert [(r.segment, r.person_index, r.person) for r in timeline] == [
            (0, 0, 0),
            (1, 0, 1),
            (1, 1, 0),
            (2, 0, 1),
            (2, 1, 2),
        ]
        prediction = repo.get_prediction(session=session, video_id=video_id, model_version=model)
        assert prediction is not None and prediction.scores == pytest.approx(b)
        headline = repo.load_attention(session=session, prediction_id=prediction.id)
        np.testing.assert_allclose(headline, attention_map(2), atol=1e-3)  # B's 16-frame segment


def test_stored_embeddings_find_a_person_again_after_a_faceless_segment(
    session_factory: Factory,
) -> None:
    """A, then B in A's place, then no face, then A: identity embeddings stored with the
    persons link across the cut and the gap, where continuity cannot."""
    video_id, ids, model = planned(session_factory, "identity", 60.0)
    face_a, face_b = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]

    def seen(face: np.ndarray) -> repo.SegmentPersonRecord:
        return replace(person(0, 16, LEFT), embedding=face)

    with session_factory.begin() as session:
        score(session, ids[0], [(seen(face_a), [0.2] * 5, None)], model)
        score(session, ids[1], [(seen(face_b), [0.6] * 5, None)], model)
        score(session, ids[3], [(seen(face_a), [0.4] * 5, None)], model)
        for segment_id in (ids[0], ids[1], ids[3]):
            assert finish(session, segment_id, "done")
        assert finish(session, ids[2], "no_face", faces_found=0, persons=0)
    with session_factory.begin() as session:
        outcome = repo.aggregate_video(
            session=session, video_id=video_id, model_version=model, linker=EmbeddingLinker()
        )
    assert outcome is not None
    assert [(p.person, p.segments, p.first_s, p.last_s) for p in outcome.persons] == [
        (0, 2, 0.0, 60.0),
        (1, 1, 15.0, 30.0),
    ]
    with session_factory() as session:
        timeline = repo.video_timeline(session=session, video_id=video_id, model_version=model)
        assert [(r.segment, r.person) for r in timeline] == [(0, 0), (1, 1), (2, None), (3, 0)]


def test_link_video_numbers_in_order_of_appearance() -> None:
    from core.persons.person_links import PersonSummary

    def at(box: Sequence[float]) -> PersonSummary:
        return PersonSummary(np.array(box, float), np.array(box, float), 8)

    numbers = link_video([[at(LEFT)], [], [at(LEFT), None], [at(RIGHT), at(LEFT)]], LINKER)
    # After a segment without persons everyone is new; a person without boxes is new.
    assert numbers == [[0], [], [1, 2], [3, 1]]


def test_main_person_ties_go_to_the_lowest_number() -> None:
    def agg(person: int, frames: int) -> PersonAggregate:
        return PersonAggregate(person, (0.5,) * 5, (0.0,) * 5, frames, 1, 0.0, 15.0)

    assert [a.main for a in mark_main([agg(0, 8), agg(1, 9), agg(2, 9)])] == [False, True, False]
    assert mark_main([]) == []


@pytest.mark.parametrize(
    ("statuses", "expected", "error"),
    [
        (["no_face", "no_face"], "no_face", None),
        (["failed", "failed"], "failed", "segment 0 (0-15 s): boom 0; segment 1 (15-30 s): boom 1"),
        (["no_face", "failed"], "failed", "segment 1 (15-30 s): boom 1"),
    ],
)
def test_a_video_without_results_is_no_face_or_failed(
    session_factory: Factory, statuses: list[str], expected: str, error: str | None
) -> None:
    video_id, ids, model = planned(session_factory, f"final-{'-'.join(statuses)}", 30.0)
    with session_factory.begin() as session:
        for i, (segment_id, status) in enumerate(zip(ids, statuses, strict=True)):
            message = f"boom {i}" if status == "failed" else None
            assert finish(session, segment_id, status, error=message, faces_found=0)
    outcome = aggregate(session_factory, video_id, model)
    assert outcome is not None
    assert (outcome.status, outcome.error, outcome.persons, outcome.main) == (
        expected,
        error,
        (),
        None,
    )
    video = load_video(session_factory, video_id)
    assert (video.status, video.error, video.faces_found) == (expected, error, 0)
    assert count(session_factory, Prediction) == 0 and count(session_factory, Person) == 0


def test_a_video_with_one_result_is_done_and_lists_failed_segments(
    session_factory: Factory,
) -> None:
    video_id, ids, model = planned(session_factory, "partial", 45.0)
    with session_factory.begin() as session:
        score(session, ids[1], [(person(0, 9, LEFT), [0.7] * 5, None)], model)
        assert finish(session, ids[0], "failed", error="cannot decode")
        assert finish(session, ids[1], "done")
        assert finish(session, ids[2], "no_face")
    outcome = aggregate(session_factory, video_id, model)
    assert outcome is not None
    assert (outcome.status, outcome.error) == ("done", "segment 0 (0-15 s): cannot decode")
    assert load_video(session_factory, video_id).error == "segment 0 (0-15 s): cannot decode"


def test_a_final_video_is_never_aggregated(session_factory: Factory) -> None:
    video_id, (segment_id,), model = planned(session_factory, "final", 15.0)
    with session_factory.begin() as session:
        assert finish(session, segment_id, "done")
        assert repo.transition_video(session=session, video_id=video_id, to_status="failed")
    assert aggregate(session_factory, video_id, model) is None
    assert aggregate(session_factory, "0" * 32, model) is None


def test_deleting_a_video_removes_all_its_segment_rows(session_factory: Factory) -> None:
    video_id, ids, model = planned(session_factory, "cascade", 30.0)
    other_id, other_ids, _ = planned(session_factory, "kept", 15.0)
    with session_factory.begin() as session:
        for segment_id in [*ids, *other_ids]:
            score(session, segment_id, [(person(0, 8, LEFT), [0.5] * 5, attention_map())], model)
            assert finish(session, segment_id, "done")
    assert aggregate(session_factory, video_id, model) is not None
    assert aggregate(session_factory, other_id, model) is not None
    with session_factory.begin() as session:
        session.execute(delete(Video).where(Video.id == video_id))
    counts = [
        count(session_factory, entity)
        for entity in (Segment, SegmentPerson, SegmentPrediction, Person, Prediction)
    ]
    assert counts == [1, 1, 1, 1, 1]  # the other video's rows only
