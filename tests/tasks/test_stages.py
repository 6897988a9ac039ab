"""The distributed stages, called as plain functions (no broker), against SQLite and storage.

They must give exactly what `oceanstream analyze` gives for the same file, and stay
idempotent when a message is delivered twice or late.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest

from core.artifacts import LAYOUT
from core.bundle import build_default_bundle
from core.errors import StorageError
from core.pipeline import Analyzer, PipelineConfig
from core.storage import ArtifactStore
from db import repository as repo
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from db.repository.stages import StageUpdate
from tasks import stages
from tasks.context import StageContext
from tasks.stages.features import FACES, FLOW
from tasks.stages.skeleton import VideoRef, run_stage
from tests.clips import write_faceless, write_random_bytes, write_talking_head, write_text
from tests.tasks.helpers import submit

T = 8


@pytest.fixture(scope="module")
def bundle():
    return build_default_bundle(num_frames=T)


@pytest.fixture
def ctx(tmp_path: Path, bundle, face_detector) -> StageContext:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    session_factory = make_session_factory(make_engine(url))
    meta = bundle.metadata
    with session_factory.begin() as session:
        repo.ensure_model_version(
            session=session, version=meta.version, trained=meta.trained, metadata=meta.to_dict()
        )
    context = StageContext(
        session_factory=session_factory,
        store=ArtifactStore(f"file://{tmp_path / 'storage'}"),
        config=PipelineConfig(num_frames=T),
        load_bundle=lambda version: bundle,
        active_version=lambda session=None: meta.version,
    )
    context._detectors[meta.crop_size] = face_detector
    return context


def video_row(ctx: StageContext, video_id: str):
    with ctx.session_factory() as session:
        return repo.get_video(session=session, video_id=video_id)


def test_stages_match_in_process_analysis(ctx: StageContext, bundle, tmp_path: Path) -> None:
    clip = write_talking_head(tmp_path / "a.mp4", seconds=1.5, seed=4)
    video_id = submit(ctx, clip)
    assert stages.run_ingest(ctx, video_id) is True
    # Only the second feature stage to finish enqueues inference.
    assert stages.run_flow(ctx, video_id) is False
    assert stages.run_faces(ctx, video_id) is True
    assert stages.run_inference(ctx, video_id) == "done"

    expected = Analyzer(bundle, ctx.config, detector=ctx.detector(112)).analyze(clip)
    with ctx.session_factory() as session:
        prediction = repo.get_prediction(
            session=session, video_id=video_id, model_version=bundle.metadata.version
        )
        attention = repo.load_attention(session=session, prediction_id=prediction.id)
    stored = [getattr(prediction, trait) for trait in expected.traits]
    np.testing.assert_allclose(stored, expected.scores, atol=1e-6)
    np.testing.assert_allclose(attention, expected.attention, atol=2e-3)  # float16 storage
    row = video_row(ctx, video_id)
    assert row.status == "done" and row.faces_found == expected.faces_found
    assert {"sample", "faces", "flow", "inference"} <= set(row.timings)


def test_duplicate_and_late_deliveries_change_nothing(ctx: StageContext, tmp_path: Path) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "b.mp4", seconds=1.5, seed=5))
    assert stages.run_ingest(ctx, video_id)
    # A redelivered ingest finds the video extracting: it resends faces and flow (their
    # messages may have died with the worker) without decoding again.
    assert stages.run_ingest(ctx, video_id) is True
    assert video_row(ctx, video_id).deliveries == {"ingest": 1}
    assert stages.run_faces(ctx, video_id) is False
    assert stages.run_faces(ctx, video_id) is False  # duplicate: must not enqueue inference
    assert stages.run_flow(ctx, video_id) is True
    assert stages.run_flow(ctx, video_id) is True  # redelivered: resend inference
    assert stages.run_inference(ctx, video_id) == "done"
    assert stages.run_inference(ctx, video_id) is None
    assert stages.run_ingest(ctx, video_id) is False  # done: nothing to resend
    with ctx.session_factory() as session:
        rows = repo.query_results(session=session, video=video_id)
    assert len(rows) == 1 and rows[0].status == "done"


def test_faceless_and_broken_videos_end_final_with_messages(
    ctx: StageContext, tmp_path: Path
) -> None:
    faceless = submit(ctx, write_faceless(tmp_path / "c.mp4", seconds=1.5))
    assert stages.run_ingest(ctx, faceless)
    assert stages.run_faces(ctx, faceless) is False
    assert stages.run_flow(ctx, faceless) is False  # no inference for a no_face video
    row = video_row(ctx, faceless)
    assert row.status == "no_face" and "no face" in row.error

    broken = submit(ctx, write_text(tmp_path / "d.mp4"))
    assert stages.run_ingest(ctx, broken) is False
    row = video_row(ctx, broken)
    assert row.status == "failed" and "not a video" in row.error


def test_missing_features_fail_that_video_alone(ctx: StageContext, tmp_path: Path) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "e.mp4", seconds=1.5, seed=6))
    assert stages.run_ingest(ctx, video_id)
    stages.run_faces(ctx, video_id)
    assert stages.run_flow(ctx, video_id)
    ctx.store.delete_prefix(LAYOUT.dynamic_features(video_id))
    assert stages.run_inference(ctx, video_id) == "failed"
    row = video_row(ctx, video_id)
    assert row.status == "failed" and "missing" in row.error


def test_delivery_cap_fails_a_video_that_never_finishes(ctx: StageContext, tmp_path: Path) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "f.mp4", seconds=1.5, seed=7))
    with ctx.session_factory.begin() as session:
        for _ in range(ctx.max_deliveries):
            repo.count_delivery(session=session, video_id=video_id, stage="ingest")
    assert stages.run_ingest(ctx, video_id) is False
    row = video_row(ctx, video_id)
    assert row.status == "failed"
    assert row.error == (
        "ingest stage started 7 times without finishing (its worker died, timed out or hit "
        "an unexpected error each time); gave up"
    )


def test_duplicates_of_a_finished_feature_stage_are_not_starts(
    ctx: StageContext, tmp_path: Path
) -> None:
    """Faces done, flow's worker stopped: the faces messages that pile up meanwhile (resent,
    redelivered) do nothing, count nothing, and never fail the video."""
    video_id = submit(ctx, write_talking_head(tmp_path / "dup.mp4", seconds=1.5, seed=8))
    assert stages.run_ingest(ctx, video_id)
    assert stages.run_faces(ctx, video_id) is False
    for _ in range(2 * ctx.max_deliveries):
        assert stages.run_faces(ctx, video_id) is False
    row = video_row(ctx, video_id)
    assert (row.status, row.deliveries["faces"], row.error) == ("extracting", 1, None)
    assert stages.run_flow(ctx, video_id) is True
    assert stages.run_inference(ctx, video_id) == "done"


def test_a_start_that_meets_an_outage_is_taken_back(ctx: StageContext, tmp_path: Path) -> None:
    """A storage outage of minutes retries the task many times; none of it uses up the count."""
    video_id = submit(ctx, write_talking_head(tmp_path / "out.mp4", seconds=1.5, seed=9))
    assert stages.run_ingest(ctx, video_id)

    def storage_down(ctx: StageContext, ref: VideoRef) -> StageUpdate:
        raise StorageError("cannot reach the artifact store")

    flow_in_outage = dataclasses.replace(FLOW, work=storage_down)
    for _ in range(3 * ctx.max_deliveries):
        with pytest.raises(StorageError):
            run_stage(ctx, video_id, flow_in_outage)
    row = video_row(ctx, video_id)
    assert (row.status, row.deliveries["flow"]) == ("extracting", 0)
    assert stages.run_flow(ctx, video_id) is False  # the outage is over
    assert video_row(ctx, video_id).deliveries["flow"] == 1


def test_a_stage_that_keeps_failing_on_a_bug_gives_up_saying_so(
    ctx: StageContext, tmp_path: Path
) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "bug.mp4", seconds=1.5, seed=10))
    assert stages.run_ingest(ctx, video_id)

    def bug(ctx: StageContext, ref: VideoRef) -> StageUpdate:
        raise TypeError("unsupported operand")

    buggy_faces = dataclasses.replace(FACES, work=bug)
    for _ in range(ctx.max_deliveries):
        with pytest.raises(TypeError):
            run_stage(ctx, video_id, buggy_faces)
    assert video_row(ctx, video_id).status == "extracting"
    assert run_stage(ctx, video_id, buggy_faces) is False
    row = video_row(ctx, video_id)
    assert row.status == "failed"
    assert row.error.startswith("faces stage started 7 times without finishing")


def test_messages_with_nothing_to_do_are_logged_once_with_the_reason(
    ctx: StageContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "noop.mp4", seconds=1.5, seed=11))
    with caplog.at_level(logging.INFO, logger="tasks.stages.skeleton"):
        assert stages.run_faces(ctx, video_id) is False  # still pending
        assert stages.run_flow(ctx, "no-such-video") is False
        with ctx.session_factory.begin() as session:
            repo.transition_video(session=session, video_id=video_id, to_status="no_face")
        assert stages.run_ingest(ctx, video_id) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "tasks.stages.skeleton"]
    assert lines == [
        f"faces stage: video {video_id} is in state pending; the message does nothing",
        "flow stage: no video no-such-video; the message does nothing",
        f"ingest stage: video {video_id} is already final (no_face); the message does nothing",
    ]


def test_errors_name_the_users_file_never_the_stored_copy(
    ctx: StageContext, bundle, tmp_path: Path
) -> None:
    empty = tmp_path / "holiday.mp4"
    empty.write_bytes(b"")
    garbage = write_random_bytes(tmp_path / "garbage.mp4", n=4096, seed=2)
    analyzer = Analyzer(bundle, ctx.config, detector=ctx.detector(112))
    for clip, words in ((empty, "empty"), (garbage, "not a video")):
        video_id = submit(ctx, clip)
        assert stages.run_ingest(ctx, video_id) is False
        error = video_row(ctx, video_id).error
        assert words in error and str(clip) in error, error
        assert "storage" not in error and "videos/" not in error, error
        assert "b'" not in error and 'b"' not in error and "\\x" not in error, error
        # `oceanstream analyze` says the same about the same file.
        assert analyzer.analyze(clip).error == error
