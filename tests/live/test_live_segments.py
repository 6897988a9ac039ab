"""Segments appended to a live video, and its aggregate held back while it is live (SQLite
and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.status import VideoStatus
from db import repository as repo
from db.models import Segment
from db.repository.segments import append_segment
from tests.support.rows import add_model, run_together
from tests.support.segments import LEFT, Factory, aggregate, finish, load_video, person, score


def _live_video(factory: Factory) -> tuple[str, str]:
    from tests.support.rows import add_video

    with factory.begin() as session:
        video = add_video(session, "camera", name="camera")
        model = add_model(session)
        repo.pin_model_version(session=session, video_id=video.id, version=model)
        repo.transition_video(session=session, video_id=video.id, to_status=VideoStatus.LIVE)
        return video.id, model


def test_appended_segments_take_the_next_index_and_may_leave_a_gap(
    session_factory: Factory,
) -> None:
    video_id, _ = _live_video(session_factory)
    with session_factory.begin() as session:
        first = append_segment(session=session, video_id=video_id, start_s=0.0, end_s=2.0)
        second = append_segment(session=session, video_id=video_id, start_s=2.0, end_s=4.0)
        after_gap = append_segment(session=session, video_id=video_id, start_s=10.0, end_s=12.0)
    with session_factory() as session:
        rows = session.execute(
            select(Segment.id, Segment.index, Segment.start_s, Segment.status)
            .where(Segment.video_id == video_id)
            .order_by(Segment.index)
        ).all()
    assert [tuple(r) for r in rows] == [
        (first, 0, 0.0, "pending"),
        (second, 1, 2.0, "pending"),
        (after_gap, 2, 10.0, "pending"),
    ]
    with pytest.raises(ValueError, match="overlaps segment 2"), session_factory.begin() as s:
        append_segment(session=s, video_id=video_id, start_s=11.0, end_s=13.0)
    with pytest.raises(ValueError, match="start_s < end_s"), session_factory.begin() as s:
        append_segment(session=s, video_id=video_id, start_s=14.0, end_s=14.0)
    with pytest.raises(repo.NotFoundError), session_factory.begin() as s:
        append_segment(session=s, video_id="nope", start_s=0.0, end_s=1.0)


def test_racing_appends_take_distinct_indexes(session_factory: Factory) -> None:
    video_id, _ = _live_video(session_factory)

    def append(i: int) -> str | None:
        # Each racer appends after what it reads last; one that lost the race to a later
        # segment is refused (overlap), never given an index already taken.
        try:
            with session_factory.begin() as session:
                return append_segment(
                    session=session, video_id=video_id, start_s=10.0 * i, end_s=10.0 * i + 1
                )
        except ValueError as exc:
            assert "overlaps" in str(exc)
            return None

    appended = [a for a in run_together(4, append) if a is not None]
    with session_factory() as session:
        rows = session.execute(
            select(Segment.index, Segment.start_s).where(Segment.video_id == video_id)
        ).all()
    assert appended and sorted(i for i, _ in rows) == list(range(len(appended)))
    assert [start for _, start in sorted(rows)] == sorted(start for _, start in rows)


def test_a_live_video_is_aggregated_only_once_it_leaves_live(
    session_factory: Factory,
) -> None:
    video_id, model = _live_video(session_factory)
    with session_factory.begin() as session:
        segment_id = append_segment(session=session, video_id=video_id, start_s=0.0, end_s=2.0)
        score(session, segment_id, [(person(0, 8, LEFT), [0.5] * 5, None)], model)
        assert finish(session, segment_id, "done")
    # Every segment so far is final, but more are on their way.
    assert aggregate(session_factory, video_id, model) is None
    assert load_video(session_factory, video_id).status == "live"
    with session_factory.begin() as session:
        repo.transition_video(
            session=session,
            video_id=video_id,
            to_status=VideoStatus.EXTRACTING,
            from_statuses=[VideoStatus.LIVE],
        )
    outcome = aggregate(session_factory, video_id, model)
    assert outcome is not None and outcome.status == VideoStatus.DONE
    assert load_video(session_factory, video_id).status == "done"


def test_persons_of_a_live_video_are_numbered_over_its_final_segments_so_far(
    session_factory: Factory,
) -> None:
    from db.models import SegmentPerson
    from db.repository.aggregates import number_live_persons
    from tests.support.segments import LINKER

    video_id, model = _live_video(session_factory)
    with session_factory.begin() as session:
        ids = [
            append_segment(session=session, video_id=video_id, start_s=2.0 * i, end_s=2.0 * i + 2)
            for i in range(4)
        ]
        for i in (0, 1, 3):  # segment 2 is still running
            score(session, ids[i], [(person(0, 8, LEFT), [0.5] * 5, None)], model)
            assert finish(session, ids[i], "done")
    with session_factory.begin() as session:
        numbered = number_live_persons(
            session=session, video_id=video_id, model_version=model, linker=LINKER
        )
    assert numbered == 2
    with session_factory() as session:
        persons = dict(
            session.execute(select(SegmentPerson.segment_id, SegmentPerson.person)).all()
        )
    assert [persons[i] for i in ids if i in persons] == [0, 0, None]
    with session_factory.begin() as session:
        repo.transition_video(session=session, video_id=video_id, to_status=VideoStatus.DONE)
        assert (
            number_live_persons(
                session=session, video_id=video_id, model_version=model, linker=LINKER
            )
            == 0
        )


def test_a_segment_whose_analysis_raised_in_the_watcher_fails_and_ends_its_video(
    session_factory: Factory,
) -> None:
    from types import SimpleNamespace

    from db.repository.stages import StageUpdate
    from tests.support.segments import LINKER
    from workers.services.watch import Watcher

    video_id, _ = _live_video(session_factory)
    with session_factory.begin() as session:
        segment_id = append_segment(session=session, video_id=video_id, start_s=0.0, end_s=2.0)
        repo.finish_segment(
            session=session,
            segment_id=segment_id,
            changes=StageUpdate(VideoStatus.EXTRACTING),
            from_statuses=None,
        )
        repo.transition_video(session=session, video_id=video_id, to_status=VideoStatus.EXTRACTING)
    ctx = SimpleNamespace(session_factory=session_factory, linker=LINKER)
    watcher = Watcher(ctx, segment_seconds=2.0, reconnect_s=1.0)  # type: ignore[arg-type]
    watcher._fail_segment(segment_id, "faces failed in the watcher: boom")
    video = load_video(session_factory, video_id)
    assert video.status == "failed"
    assert video.error == "segment 0 (0-2 s): faces failed in the watcher: boom"
