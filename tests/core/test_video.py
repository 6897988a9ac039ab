"""core.video.probe on real clips: probing, limits, bad inputs and single-pass sampling."""

from __future__ import annotations

import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from core.errors import EmptyVideoError, VideoDecodeError, VideoLimitError, VideoNotFoundError
from core.video.probe import VideoInfo, VideoLimits, plan_sample_indices, probe_video, sample_frames
from tests import clips


def decode_all(path: Path) -> np.ndarray:
    """Every frame, RGB, by a plain sequential read: the reference for sampled frames."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    cap.release()
    return np.stack(frames)


class SpyCapture:
    """A real OpenCV capture that records how it is driven: opens, grabs, retrieves, seeks.

    It wraps rather than subclasses ``cv2.VideoCapture``: OpenCV 5 crashes when a Python
    subclass of its capture class is destroyed.
    """

    def __init__(self, log: list[str], *args: Any) -> None:
        self._real = _REAL_CAPTURE(*args)
        self._log = log
        log.append("open")

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)

        def logged(*args: Any) -> Any:
            self._log.append(f"{name}:{args[0]}" if name == "set" else name)
            return method(*args)

        return logged


_REAL_CAPTURE = cv2.VideoCapture


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Route every ``cv2.VideoCapture`` through ``SpyCapture``; return the shared call log."""
    log: list[str] = []
    monkeypatch.setattr(cv2, "VideoCapture", lambda *args: SpyCapture(log, *args))
    return log


# --- probing -----------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["talking_head", "talking_head_avi", "talking_head_h264"])
def test_probe_reports_declared_properties(clip: str, request: pytest.FixtureRequest) -> None:
    info = probe_video(request.getfixturevalue(clip))
    assert info == VideoInfo(fps=15.0, frame_count=30, duration_s=2.0, width=320, height=240)
    assert info.to_dict() == {
        "fps": 15.0,
        "frame_count": 30,
        "duration_s": 2.0,
        "width": 320,
        "height": 240,
    }


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError, match=r"not found.*nope\.mp4"):
        probe_video(tmp_path / "nope.mp4")


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(VideoNotFoundError, match="expected a video file"):
        probe_video(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = clips.write_empty(tmp_path / "empty.mp4")
    with pytest.raises(EmptyVideoError, match=r"empty \(0 bytes\).*empty.mp4"):
        probe_video(path)


@pytest.mark.parametrize(
    "write",
    [
        lambda d: clips.write_text(d / "notes.mp4"),
        lambda d: clips.write_random_bytes(d / "noise.mp4", n=100_000, seed=3),
    ],
    ids=["text", "random-bytes"],
)
def test_not_a_video(write: Callable[[Path], Path], tmp_path: Path) -> None:
    path = write(tmp_path)
    with pytest.raises(VideoDecodeError, match="not a video") as caught:
        probe_video(path)
    assert path.name in str(caught.value)


@pytest.mark.parametrize(
    "content",
    [
        b"TOPSECRET-456 not a video\n" * 4,
        b"root:x:0:0:root:/root:/bin/bash\n",
        b"\x00\x01'\"\xff" * 9,
    ],
    ids=["text", "passwd-like", "binary-with-quotes"],
)
def test_not_a_video_quotes_none_of_its_content(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_bytes(content)
    with pytest.raises(VideoDecodeError) as caught:
        probe_video(path)
    message = str(caught.value)
    assert "not a video container FFmpeg can read" in message and str(path) in message
    assert "TOPSECRET" not in message and "root:" not in message
    assert "b'" not in message and 'b"' not in message and "\\x" not in message
    assert f"{len(content)} bytes" in message


def test_truncated_mp4_without_index_is_not_a_video(talking_head: Path, tmp_path: Path) -> None:
    # OpenCV's writer puts the mp4 index at the end, so the first half has none.
    path = clips.write_truncated(talking_head, tmp_path / "cut.mp4", keep_fraction=0.5)
    with pytest.raises(VideoDecodeError, match="not a video"):
        sample_frames(path)


# --- limits ------------------------------------------------------------------------------


def test_byte_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = clips.write_text(tmp_path / "big.mp4")
    with pytest.raises(VideoLimitError, match=r"\d+ bytes, over the limit of 10 bytes"):
        probe_video(path, VideoLimits(max_bytes=10))


def test_duration_limit(talking_head: Path) -> None:
    with pytest.raises(VideoLimitError, match=r"lasts 2.0 s, over the limit of 1.5 s"):
        probe_video(talking_head, VideoLimits(max_duration_s=1.5))


def test_resolution_limit(talking_head: Path) -> None:
    with pytest.raises(VideoLimitError, match="video is 320x240, over the limit of 160x120"):
        sample_frames(talking_head, limits=VideoLimits(max_width=160, max_height=120))


def test_resolution_limit_applies_to_either_orientation(talking_head: Path) -> None:
    assert probe_video(talking_head, VideoLimits(max_width=240, max_height=320)).width == 320


def write_matroska(path: Path, *, seconds: float, piped: bool) -> Path:
    """A 10 fps, 64x48 Matroska test pattern; written through a pipe it declares no duration."""
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc=size=64x48:rate=10:duration={seconds}",
        "-c:v", "mpeg4", "-f", "matroska", "pipe:1" if piped else str(path),
    ]  # fmt: skip
    written = subprocess.run(command, capture_output=True, check=True)
    if piped:
        path.write_bytes(written.stdout)
    return path


def declare_duration(path: Path, seconds: float) -> Path:
    """Overwrite a Matroska file's Duration (element 0x4489, an 8-byte float in ms): a lie."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89\x88")
    struct.pack_into(">d", data, at + 3, seconds * 1000)
    path.write_bytes(bytes(data))
    return path


def test_piped_matroska_declares_no_duration(tmp_path: Path) -> None:
    info = probe_video(write_matroska(tmp_path / "piped.mkv", seconds=2, piped=True))
    assert (info.fps, info.frame_count, info.duration_s) == (10.0, 0, 0.0)


def test_duration_limit_holds_while_decoding_a_stream_without_duration(
    tmp_path: Path, spy: list[str]
) -> None:
    path = write_matroska(tmp_path / "piped.mkv", seconds=20, piped=True)
    with pytest.raises(
        VideoLimitError,
        match=r"video runs past the 3 s limit \(decoded 3\.1 s, no duration in its header\)",
    ):
        sample_frames(path, num_frames=4, limits=VideoLimits(max_duration_s=3))
    assert spy.count("grab") == 31  # of 200 frames: decoding stopped at the limit


def test_duration_limit_holds_on_a_header_that_lies(tmp_path: Path, spy: list[str]) -> None:
    path = declare_duration(write_matroska(tmp_path / "liar.mkv", seconds=20, piped=False), 1)
    assert probe_video(path).duration_s == 1.0
    spy.clear()
    with pytest.raises(
        VideoLimitError,
        match=r"runs past the 3 s limit \(decoded 3\.1 s, its header declares 1\.0 s\)",
    ):
        sample_frames(path, num_frames=4, limits=VideoLimits(max_duration_s=3))
    assert spy.count("grab") == 31


def test_frame_limit_holds_while_decoding(tmp_path: Path, spy: list[str]) -> None:
    # 20 s at 10 fps within a 30 s limit, but over 30 s x 2 fps = 60 frames.
    path = write_matroska(tmp_path / "piped.mkv", seconds=20, piped=True)
    limits = VideoLimits(max_duration_s=30, max_fps=2)
    with pytest.raises(VideoLimitError, match=r"past the limit of 60 frames .*decoded 61 frames"):
        sample_frames(path, num_frames=4, limits=limits)
    assert spy.count("grab") == 61


def test_declared_frame_count_over_the_limit_is_refused_by_the_probe(talking_head: Path) -> None:
    with pytest.raises(VideoLimitError, match=r"declares 30 frames, over the limit of 20"):
        probe_video(talking_head, VideoLimits(max_duration_s=10, max_fps=2))


def test_a_stream_within_the_limits_is_sampled_as_before(tmp_path: Path) -> None:
    path = write_matroska(tmp_path / "piped.mkv", seconds=3, piped=True)
    sampled = sample_frames(path, num_frames=4, limits=VideoLimits(max_duration_s=3))
    every = decode_all(path)
    assert sampled.decoded_frames == len(every) == 30
    np.testing.assert_array_equal(sampled.frames, every[sampled.indices])


# --- planning ----------------------------------------------------------------------------


def test_plan_spreads_samples_from_first_to_last_frame() -> None:
    indices = plan_sample_indices(100, 16)
    assert indices.dtype == np.int64 and len(indices) == 16
    assert indices[0] == 0 and indices[-1] == 99
    assert np.all(np.diff(indices) > 0)
    assert np.ptp(np.diff(indices)) <= 1  # evenly spaced up to rounding


def test_plan_repeats_frames_of_a_short_clip() -> None:
    assert plan_sample_indices(3, 7).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert plan_sample_indices(1, 4).tolist() == [0, 0, 0, 0]


@pytest.mark.parametrize("count, num", [(0, 16), (10, 0)])
def test_plan_rejects_empty_requests(count: int, num: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_sample_indices(count, num)


# --- sampling ----------------------------------------------------------------------------


@pytest.mark.parametrize("clip", ["talking_head", "talking_head_avi", "talking_head_h264"])
def test_samples_match_a_sequential_decode(clip: str, request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(clip)
    sampled = sample_frames(path, num_frames=16)
    every = decode_all(path)
    assert sampled.frames.shape == sampled.successors.shape == (16, 240, 320, 3)
    assert sampled.frames.dtype == sampled.successors.dtype == np.uint8
    assert sampled.indices.dtype == np.int64
    assert np.all(np.diff(sampled.indices) > 0)
    assert sampled.decoded_frames == len(every) == 30
    np.testing.assert_array_equal(sampled.frames, every[sampled.indices])
    np.testing.assert_array_equal(sampled.successors, every[np.minimum(sampled.indices + 1, 29)])


def test_successors_differ_on_a_moving_clip(talking_head: Path) -> None:
    sampled = sample_frames(talking_head, num_frames=8)
    change = np.abs(sampled.frames.astype(np.int16) - sampled.successors).mean(axis=(1, 2, 3))
    assert np.all(change[:-1] > 1.0), change
    assert sampled.indices[-1] == 29
    np.testing.assert_array_equal(sampled.frames[-1], sampled.successors[-1])  # the last frame


def test_reads_forward_once_without_seeking(talking_head_h264: Path, spy: list[str]) -> None:
    info = probe_video(talking_head_h264)
    spy.clear()
    sampled = sample_frames(talking_head_h264, num_frames=8, info=info)
    needed = set(sampled.indices.tolist()) | set(np.minimum(sampled.indices + 1, 29).tolist())
    assert spy.count("open") == 1
    assert not [call for call in spy if call.startswith("set:") or call == "read"]
    assert spy.count("grab") == 31  # 30 frames, then the end of the stream
    assert spy.count("retrieve") == len(needed)


def test_header_within_rounding_of_the_stream_is_trusted(tmp_path: Path, spy: list[str]) -> None:
    # A header one frame short of the stream (container rounding): sampled as declared.
    path = clips.write_talking_head(tmp_path / "clip.avi", fourcc="MJPG", seconds=1.0)
    info = probe_video(path)
    short = VideoInfo(info.fps, 14, 14 / info.fps, info.width, info.height)
    spy.clear()
    sampled = sample_frames(path, num_frames=4, info=short)
    assert spy.count("open") == 1 and sampled.decoded_frames == 15
    assert sampled.indices.tolist() == [0, 4, 9, 13]


def test_header_that_under_declares_is_read_to_the_end(tmp_path: Path, spy: list[str]) -> None:
    # A header that declares 10 of 15 frames: the stream's real length is what is sampled.
    path = clips.write_talking_head(tmp_path / "clip.avi", fourcc="MJPG", seconds=1.0)
    info = probe_video(path)
    short = VideoInfo(info.fps, 10, 10 / info.fps, info.width, info.height)
    spy.clear()
    sampled = sample_frames(path, num_frames=4, info=short)
    assert spy.count("open") == 2 and sampled.decoded_frames == 15
    assert sampled.indices.tolist() == [0, 5, 9, 14]
    every = decode_all(path)
    np.testing.assert_array_equal(sampled.frames, every[sampled.indices])


def test_clip_shorter_than_the_sample_count(tmp_path: Path) -> None:
    path = clips.write_talking_head(tmp_path / "short.mp4", seconds=0.4)  # 6 frames
    sampled = sample_frames(path, num_frames=16)
    assert sampled.frames.shape == (16, 240, 320, 3)
    assert sampled.decoded_frames == 6
    assert sampled.indices.tolist() == plan_sample_indices(6, 16).tolist()
    every = decode_all(path)
    np.testing.assert_array_equal(sampled.successors, every[np.minimum(sampled.indices + 1, 5)])


def test_stream_shorter_than_declared_is_replanned(
    talking_head_avi: Path, tmp_path: Path, spy: list[str]
) -> None:
    # The AVI header still declares 30 frames; about 27 survive the cut.
    path = clips.write_truncated(talking_head_avi, tmp_path / "cut.avi", keep_fraction=0.9)
    sampled = sample_frames(path, num_frames=8)
    assert spy.count("open") == 3  # probe, the first pass, the re-planned pass
    assert not [call for call in spy if call.startswith("set:")]
    every = decode_all(path)
    assert sampled.info.frame_count == 30
    assert 15 <= sampled.decoded_frames == len(every) < 30
    assert sampled.indices.tolist() == plan_sample_indices(len(every), 8).tolist()
    np.testing.assert_array_equal(sampled.frames, every[sampled.indices])
    np.testing.assert_array_equal(sampled.successors[-1], every[-1])


@pytest.mark.parametrize("source", ["talking_head_avi", "talking_head_h264"])
def test_truncated_stream_is_refused_with_counts(
    source: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    src = request.getfixturevalue(source)
    path = clips.write_truncated(src, tmp_path / f"cut{src.suffix}", keep_fraction=0.3)
    with pytest.raises(VideoDecodeError, match=r"truncated or corrupt: decoded \d+ of 30"):
        sample_frames(path)


def test_sampling_with_info_still_checks_the_file(tmp_path: Path, talking_head: Path) -> None:
    info = probe_video(talking_head)
    with pytest.raises(VideoNotFoundError):
        sample_frames(tmp_path / "gone.mp4", info=info)


def test_container_without_a_frame_count_is_counted_first(
    talking_head: Path, spy: list[str]
) -> None:
    info = probe_video(talking_head)
    unknown = VideoInfo(info.fps, 0, 0.0, info.width, info.height)
    spy.clear()
    sampled = sample_frames(talking_head, num_frames=4, info=unknown)
    assert sampled.indices.tolist() == [0, 10, 19, 29]
    assert spy.count("open") == 2  # the count, then the sampling pass
