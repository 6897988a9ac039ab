"""Errors that no retry can fix fail the segment (or the video, at ingest) at once, with
their own message.

The stages run with the context a worker process builds (`workers.bootstrap`), on SQLite and
file storage, over real clips. Before, each of these made the stage raise: the message was
dropped and the video cycled through `reconcile` until the delivery cap failed it as
"worker died or timed out", 13-23 minutes later. Each clip here is one segment, so a failed
segment also makes its video final, failed, with the segment named in the error.
"""

from __future__ import annotations

import json
import logging
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from core.bundles.bundle import BundleMetadata, ModelBundle, build_models, save_bundle
from core.storage.artifacts import LAYOUT
from db import repository as repo
from tasks import stages
from tasks.context import StageContext
from tasks.stages.ingest import CHANGED_AFTER_UPLOAD
from tests.clips import write_talking_head
from tests.support.stages import submit, worker_context
from workers.services.models import activate_version, register_bundle_dir

T = 8


@pytest.fixture
def ctx(tmp_path: Path, face_detector) -> Iterator[StageContext]:
    with worker_context(tmp_path / "home", face_detector, T) as context:
        yield context


def row(ctx: StageContext, video_id: str):
    with ctx.session_factory() as session:
        return repo.get_video(session=session, video_id=video_id)


def segment_row(ctx: StageContext, segment_id: str):
    with ctx.session_factory() as session:
        return repo.get_segment(session=session, segment_id=segment_id)


def sampled(ctx: StageContext, tmp_path: Path, seed: int = 3) -> tuple[str, str]:
    """A 1.5 s clip ingested (one segment) and its segment sampled: (video id, segment id)."""
    clip = write_talking_head(tmp_path / f"clip-{seed}.mp4", seconds=1.5, seed=seed)
    video_id = submit(ctx, clip)
    [segment_id] = stages.run_ingest(ctx, video_id)
    assert stages.run_sample(ctx, segment_id) == ["faces", "flow"]
    return video_id, segment_id


def assert_failed_alone(ctx: StageContext, video_id: str, segment_id: str, words: str) -> None:
    """The segment failed with `words`; its video (whose only segment it was) failed naming it."""
    segment = segment_row(ctx, segment_id)
    assert segment.status == "failed" and words in segment.error, segment.error
    video = row(ctx, video_id)
    assert video.status == "failed", video.status
    assert video.error.startswith("segment 0 (0-"), video.error
    assert video.error.endswith(f" s): {segment.error}"), video.error


STAGES: dict[str, Callable[[StageContext, str], list[str]]] = {
    "faces": stages.run_faces,
    "flow": stages.run_flow,
}


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize(
    ("frames", "words"),
    [
        (
            np.zeros((T, 700, 900, 3), np.uint8),
            f"stored frames have shape ({T}, 700, 900, 3) uint8, expected at most "
            f"({T}, H<=640, W<=640, 3) uint8; not loaded",
        ),
        (
            np.zeros((2 * T, 36, 64, 3), np.uint8),
            f"stored frames have shape ({2 * T}, 36, 64, 3) uint8, expected at most ({T}, ",
        ),
        (
            np.zeros((T, 36, 64, 3), np.float64),
            f"stored frames have shape ({T}, 36, 64, 3) float64, expected at most",
        ),
    ],
    ids=["too-large", "too-many", "float64"],
)
def test_stored_frames_of_the_wrong_shape_fail_the_segment_at_once(
    ctx: StageContext, tmp_path: Path, stage: str, frames: np.ndarray, words: str
) -> None:
    video_id, segment_id = sampled(ctx, tmp_path)
    ctx.store.put_arrays(LAYOUT.segment_frames(video_id, 0), frames=frames, successors=frames)
    assert STAGES[stage](ctx, segment_id) == []  # returns: nothing raised, nothing to retry
    assert_failed_alone(ctx, video_id, segment_id, words)
    # Failed on its first delivery, not by the cap.
    assert segment_row(ctx, segment_id).deliveries[stage] == 1


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_frames_at_the_largest_allowed_size_are_read(
    ctx: StageContext, tmp_path: Path, stage: str
) -> None:
    """Frames and successors at 640x640 each: the archive holds both, though a stage may read
    only one of them, so its size bound counts both (a 640x480 clip failed as "corrupt")."""
    video_id, segment_id = sampled(ctx, tmp_path)
    key = LAYOUT.segment_frames(video_id, 0)
    stored = ctx.store.get_arrays(ctx.store.uri(key))
    side = ctx.config.frame_max_side
    big = {
        name: np.ascontiguousarray(np.resize(array, (T, side, side, 3)).astype(np.uint8))
        for name, array in stored.items()
    }
    ctx.store.put_arrays(key, **big)
    STAGES[stage](ctx, segment_id)
    segment = segment_row(ctx, segment_id)
    assert segment.status != "failed", segment.error
    assert segment.faces_ready if stage == "faces" else segment.flow_ready


def write_inflating_frames(path: Path, shape: tuple[int, ...]) -> None:
    """A compressed `frames.npz` whose frames inflate to `shape` uint8 (zeros, a small file)."""
    header = {"descr": "|u1", "fortran_order": False, "shape": shape}
    chunk = bytes(1 << 23)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("frames.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            left = int(np.prod(shape))
            while left:
                member.write(chunk[: min(left, len(chunk))])
                left -= min(left, len(chunk))
        successors = np.zeros((T, 36, 64, 3), np.uint8)
        with archive.open("successors.npy", "w") as member:
            np.lib.format.write_array(member, successors)


def test_compressed_frames_that_would_inflate_are_refused_from_the_header(
    ctx: StageContext, tmp_path: Path
) -> None:
    video_id, segment_id = sampled(ctx, tmp_path)
    path = Path(ctx.store._path(ctx.store.uri(LAYOUT.segment_frames(video_id, 0))))
    write_inflating_frames(path, (T, 3000, 3000, 3))  # 216 MB of frames in a small file
    assert path.stat().st_size < 8 << 20
    tracemalloc.start()
    try:
        assert stages.run_faces(ctx, segment_id) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    segment = segment_row(ctx, segment_id)
    assert segment.status == "failed"
    assert segment.error == (
        f"stored frames have shape ({T}, 3000, 3000, 3) uint8, expected at most "
        f"({T}, H<=640, W<=640, 3) uint8; not loaded"
    )
    assert row(ctx, video_id).status == "failed"
    assert peak < 32 << 20, f"peak {peak / 2**20:.0f} MiB: the frames were inflated"


def test_a_stored_video_replaced_after_submit_fails_ingest_with_the_hash_message(
    ctx: StageContext, tmp_path: Path
) -> None:
    original = write_talking_head(tmp_path / "original.mp4", seconds=1.5, seed=3)
    video_id = submit(ctx, original)
    stored = Path(ctx.store._path(row(ctx, video_id).storage_uri))
    other = write_talking_head(tmp_path / "other.mp4", seconds=1.5, seed=4)
    stored.write_bytes(other.read_bytes())  # a decodable video, just not the one uploaded

    assert stages.run_ingest(ctx, video_id) == []
    video = row(ctx, video_id)
    assert (video.status, video.error) == ("failed", CHANGED_AFTER_UPLOAD)
    assert video.frames is None and video.deliveries["ingest"] == 1
    with ctx.session_factory() as session:
        assert repo.get_segments(session=session, video_id=video_id) == []  # none planned


def test_a_stored_video_replaced_after_ingest_fails_sampling_with_the_hash_message(
    ctx: StageContext, tmp_path: Path
) -> None:
    original = write_talking_head(tmp_path / "original.mp4", seconds=1.5, seed=3)
    video_id = submit(ctx, original)
    [segment_id] = stages.run_ingest(ctx, video_id)
    stored = Path(ctx.store._path(row(ctx, video_id).storage_uri))
    other = write_talking_head(tmp_path / "other.mp4", seconds=1.5, seed=4)
    stored.write_bytes(other.read_bytes())

    assert stages.run_sample(ctx, segment_id) == []
    segment = segment_row(ctx, segment_id)
    assert (segment.status, segment.error) == ("failed", CHANGED_AFTER_UPLOAD)
    assert segment.frames is None and segment.deliveries["sample"] == 1
    assert not ctx.store.exists(ctx.store.uri(LAYOUT.segment_frames(video_id, 0)))
    assert_failed_alone(ctx, video_id, segment_id, CHANGED_AFTER_UPLOAD)


def tampered_bundle(folder: Path) -> Path:
    """A trained bundle for T=8, saved, then its metadata changed (so its hash differs)."""
    import keras

    keras.utils.set_random_seed(5)
    meta = BundleMetadata(version="", trained=True, num_frames=T, seed=5, dataset="tamper")
    save_bundle(ModelBundle(meta, *build_models(meta)), folder)
    return folder


def tamper(folder: Path) -> None:
    path = folder / "bundle.json"
    data = json.loads(path.read_text())
    data["metrics"] = {"val_mae": 0.01}  # a better score than it earned
    path.write_text(json.dumps(data))


def test_a_segment_pinned_to_a_tampered_bundle_fails_at_once_and_warming_goes_on(
    ctx: StageContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tampered_bundle(tmp_path / "bundle")
    version, _ = register_bundle_dir(ctx.session_factory, folder)
    activate_version(ctx.session_factory, version)
    tamper(folder)

    clip = write_talking_head(tmp_path / "a.mp4", seconds=1.5, seed=3)
    video_id = submit(ctx, clip)
    # Ingest plans without the model; the first stage that loads it, sampling, fails the
    # segment on its first delivery.
    [segment_id] = stages.run_ingest(ctx, video_id)
    assert row(ctx, video_id).model_version == version
    assert stages.run_sample(ctx, segment_id) == []
    segment = segment_row(ctx, segment_id)
    assert segment.status == "failed" and segment.deliveries == {"sample": 1}
    assert segment.error.startswith(f"model version {version} failed its integrity check: ")
    assert "a file was changed after saving" in segment.error
    assert_failed_alone(ctx, video_id, segment_id, "a file was changed after saving")

    # A process warming the active model warms the built-in one instead, and says so once.
    with caplog.at_level(logging.ERROR, logger="oceanstream.worker"):
        warmed = [ctx.active_version() for _ in range(3)]
    assert len(set(warmed)) == 1 and warmed[0].startswith("untrained-")
    lines = [r.getMessage() for r in caplog.records if version in r.getMessage()]
    assert len(lines) == 1 and "failed its integrity check" in lines[0], lines
    assert ctx.load_bundle(warmed[0]).metadata.version == warmed[0]
