"""Pipeline bookkeeping: probe data, timings, delivery counts and the exactly-once hand-off."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.models import Video
from tests.db.helpers import add_model, new_video, run_together

Factory = sessionmaker[Session]


def load(factory: Factory, video_id: str) -> Video:
    with factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        assert video is not None
        return video


def test_record_probe_stores_known_fields_and_ignores_others(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "p")
    info = {"fps": 25, "frame_count": 250, "duration_s": 10.0, "width": 640, "height": 480}
    with session_factory.begin() as session:
        repo.record_probe(session=session, video_id=video_id, info={**info, "codec": "h264"})
    video = load(session_factory, video_id)
    assert (video.fps, video.frame_count, video.duration_s, video.width, video.height) == (
        25.0,
        250,
        10.0,
        640,
        480,
    )
    with session_factory.begin() as session:
        repo.record_probe(session=session, video_id=video_id, info={"fps": 30.0})
    assert (load(session_factory, video_id).fps, load(session_factory, video_id).width) == (
        30.0,
        640,
    )


def test_record_counts_keeps_what_is_not_given(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "c")
    with session_factory.begin() as session:
        repo.record_counts(session=session, video_id=video_id, frames=16)
        repo.record_counts(session=session, video_id=video_id, faces_found=12)
    video = load(session_factory, video_id)
    assert (video.frames, video.faces_found) == (16, 12)


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
        lambda s: repo.record_probe(session=s, video_id="missing", info={"fps": 1.0}),
        lambda s: repo.record_counts(session=s, video_id="missing", frames=1),
        lambda s: repo.record_timings(session=s, video_id="missing", timings={"a": 1.0}),
        lambda s: repo.count_delivery(session=s, video_id="missing", stage="faces"),
    ):
        with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
            write(session)


def test_record_timings_merges(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "t")
    with session_factory.begin() as session:
        repo.record_timings(session=session, video_id=video_id, timings={"sample": 1.5})
        repo.record_timings(session=session, video_id=video_id, timings={"faces": 2})
        repo.record_timings(session=session, video_id=video_id, timings={"sample": 1.25})
    assert load(session_factory, video_id).timings == {"sample": 1.25, "faces": 2.0}
    with pytest.raises(ValueError, match="finite"), session_factory.begin() as session:
        repo.record_timings(session=session, video_id=video_id, timings={"x": float("nan")})


def test_concurrent_timings_lose_no_update(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "tc")

    def record(index: int) -> None:
        with session_factory.begin() as session:
            repo.record_timings(
                session=session, video_id=video_id, timings={f"stage{index}": float(index)}
            )

    run_together(8, record)
    assert load(session_factory, video_id).timings == {f"stage{i}": float(i) for i in range(8)}


def test_mark_stage_ready_is_true_once_when_both_are_done(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "m", status="extracting")
    with session_factory.begin() as session:
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")
        assert repo.mark_stage_ready(session=session, video_id=video_id, stage="flow")
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="flow")
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")
    video = load(session_factory, video_id)
    assert (video.faces_ready, video.flow_ready) == (True, True)


def test_mark_stage_ready_in_either_order(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "order", status="extracting")
    with session_factory.begin() as session:
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="flow")
    with session_factory.begin() as session:
        assert repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")


def test_mark_stage_ready_leaves_finished_videos_alone(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "f", status="extracting")
    with session_factory.begin() as session:
        repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")
        repo.transition_video(session=session, video_id=video_id, to_status="failed", error="x")
    with session_factory.begin() as session:
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="flow")
        assert not repo.mark_stage_ready(session=session, video_id="missing", stage="flow")
    with pytest.raises(ValueError, match="stage must be one of"), session_factory() as session:
        repo.mark_stage_ready(session=session, video_id=video_id, stage="audio")


def test_reset_stage_flags_allows_a_new_round(session_factory: Factory) -> None:
    video_id = new_video(session_factory, "r", status="extracting")
    with session_factory.begin() as session:
        repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")
        assert repo.mark_stage_ready(session=session, video_id=video_id, stage="flow")
        repo.reset_stage_flags(session=session, video_id=video_id)
        assert not repo.mark_stage_ready(session=session, video_id=video_id, stage="flow")
        assert repo.mark_stage_ready(session=session, video_id=video_id, stage="faces")


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
                ready = repo.mark_stage_ready(session=session, video_id=video_id, stage=stage)
                time.sleep(0.02)  # hold the transaction open so that the others overlap it
                return ready

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
