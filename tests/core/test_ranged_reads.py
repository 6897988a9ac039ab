"""A segment reads its share of the stored video, not the whole file: on a local folder and on
an S3-compatible server (moto's standalone server, over HTTP). And a stored video replaced
after it was stored is refused by its stamp, before it is read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.errors import ContentMismatchError, StorageError
from core.storage.store import ArtifactStore
from core.video.probe import probe_video
from core.video.segment_sampling import plan_video, sample_video_segment
from tests.support.long_videos import write_long_video
from tests.support.s3 import running_s3_server

SEGMENT_S = 15.0


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two minutes at 2 Mbit/s, keyframes every 2 s: eight segments of about 3.7 MB."""
    return write_long_video(tmp_path_factory.mktemp("long"), 120)


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "file":
        yield ArtifactStore(f"file://{tmp_path / 'store'}")
        return
    bucket = request.getfixturevalue("s3_bucket")  # the AWS variables point at the server
    yield ArtifactStore(f"s3://{bucket}/prefix")


def test_each_segment_reads_about_its_share_of_the_file_plus_the_index(
    store: ArtifactStore, long_video: Path
) -> None:
    uri = store.put_file(long_video, "videos/long.mp4")
    stamp = store.stamp(uri)
    with store.open_video(uri, stamp) as video:
        info = probe_video(video)
        index = video.bytes_read
    plan = plan_video(info, SEGMENT_S)
    share = stamp.size / len(plan)
    assert len(plan) == 8 and index < share / 2, (index, share)

    reads = []
    for i in (0, 3, len(plan) - 1):
        with store.open_video(uri, stamp) as video:
            sampled = sample_video_segment(video, plan, i, 8, info=info)
            reads.append(video.bytes_read)
        expected = sample_video_segment(long_video, plan, i, 8, info=info)
        assert np.array_equal(sampled.frames, expected.frames)
    assert max(reads) <= 2 * share + index, (reads, share, index, stamp.size)


def test_a_video_rewritten_after_it_was_stored_is_refused_before_it_is_read(
    store: ArtifactStore, tmp_path: Path
) -> None:
    original = tmp_path / "a.bin"
    original.write_bytes(b"a" * 4096)
    uri = store.put_file(original, "videos/a.bin")
    stamp = store.stamp(uri)
    with store.open_video(uri, stamp) as video:
        assert video.size == 4096
    with store.fs.open(store._path(uri), "wb") as handle:  # same size, other bytes
        handle.write(b"b" * 4096)
    opened = store.open_video(uri, stamp)
    with pytest.raises(ContentMismatchError, match="changed after it was stored"):
        opened.__enter__()


@pytest.mark.slow  # s3fs retries the lost server for about 15 s
def test_a_bucket_lost_while_a_segment_reads_is_a_storage_outage_not_a_bad_video(
    long_video: Path, tmp_path: Path
) -> None:
    """The server goes between the stamp check and the segment's reads: `StorageError`
    (retried by the stage), not a decode error that would fail the segment for good."""
    with running_s3_server(tmp_path) as server, server.environment():
        store = ArtifactStore(f"s3://{server.new_bucket()}/prefix")
        uri = store.put_file(long_video, "videos/long.mp4")
        stamp = store.stamp(uri)
        with store.open_video(uri, stamp) as video:
            info = probe_video(video)
        plan = plan_video(info, SEGMENT_S)
        with store.open_video(uri, stamp) as video:
            server.process.kill()
            server.process.wait(10)
            with pytest.raises(StorageError, match="cannot read"):
                sample_video_segment(video, plan, 3, 8, info=info)
