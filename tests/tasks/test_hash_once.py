"""Content is hashed once, when stored; ingest and each segment read the stored video by
ranges after one stamp check, and a copy replaced after it was stored is still refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from db import repository as repo
from tasks import stages
from tasks.context import StageContext
from tasks.stages.ingest import CHANGED_AFTER_UPLOAD
from tests.clips import write_talking_head
from tests.support.long_videos import write_long_video
from tests.support.stages import submit, worker_context
from workers.metrics import StorageMetrics


@pytest.fixture
def ctx(tmp_path: Path, face_detector) -> Iterator[StageContext]:
    with worker_context(tmp_path / "home", face_detector, 8) as context:
        yield context


def video_row(ctx: StageContext, video_id: str):
    with ctx.session_factory() as session:
        return repo.get_video(session=session, video_id=video_id)


def test_a_segment_of_a_long_video_reads_its_share_and_the_index_not_the_file(
    ctx: StageContext, tmp_path: Path
) -> None:
    video = write_long_video(tmp_path / "long", 60)  # four segments of about 3.7 MB
    metrics = StorageMetrics()
    ctx.on_read = metrics.count_read
    video_id = submit(ctx, video)
    segment_ids = stages.run_ingest(ctx, video_id)
    assert len(segment_ids) == 4
    probe_bytes = video_row(ctx, video_id).timings["probe_bytes"]
    size = video.stat().st_size
    assert 0 < probe_bytes < size / 20
    total = 0
    for segment_id in (segment_ids[1], segment_ids[-1]):
        assert stages.run_sample(ctx, segment_id) == ["faces", "flow"]
        with ctx.session_factory() as session:
            read = repo.get_segment(session=session, segment_id=segment_id).timings["sample_bytes"]
        assert 0 < read <= 2 * size / len(segment_ids) + probe_bytes, (read, size)
        total += read
    counted = metrics.registry.get_sample_value(
        "oceanstream_storage_read_bytes_total", {"stage": "sample"}
    )
    assert counted == total


def test_a_video_stored_before_stamps_is_hashed_once_by_ingest_then_checked_by_stamp(
    ctx: StageContext, tmp_path: Path
) -> None:
    original = write_talking_head(tmp_path / "original.mp4", seconds=1.5, seed=3)
    video_id = submit(ctx, original, stamp=False)
    assert video_row(ctx, video_id).storage_stamp is None
    [segment_id] = stages.run_ingest(ctx, video_id)
    stamp = video_row(ctx, video_id).storage_stamp
    assert stamp is not None and stamp["size"] == original.stat().st_size

    stored = Path(ctx.store._path(video_row(ctx, video_id).storage_uri))
    stored.write_bytes(stored.read_bytes())  # the same bytes, written again: a new version
    assert stages.run_sample(ctx, segment_id) == []
    with ctx.session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
    assert (segment.status, segment.error) == ("failed", CHANGED_AFTER_UPLOAD)


def test_a_video_ingested_before_stamps_is_sampled_and_stamped_by_its_segment(
    ctx: StageContext, tmp_path: Path
) -> None:
    clip = write_talking_head(tmp_path / "clip.mp4", seconds=1.5, seed=5)
    video_id = submit(ctx, clip, stamp=False)
    [segment_id] = stages.run_ingest(ctx, video_id)
    uri = video_row(ctx, video_id).storage_uri
    with ctx.session_factory.begin() as session:  # as an ingest before stamps left it
        repo.set_storage_uri(session=session, video_id=video_id, uri=uri, stamp=None)

    assert stages.run_sample(ctx, segment_id) == ["faces", "flow"]
    assert video_row(ctx, video_id).storage_stamp["size"] == clip.stat().st_size
