"""The stages with the context a worker process builds (`workers.bootstrap`), on SQLite.

On SQLite every transaction takes the write lock, so a callback that opened a second session
while the stage held one would wait on its own thread until the busy timeout ran out.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from db import repository as repo
from tasks import stages
from tasks.context import StageContext
from tests.clips import write_talking_head
from tests.support.stages import submit, worker_context


@pytest.fixture
def worker_ctx(tmp_path: Path, face_detector) -> Iterator[StageContext]:
    """What a worker builds with OCEANSTREAM_DATABASE_URL unset: a SQLite file in its home."""
    with worker_context(tmp_path / "home", face_detector, 8) as context:
        yield context


def test_every_stage_runs_on_sqlite_without_waiting_on_itself(
    worker_ctx: StageContext, tmp_path: Path
) -> None:
    clip = write_talking_head(tmp_path / "a.mp4", seconds=1.5, seed=3)
    video_id = submit(worker_ctx, clip)
    began = time.monotonic()
    [segment_id] = stages.run_ingest(worker_ctx, video_id)
    assert stages.run_sample(worker_ctx, segment_id) == ["faces", "flow"]
    assert stages.run_faces(worker_ctx, segment_id) == []
    assert stages.run_flow(worker_ctx, segment_id) == ["inference"]
    # Inference's finish also aggregates the video, in the same transaction.
    assert stages.run_inference(worker_ctx, segment_id) == "done"
    assert time.monotonic() - began < 20  # a self-wait costs the 30 s busy timeout
    with worker_ctx.session_factory() as session:
        row = repo.get_video(session=session, video_id=video_id)
        assert row.status == "done" and row.model_version is not None
        assert repo.get_prediction(
            session=session, video_id=video_id, model_version=row.model_version
        )
