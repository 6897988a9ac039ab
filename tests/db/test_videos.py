"""Videos: one row per file content, guarded transitions, stalled-work lookup."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.engine import dispose_after_fork, make_session_factory
from db.models import Video
from tests.support.rows import add_video, new_video, run_together, sha

Factory = sessionmaker[Session]


def video_count(factory: Factory) -> int:
    with factory() as session:
        return session.execute(select(func.count()).select_from(Video)).scalar_one()


def test_new_video_starts_pending(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        video, created = repo.get_or_create_video(
            session=session,
            content_hash=sha("a").upper(),
            name="a.mp4",
            source_path="/in/a.mp4",
            size_bytes=3 * 1024**3,
        )
    assert created
    assert video.content_hash == sha("a")
    assert (video.status, video.attempts, video.faces_ready, video.flow_ready) == (
        "pending",
        0,
        False,
        False,
    )
    assert video.size_bytes == 3 * 1024**3
    assert video.timings == {}
    assert video.created_at.tzinfo is not None


def test_same_content_is_one_row_and_keeps_its_first_name(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        first, created_first = repo.get_or_create_video(
            session=session, content_hash=sha("x"), name="x.mp4", source_path="/x", size_bytes=1
        )
    with session_factory.begin() as session:
        again, created_again = repo.get_or_create_video(
            session=session, content_hash=sha("x"), name="copy.mp4", source_path="/y", size_bytes=1
        )
    assert (created_first, created_again) == (True, False)
    assert again.id == first.id
    assert again.name == "x.mp4"
    assert video_count(session_factory) == 1


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, sha("a") + "0"])
def test_content_hash_must_be_sha256_hex(session_factory: Factory, bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex"), session_factory.begin() as session:
        repo.get_or_create_video(
            session=session, content_hash=bad, name="a", source_path="/a", size_bytes=1
        )


def test_concurrent_get_or_create_makes_one_row(session_factory: Factory) -> None:
    def create(index: int) -> tuple[str, bool]:
        with session_factory.begin() as session:
            video, created = repo.get_or_create_video(
                session=session,
                content_hash=sha("same"),
                name=f"n{index}.mp4",
                source_path=f"/{index}",
                size_bytes=1,
            )
            return video.id, created

    results = run_together(8, create)
    assert len({video_id for video_id, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert video_count(session_factory) == 1


def _create_in_child(engine: Engine, barrier: Any, results: Any) -> None:
    dispose_after_fork(engine)
    factory = make_session_factory(engine)
    barrier.wait(30)
    with factory.begin() as session:
        video, created = repo.get_or_create_video(
            session=session, content_hash=sha("forked"), name="f", source_path="/f", size_bytes=1
        )
        results.put((video.id, created))


def test_concurrent_get_or_create_from_processes_makes_one_row(
    engine: Engine, session_factory: Factory
) -> None:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(4), context.Queue()
    children = [
        context.Process(target=_create_in_child, args=(engine, barrier, results)) for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0] * 4
    outcomes = [results.get(timeout=5) for _ in children]
    assert len({video_id for video_id, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    assert video_count(session_factory) == 1


def test_guarded_transition_moves_only_from_the_allowed_states(
    session_factory: Factory,
) -> None:
    video_id = new_video(session_factory, "t")
    with session_factory.begin() as session:
        assert not repo.transition_video(
            session=session, video_id=video_id, to_status="inference", from_statuses=["extracting"]
        )
        assert repo.transition_video(
            session=session, video_id=video_id, to_status="ingesting", from_statuses=["pending"]
        )
        assert not repo.transition_video(
            session=session, video_id=video_id, to_status="ingesting", from_statuses=["pending"]
        )
        assert not repo.transition_video(
            session=session, video_id=video_id, to_status="done", from_statuses=[]
        )
        assert repo.get_video(session=session, video_id=video_id).status == "ingesting"  # type: ignore[union-attr]


def test_transition_without_guard_and_error_handling(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "e")
    with session_factory.begin() as session:
        assert repo.transition_video(
            session=session, video_id=video_id, to_status="failed", error="not a video file"
        )
    with session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        assert video is not None
        assert (video.status, video.error) == ("failed", "not a video file")
    with session_factory.begin() as session:
        assert repo.transition_video(
            session=session, video_id=video_id, to_status="pending", from_statuses=["failed"]
        )
        video = repo.get_video(session=session, video_id=video_id)
        assert video is not None
        assert (video.status, video.error) == ("pending", None)  # the session object is fresh
    with session_factory() as session:
        assert not repo.transition_video(session=session, video_id="missing", to_status="done")


def test_unknown_status_is_refused(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "u")
    with session_factory.begin() as session:
        with pytest.raises(ValueError, match="status must be one of"):
            repo.transition_video(session=session, video_id=video_id, to_status="finished")
        with pytest.raises(ValueError, match="status must be one of"):
            repo.transition_video(
                session=session, video_id=video_id, to_status="done", from_statuses=["runing"]
            )


def test_database_check_constraint_rejects_unknown_status(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "c")
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.execute(
            text("UPDATE videos SET status = 'finished' WHERE id = :id"), {"id": video_id}
        )


def test_concurrent_transitions_move_the_video_once(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "race")

    def claim(_: int) -> bool:
        with session_factory.begin() as session:
            return repo.transition_video(
                session=session, video_id=video_id, to_status="ingesting", from_statuses=["pending"]
            )

    assert sorted(run_together(8, claim)) == [False] * 7 + [True]


def _age(factory: Factory, video_id: str, when: datetime) -> None:
    with factory.begin() as session:
        session.execute(update(Video).where(Video.id == video_id).values(updated_at=when))


def test_find_stuck_videos_by_status_and_age(session_factory: Factory) -> None:
    now = datetime.now(UTC)
    old = new_video(session_factory, "old", status="extracting")
    older = new_video(session_factory, "older", status="inference")
    fresh = new_video(session_factory, "fresh", status="extracting")
    finished = new_video(session_factory, "finished", status="done")
    _age(session_factory, old, now - timedelta(minutes=30))
    _age(session_factory, older, now - timedelta(hours=2))
    _age(session_factory, finished, now - timedelta(hours=2))
    unfinished = ("pending", "ingesting", "extracting", "inference")
    cutoff = now - timedelta(minutes=10)
    with session_factory() as session:
        stuck = repo.find_stuck_videos(session=session, older_than=cutoff, statuses=unfinished)
        assert [video.id for video in stuck] == [older, old]
        assert fresh not in {video.id for video in stuck}
        assert all(video.updated_at.tzinfo is not None for video in stuck)
        naive = cutoff.replace(tzinfo=None)
        assert (
            len(repo.find_stuck_videos(session=session, older_than=naive, statuses=unfinished)) == 2
        )
        limited = repo.find_stuck_videos(
            session=session, older_than=cutoff, statuses=unfinished, limit=1
        )
        assert [video.id for video in limited] == [older]
        assert repo.find_stuck_videos(session=session, older_than=cutoff, statuses=[]) == []


def test_timestamps_round_trip_as_aware_utc(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "tz")
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    _age(session_factory, video_id, when)
    with session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        assert video is not None
        assert video.updated_at == when
        assert video.updated_at.utcoffset() == timedelta(0)


def test_get_video_by_id(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        video = add_video(session, "g")
    with session_factory() as session:
        assert repo.get_video(session=session, video_id=video.id) is not None
        assert repo.get_video(session=session, video_id="nope") is None
