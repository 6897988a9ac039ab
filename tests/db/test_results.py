"""Jobs and the read side: results per video, status counts and failures."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.status import VideoStatus
from core.traits import TRAITS
from db import repository as repo
from db.models import Prediction
from tests.support.rows import add_model, add_video

Factory = sessionmaker[Session]
CONTRACT_KEYS = [
    "video",
    "video_id",
    "status",
    "traits",
    "faces_found",
    "frames",
    "model_version",
    "model_trained",
    "error",
    "duration_s",
    "persons",
    "segments",
    "shots",
]


def finish(session: Session, video_id: str, version: str, score: float) -> int:
    repo.finish_stage(
        session=session,
        video_id=video_id,
        changes=repo.StageUpdate(status=VideoStatus.INFERENCE, frames=16, faces_found=14),
        from_statuses=None,
    )
    prediction = repo.save_prediction(
        session=session,
        video_id=video_id,
        model_version=version,
        scores=[score] * 5,
        attention=None,
        model_trained=False,
    )
    repo.transition_video(session=session, video_id=video_id, to_status="done")
    return prediction.id


@pytest.fixture
def job(session_factory: Factory) -> dict[str, str]:
    """A job over four files: done, no_face, failed, and a still-running one."""
    with session_factory.begin() as session:
        version = add_model(session)
        job = repo.create_job(session=session, kind="submit", options={"wait": True})
        ids = {}
        for position, label in enumerate(["good", "faceless", "broken", "running"]):
            video = add_video(session, label, name=f"{label}.mp4")
            repo.attach_video(
                session=session,
                job_id=job.id,
                video_id=video.id,
                name=f"clips/{label}.mp4",
                position=position,
            )
            ids[label] = video.id
        finish(session, ids["good"], version, 0.5)
        repo.transition_video(
            session=session, video_id=ids["faceless"], to_status="no_face", error="no face found"
        )
        repo.transition_video(
            session=session, video_id=ids["broken"], to_status="failed", error="cannot decode"
        )
        repo.transition_video(session=session, video_id=ids["running"], to_status="extracting")
    return {"job": job.id, "version": version, **ids}


def test_create_job_validates_kind(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind="extract")
        assert job.options == {}
        assert repo.get_job(session=session, job_id=job.id) is job
        assert repo.get_job(session=session, job_id="nope") is None
    with pytest.raises(ValueError, match="kind"), session_factory.begin() as session:
        repo.create_job(session=session, kind="train")


def test_attach_video_is_idempotent_per_position(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind="analyze")
        video = add_video(session, "a")
        assert repo.attach_video(
            session=session, job_id=job.id, video_id=video.id, name="a.mp4", position=0
        )
        assert not repo.attach_video(
            session=session, job_id=job.id, video_id=video.id, name="again.mp4", position=0
        )
    with session_factory() as session:
        rows = repo.query_results(session=session, job_id=job.id)
    assert [(row.video, row.job_id) for row in rows] == [("a.mp4", job.id)]


def test_same_bytes_under_two_paths_are_two_entries(session_factory: Factory) -> None:
    """A copy of a file keeps its own row in every view, sharing the one stored video."""
    with session_factory.begin() as session:
        version = add_model(session)
        job = repo.create_job(session=session, kind="submit")
        video = add_video(session, "same", name="a.mp4")
        broken = add_video(session, "broken", name="c.mp4")
        for position, (name, video_id) in enumerate(
            [("in/a.mp4", video.id), ("in/b.mp4", video.id), ("in/c.mp4", broken.id)]
        ):
            assert repo.attach_video(
                session=session, job_id=job.id, video_id=video_id, name=name, position=position
            )
        finish(session, video.id, version, 0.5)
        repo.transition_video(session=session, video_id=broken.id, to_status="failed", error="x")
    with session_factory() as session:
        in_job = repo.query_results(session=session, job_id=job.id)
        everything = repo.query_results(session=session)
        by_name = repo.query_results(session=session, video="b.mp4")
        counts = repo.job_status_counts(session=session, job_id=job.id)
    assert [(r.video, r.video_id, r.status) for r in in_job] == [
        ("in/a.mp4", video.id, "done"),
        ("in/b.mp4", video.id, "done"),
        ("in/c.mp4", broken.id, "failed"),
    ]
    assert sorted(r.video for r in everything) == ["in/a.mp4", "in/b.mp4", "in/c.mp4"]
    assert [(r.video, r.traits is not None) for r in by_name] == [("in/b.mp4", True)]
    assert (counts["done"], counts["failed"]) == (2, 1)


def test_name_lookup_escapes_like_wildcards(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind="analyze")
        for position, label in enumerate(["a_b", "axb"]):
            video = add_video(session, label, name=f"{label}.mp4")
            repo.attach_video(
                session=session,
                job_id=job.id,
                video_id=video.id,
                name=f"d/{label}.mp4",
                position=position,
            )
    with session_factory() as session:
        rows = repo.query_results(session=session, video="a_b.mp4")
    assert [row.video for row in rows] == ["d/a_b.mp4"]


def test_video_ids_with_prefix(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        video = add_video(session, "p")
    with session_factory() as session:
        assert repo.video_ids_with_prefix(session=session, prefix=video.id[:8]) == [video.id]
        assert repo.video_ids_with_prefix(session=session, prefix="zzzzzzzz") == []


def test_job_results_in_submission_order_with_failures(
    session_factory: Factory, job: dict[str, str]
) -> None:
    with session_factory() as session:
        rows = repo.query_results(session=session, job_id=job["job"])
    assert [row.video for row in rows] == [
        "clips/good.mp4",
        "clips/faceless.mp4",
        "clips/broken.mp4",
        "clips/running.mp4",
    ]
    assert [row.status for row in rows] == ["done", "no_face", "failed", "extracting"]
    good, faceless, broken, running = rows
    assert good.traits == dict.fromkeys(TRAITS, 0.5)
    assert list(good.traits) == list(TRAITS)
    assert (good.frames, good.faces_found) == (16, 14)
    assert (good.model_version, good.model_trained, good.error) == (job["version"], False, None)
    assert good.prediction_id is not None
    assert (faceless.traits, faceless.error, faceless.model_version) == (
        None,
        "no face found",
        None,
    )
    assert (broken.traits, broken.error, broken.model_trained) == (None, "cannot decode", None)
    assert running.prediction_id is None
    assert all(row.job_id == job["job"] for row in rows)
    assert all(row.created_at.tzinfo is not None for row in rows)


def test_result_row_is_frozen_and_serializes_to_the_contract(
    session_factory: Factory, job: dict[str, str]
) -> None:
    with session_factory() as session:
        row = repo.query_results(session=session, job_id=job["job"])[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.status = "failed"  # type: ignore[misc]
    payload = row.to_dict()
    assert list(payload) == CONTRACT_KEYS
    assert payload["traits"] == dict.fromkeys(TRAITS, 0.5)


def test_filter_by_video_id_or_name(session_factory: Factory, job: dict[str, str]) -> None:
    with session_factory() as session:
        by_id = repo.query_results(session=session, video=job["broken"])
        by_stored_name = repo.query_results(session=session, video="broken.mp4")
        by_job_name = repo.query_results(session=session, video="clips/broken.mp4")
        in_job = repo.query_results(session=session, job_id=job["job"], video="clips/good.mp4")
        no_match = repo.query_results(session=session, video="other.mp4")
    assert [row.video_id for row in by_id] == [job["broken"]]
    assert [row.video_id for row in by_stored_name] == [job["broken"]]
    assert [row.video_id for row in by_job_name] == [job["broken"]]
    assert [row.video_id for row in in_job] == [job["good"]]
    assert no_match == []
    # Without a job filter, a row names the latest job that gave the path, and the path.
    assert by_id[0].job_id == job["job"]
    assert by_id[0].video == "clips/broken.mp4"


def test_unfiltered_lists_every_video_with_its_latest_prediction(
    session_factory: Factory, job: dict[str, str]
) -> None:
    with session_factory.begin() as session:
        newer = add_model(session, "trained-000000000009", trained=True)
        repo.save_prediction(
            session=session,
            video_id=job["good"],
            model_version=newer,
            scores=[0.9] * 5,
            attention=None,
            model_trained=True,
        )
        # Make the order by time unambiguous whatever the clock resolution.
        session.execute(
            update(Prediction)
            .where(Prediction.model_version == job["version"])
            .values(created_at=datetime.now(UTC) - timedelta(hours=1))
        )
    with session_factory() as session:
        rows = repo.query_results(session=session)
        old = repo.query_results(session=session, model_version=job["version"])
        new = repo.query_results(session=session, model_version=newer)
    assert len(rows) == 4
    latest = next(row for row in rows if row.video_id == job["good"])
    assert (latest.model_version, latest.model_trained) == (newer, True)
    assert latest.traits == dict.fromkeys(TRAITS, 0.9)
    assert [(row.video_id, row.traits) for row in old] == [
        (job["good"], dict.fromkeys(TRAITS, 0.5))
    ]
    assert [row.model_version for row in new] == [newer]


def test_status_counts_cover_every_status(session_factory: Factory, job: dict[str, str]) -> None:
    with session_factory() as session:
        counts = repo.job_status_counts(session=session, job_id=job["job"])
        empty = repo.job_status_counts(session=session, job_id="nope")
    assert counts == {
        "pending": 0,
        "live": 0,
        "ingesting": 0,
        "extracting": 1,
        "inference": 0,
        "done": 1,
        "no_face": 1,
        "failed": 1,
    }
    assert sum(empty.values()) == 0


def test_job_failures(session_factory: Factory, job: dict[str, str]) -> None:
    with session_factory() as session:
        failed = repo.job_failures(session=session, job_id=job["job"])
        with_no_face = repo.job_failures(
            session=session, job_id=job["job"], statuses=("failed", "no_face")
        )
    assert failed == [("clips/broken.mp4", "cannot decode")]
    assert with_no_face == [
        ("clips/faceless.mp4", "no face found"),
        ("clips/broken.mp4", "cannot decode"),
    ]


def test_same_file_in_two_jobs_is_listed_under_each_jobs_name(
    session_factory: Factory, job: dict[str, str]
) -> None:
    with session_factory.begin() as session:
        second = repo.create_job(session=session, kind="analyze")
        video, created = repo.get_or_create_video(
            session=session,
            content_hash=add_video(session, "good").content_hash,
            name="renamed.mp4",
            source_path="/elsewhere/renamed.mp4",
            size_bytes=1000,
        )
        assert not created
        repo.attach_video(
            session=session, job_id=second.id, video_id=video.id, name="renamed.mp4", position=0
        )
    with session_factory() as session:
        rows = repo.query_results(session=session, job_id=second.id)
        by_new_name = repo.query_results(session=session, video="renamed.mp4")
    assert [(row.video, row.status, row.traits is not None) for row in rows] == [
        ("renamed.mp4", "done", True)
    ]
    assert [row.video_id for row in by_new_name] == [job["good"]]
