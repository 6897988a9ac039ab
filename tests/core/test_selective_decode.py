"""core.video.selective_decode on real H.264 clips: the kept frames are exactly a full decode's.

The reference is a plain PyAV decode of every frame (one thread, nothing skipped). Clips with
several keyframes and B-frames are made by re-encoding a generated talking head with the
ffmpeg binary that imageio_ffmpeg ships.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from core.errors import EmptyVideoError, VideoDecodeError, VideoLimitError, VideoNotFoundError
from core.video.probe import VideoLimits, probe_video, sample_frames
from core.video.segments import plan_segment_samples, plan_segments, segment_frame_ranges
from core.video.selective_decode import decode_frames, sample_segment
from tests import clips


def reencode(src: Path, dst: Path, *options: str) -> Path:
    """Re-encode ``src`` to an H.264 mp4 with the given libx264 ``options``."""
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error", "-i", str(src),
        "-an", "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", *options,
        "-movflags", "+faststart", str(dst),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return dst


def full_decode(path: Path) -> list[np.ndarray]:
    """Every frame, RGB, in presentation order: the reference (a broken packet is passed over)."""
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count = 1
        for packet in container.demux(stream):
            try:
                decoded = context.decode(packet if packet.size else None)
            except av.error.InvalidDataError:
                continue
            frames += [frame.to_ndarray(format="rgb24") for frame in decoded]
    return frames


@pytest.fixture(scope="module")
def source(clip_dir: Path) -> Path:
    """4 s at 30 fps: 120 frames to re-encode."""
    return clips.write_h264(clip_dir / "selective_source.mp4", seconds=4, fps=30)


@pytest.fixture(scope="module")
def gops(source: Path, clip_dir: Path) -> Path:
    """A keyframe every 12 frames, three B-frames (a pyramid) between references."""
    options = ["-g", "12", "-keyint_min", "12", "-sc_threshold", "0", "-bf", "3"]
    return reencode(source, clip_dir / "selective_gops.mp4", *options)


@pytest.fixture(scope="module")
def no_bframes(source: Path, clip_dir: Path) -> Path:
    return reencode(source, clip_dir / "selective_no_b.mp4", "-g", "30", "-bf", "0")


@pytest.fixture(scope="module")
def reference(gops: Path) -> list[np.ndarray]:
    return full_decode(gops)


def assert_frames(got: np.ndarray, indices: np.ndarray, reference: list[np.ndarray]) -> None:
    assert got.shape[0] == len(indices)
    for frame, index in zip(got, indices, strict=True):
        assert np.array_equal(frame, reference[int(index)]), f"frame {index} differs"


# --- one segment: today's samples -----------------------------------------------------------


@pytest.mark.parametrize("clip", ["talking_head_h264", "talking_head", "gops", "no_bframes"])
def test_one_segment_is_what_sample_frames_gives(clip: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(clip)
    info = probe_video(path)
    before = sample_frames(path, 16, info=info)
    (frames,) = segment_frame_ranges(plan_segments(info.duration_s), info.fps, info.frame_count)
    now = sample_segment(path, frames, 16, info=info)
    np.testing.assert_array_equal(now.indices, before.indices)
    # OpenCV converts with the same swscale settings: identical pixels, not merely close.
    np.testing.assert_array_equal(now.frames, before.frames)
    np.testing.assert_array_equal(now.successors, before.successors)
    assert now.info == info


def test_bframes_are_skipped_and_the_rest_is_untouched(
    gops: Path, reference: list[np.ndarray]
) -> None:
    info = probe_video(gops)
    sampled = sample_segment(gops, range(info.frame_count), 16, info=info)
    assert sampled.decoded_frames < 0.8 * info.frame_count
    assert_frames(sampled.frames, sampled.indices, reference)
    successors = np.minimum(sampled.indices + 1, info.frame_count - 1)
    assert_frames(sampled.successors, successors, reference)


def test_without_bframes_every_frame_is_decoded(no_bframes: Path) -> None:
    info = probe_video(no_bframes)
    sampled = sample_segment(no_bframes, range(info.frame_count), 16, info=info)
    assert sampled.decoded_frames == info.frame_count
    assert_frames(sampled.frames, sampled.indices, full_decode(no_bframes))


# --- many segments ----------------------------------------------------------------------------


@pytest.mark.parametrize("window", [1.0, 0.7, 1.6])
def test_every_segment_is_bit_identical(
    gops: Path, reference: list[np.ndarray], window: float
) -> None:
    info = probe_video(gops)
    segments = plan_segments(info.duration_s, window)
    ranges = segment_frame_ranges(segments, info.fps, info.frame_count)
    assert len(ranges) > 1
    for frames in ranges:
        sampled = sample_segment(gops, frames, 8, info=info)
        samples = plan_segment_samples(frames, info.frame_count, 8)
        np.testing.assert_array_equal(sampled.indices, samples.indices)
        assert_frames(sampled.frames, samples.indices, reference)
        assert_frames(sampled.successors, samples.successors, reference)
        # Each segment starts at the keyframe before its window (one every 12 frames) and
        # stops at its last wanted frame.
        keyframe = frames.start // 12 * 12
        assert sampled.decoded_frames <= max(samples.wanted) - keyframe + 1


@pytest.mark.parametrize(
    "wanted",
    [{0}, {119}, {11, 12}, {13}, {1, 2, 3, 5, 6, 7}, {47, 48, 49, 50}, set(range(60, 72))],
)
def test_any_set_of_frames(gops: Path, reference: list[np.ndarray], wanted: set[int]) -> None:
    read = decode_frames(gops, wanted)
    assert read.kept.keys() == wanted
    for index in wanted:
        assert np.array_equal(read.kept[index], reference[index]), f"frame {index} differs"
    assert read.decoded < len(reference)


def test_threads_give_the_same_frames(gops: Path, reference: list[np.ndarray]) -> None:
    wanted = set(range(30, 60, 4))
    read = decode_frames(gops, wanted, decode_threads=0)
    for index in wanted:
        assert np.array_equal(read.kept[index], reference[index])


def test_reading_to_the_end_counts_the_frames(gops: Path) -> None:
    assert decode_frames(gops, {5}, to_end=True).stream_frames == 120
    assert decode_frames(gops, {5}).stream_frames is None


# --- streams that do not match their header ---------------------------------------------------


def test_dropped_frames_are_counted_as_they_come(source: Path, clip_dir: Path) -> None:
    """Every fifth frame dropped, timestamps kept: frames are counted, not read off the grid."""
    options = ["-vf", "select='not(eq(mod(n\\,5)\\,2))'", "-fps_mode", "passthrough", "-bf", "3"]
    path = reencode(source, clip_dir / "selective_vfr.mp4", *options)
    info = probe_video(path)
    before = sample_frames(path, 16, info=info)
    now = sample_segment(path, range(info.frame_count), 16, info=info)
    np.testing.assert_array_equal(now.indices, before.indices)
    assert_frames(now.frames, now.indices, full_decode(path))


def test_a_truncated_upload_is_replanned_over_the_frames_that_decode(
    gops: Path, tmp_path: Path
) -> None:
    """As `sample_frames` does, but counted by PyAV, which gets two frames more out of this
    cut-off stream than OpenCV does (93 against 91 of 120): the frame before the cut, and the
    B-frame that waits on it."""
    path = clips.write_truncated(gops, tmp_path / "cut.mp4", keep_fraction=0.8)
    info = probe_video(path)
    reference = full_decode(path)
    assert len(reference) < info.frame_count
    now = sample_segment(path, range(info.frame_count), 16, info=info)
    np.testing.assert_array_equal(
        now.indices, plan_segment_samples(range(len(reference)), len(reference), 16).indices
    )
    assert_frames(now.frames, now.indices, reference)


def test_a_segment_past_the_real_end_is_refused(gops: Path, tmp_path: Path) -> None:
    path = clips.write_truncated(gops, tmp_path / "cut.mp4", keep_fraction=0.5)
    info = probe_video(path)
    with pytest.raises(VideoDecodeError, match="truncated or corrupt"):
        sample_segment(path, range(100, 110), 4, info=info)


def test_limits_hold_on_what_is_read(gops: Path) -> None:
    with pytest.raises(VideoLimitError, match="1 s limit"):
        decode_frames(gops, {5}, limits=VideoLimits(max_duration_s=1.0), to_end=True)
    with pytest.raises(VideoLimitError, match="limit of 60 frames"):
        decode_frames(gops, {100}, limits=VideoLimits(max_duration_s=4.0, max_fps=15.0))
    # Within a segment that ends before the limit, nothing is refused.
    assert decode_frames(gops, {5}, limits=VideoLimits(max_duration_s=1.0)).kept.keys() == {5}


# --- bad inputs ---------------------------------------------------------------------------------


def test_bad_inputs_get_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError):
        decode_frames(tmp_path / "missing.mp4", {0})
    with pytest.raises(EmptyVideoError):
        decode_frames(clips.write_empty(tmp_path / "empty.mp4"), {0})
    with pytest.raises(VideoDecodeError, match="not a video container"):
        decode_frames(clips.write_text(tmp_path / "notes.mp4"), {0})
    with pytest.raises(VideoDecodeError, match="not a video container"):
        decode_frames(clips.write_random_bytes(tmp_path / "noise.mp4"), {0})


def test_wanted_frames_must_be_indices(gops: Path) -> None:
    with pytest.raises(ValueError, match="frame indices"):
        decode_frames(gops, [])
    with pytest.raises(ValueError, match="frame indices"):
        decode_frames(gops, [-1])
