"""Pipeline bookkeeping: one guarded update per finished stage, delivery counts, the hand-off."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.status import VideoStatus
from db import repository as repo
from db.models import Video
from tests.support.rows import add_model, new_video, run_together

Factory = sessionmaker[Session]
EXTRACTING = [VideoStatus.EXTRACTING]


def load(factory: Factory, video_id: str) -> Video:
    with factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        assert video is not None
        return video


def finish(
    session: Session,
    video_id: str,
    status: VideoStatus = VideoStatus.EXTRACTING,
    from_statuses: Any = None,
    **changes: Any,
) -> bool:
    return repo.finish_stage(
        session=session,
        video_id=video_id,
        changes=repo.StageUpdate(status=status, **changes),
        from_statuses=from_statuses,
    )


def ready(session: Session, video_id: str, stage: str) -> bool:
    """A feature stage finishing: True when it completed both and moved the video on."""
    return finish(session, video_id, VideoStatus.INFERENCE, EXTRACTING, ready=stage)


def test_finish_stage_writes_every_field_and_moves_in_one_update(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "p", status="ingesting")
    info = {"fps": 25, "frame_count": 250, "duration_s": 10.0, "width": 640, "height": 480}
    with session_factory.begin() as session:
        assert finish(
            session,
            video_id,
            VideoStatus.EXTRACTING,
            [VideoStatus.INGESTING],
            probe={**info, "codec": "h264"},
            frames=16,
            timings={"sample": 1.5},
            reset_flags=True,
        )
    video = load(session_factory, video_id)
    assert (video.fps, video.frame_count, video.duration_s, video.width, video.height) == (
        25.0,
        250,
        10.0,
        640,
        480,
    )
    assert (video.status, video.frames, video.faces_found) == ("extracting", 16, None)
    assert video.timings == {"sample": 1.5}
    # A second delivery that lost the race finds the video moved on and changes nothing.
    with session_factory.begin() as session:
        assert not finish(
            session, video_id, VideoStatus.EXTRACTING, [VideoStatus.INGESTING], frames=99
        )
    assert load(session_factory, video_id).frames == 16


def test_finish_stage_keeps_what_is_not_given_and_merges_timings(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "c", status="extracting")
    with session_factory.begin() as session:
        finish(session, video_id, frames=16, timings={"sample": 1.5})
        finish(session, video_id, faces_found=12, timings={"faces": 2})
        finish(session, video_id, probe={"fps": 30.0}, timings={"sample": 1.25})
    video = load(session_factory, video_id)
    assert (video.frames, video.faces_found, video.fps) == (16, 12, 30.0)
    assert video.timings == {"sample": 1.25, "faces": 2.0}
    with pytest.raises(ValueError, match="finite"), session_factory.begin() as session:
        finish(session, video_id, timings={"x": float("nan")})


def test_finish_stage_sets_the_error_with_the_status(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "e", status="extracting")
    with session_factory.begin() as session:
        assert finish(session, video_id, VideoStatus.NO_FACE, EXTRACTING, error="no face found")
    video = load(session_factory, video_id)
    assert (video.status, video.error) == ("no_face", "no face found")
    with session_factory.begin() as session:
        assert not finish(session, "missing", VideoStatus.FAILED, None, error="x")


def test_set_storage_uri_and_touch(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "s")
    before = load(session_factory, video_id).updated_at
    with session_factory.begin() as session:
        repo.set_storage_uri(session=session, video_id=video_id, uri="file:///store/v.mp4")
        repo.touch_video(session=session, video_id=video_id)
    video = load(session_factory, video_id)
    assert video.storage_uri == "file:///store/v.mp4"
    assert video.updated_at >= before


def test_writes_to_a_missing_video_raise(session_factory: Factory) -> None:
    for write in (
        lambda s: repo.set_storage_uri(session=s, video_id="missing", uri="file:///x"),
        lambda s: repo.count_delivery(session=s, video_id="missing", stage="faces"),
    ):
        with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
            write(session)


def test_concurrent_timings_lose_no_update(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "tc", status="extracting")

    def record(index: int) -> None:
        with session_factory.begin() as session:
            finish(session, video_id, timings={f"stage{index}": float(index)})

    run_together(8, record)
    assert load(session_factory, video_id).timings == {f"stage{i}": float(i) for i in range(8)}


def test_feature_stages_move_the_video_once_both_are_done(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "m", status="extracting")
    with session_factory.begin() as session:
        assert not ready(session, video_id, "faces")
        assert not ready(session, video_id, "faces")
        assert load_status(session, video_id) == "extracting"
        assert ready(session, video_id, "flow")
        assert not ready(session, video_id, "flow")
        assert not ready(session, video_id, "faces")
    video = load(session_factory, video_id)
    assert (video.faces_ready, video.flow_ready, video.status) == (True, True, "inference")


def load_status(session: Session, video_id: str) -> str:
    video = repo.get_video(session=session, video_id=video_id)
    assert video is not None
    session.refresh(video)
    return video.status


def test_feature_stages_in_either_order(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "order", status="extracting")
    with session_factory.begin() as session:
        assert not ready(session, video_id, "flow")
    with session_factory.begin() as session:
        assert ready(session, video_id, "faces")


def test_feature_stages_leave_finished_videos_alone(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "f", status="extracting")
    with session_factory.begin() as session:
        ready(session, video_id, "faces")
        repo.transition_video(session=session, video_id=video_id, to_status="failed", error="x")
    with session_factory.begin() as session:
        assert not ready(session, video_id, "flow")
        assert not ready(session, "missing", "flow")
    with pytest.raises(ValueError, match="ready must be one of"), session_factory() as session:
        finish(session, new_video(session_factory, "g", status="extracting"), ready="audio")


def test_reset_flags_allows_a_new_round(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "r", status="extracting")
    with session_factory.begin() as session:
        ready(session, video_id, "faces")
        assert ready(session, video_id, "flow")
        repo.transition_video(session=session, video_id=video_id, to_status="extracting")
        finish(session, video_id, reset_flags=True)
        assert not ready(session, video_id, "flow")
        assert ready(session, video_id, "faces")


def test_concurrent_stage_completions_enqueue_inference_exactly_once(
    session_factory: Factory,
) -> None:
    """Many deliveries of both stages, each with its own session, racing on several videos."""
    video_ids = [new_video(session_factory, f"race{n}", status="extracting") for n in range(4)]
    callers = 8

    for video_id in video_ids:

        def finish(index: int, video_id: str = video_id) -> bool:
            with session_factory.begin() as session:
                stage = "faces" if index % 2 else "flow"
                moved = ready(session, video_id, stage)
                time.sleep(0.02)  # hold the transaction open so that the others overlap it
                return moved

        outcomes = run_together(callers, finish)
        assert outcomes.count(True) == 1, outcomes


def test_count_delivery_counts_per_stage_and_in_total(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "d")
    with session_factory.begin() as session:
        assert repo.count_delivery(session=session, video_id=video_id, stage="ingest") == 1
        assert repo.count_delivery(session=session, video_id=video_id, stage="ingest") == 2
        assert repo.count_delivery(session=session, video_id=video_id, stage="faces") == 1
    video = load(session_factory, video_id)
    assert video.deliveries == {"ingest": 2, "faces": 1}
    assert video.attempts == 3


def test_concurrent_deliveries_are_all_counted(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "dc")

    def deliver(index: int) -> int:
        with session_factory.begin() as session:
            stage = "faces" if index % 2 else "flow"
            return repo.count_delivery(session=session, video_id=video_id, stage=stage)

    counts = run_together(8, deliver)
    assert sorted(counts) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert load(session_factory, video_id).attempts == 8


def test_pin_model_version_first_pin_wins(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "pin")
    with session_factory.begin() as session:
        first = add_model(session, "untrained-aaaaaaaaaaaa")
        second = add_model(session, "untrained-bbbbbbbbbbbb")
        assert repo.pin_model_version(session=session, video_id=video_id, version=first) == first
        assert repo.pin_model_version(session=session, video_id=video_id, version=second) == first
        assert (
            repo.pin_model_version(session=session, video_id=video_id, version=second, replace=True)
            == second
        )
    assert load(session_factory, video_id).model_version == second
    with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
        repo.pin_model_version(session=session, video_id=video_id, version="unknown")
    with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
        repo.pin_model_version(session=session, video_id="missing", version=first)


def test_release_delivery_takes_back_one_start_never_below_zero(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "release")
    with session_factory.begin() as session:
        repo.count_delivery(session=session, video_id=video_id, stage="faces")
        repo.count_delivery(session=session, video_id=video_id, stage="faces")
        repo.count_delivery(session=session, video_id=video_id, stage="flow")
        assert repo.release_delivery(session=session, video_id=video_id, stage="faces") == 1
        assert repo.release_delivery(session=session, video_id=video_id, stage="ingest") == 0
    video = load(session_factory, video_id)
    assert video.deliveries == {"faces": 1, "flow": 1, "ingest": 0}
    assert video.attempts == 3  # every start stays in the total
    with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
        repo.release_delivery(session=session, video_id="missing", stage="faces")
