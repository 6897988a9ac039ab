"""Segment boundaries on keyframes: found in the container index, within a third of a window.

Clips are x264 test patterns from the ffmpeg binary that imageio_ffmpeg ships (160x120 at
10 fps, so each takes a fraction of a second to make), with keyframes placed by the encoder's
options; the reference keyframes are read back from every packet of the file.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from core.video.keyframes import keyframes_near
from core.video.probe import probe_video
from core.video.segment_sampling import plan_video, sample_video_segment
from core.video.segments import Segment, align_to_keyframes, plan_segments, segment_frame_ranges
from core.video.selective_decode import sample_segment

FPS = 10
SECONDS = 50  # marks at 15 and 30 s; the 5 s past 45 s are absorbed by the last segment


def x264(path: Path, *options: str, seconds: float = SECONDS, fmt: str | None = None) -> Path:
    """A test pattern encoded by libx264 (default B-frames) with the given options."""
    import imageio_ffmpeg

    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", f"testsrc=size=160x120:rate={FPS}", "-t", str(seconds),
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-sc_threshold", "0",
        *options, *(["-f", fmt] if fmt else []), str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return path


def keyframe_times(path: Path) -> set[float]:
    """Every keyframe's presentation time, from every packet (the reference)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        origin = stream.start_time or 0
        assert stream.time_base is not None
        return {
            round(float((p.pts - origin) * stream.time_base), 6)
            for p in container.demux(stream)
            if p.is_keyframe and p.pts is not None
        }


def plan(path: Path, seconds: float = 15.0) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in plan_video(probe_video(path), seconds, path)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keyframes")


@pytest.fixture(scope="module")
def gop_2s(folder: Path) -> Path:
    return x264(folder / "gop2.mp4", "-g", str(2 * FPS), "-keyint_min", str(2 * FPS))


@pytest.fixture(scope="module")
def gop_10s(folder: Path) -> Path:
    """A keyframe every 10 s, at 3, 13, 23, 33 and 43 s (and the first frame)."""
    return x264(
        folder / "gop10.mp4",
        "-g", str(10 * FPS), "-keyint_min", str(10 * FPS),
        "-force_key_frames", "expr:gte(t,n_forced*10+3)",
    )  # fmt: skip


def test_boundaries_on_a_2s_gop_move_to_the_nearest_keyframe(gop_2s: Path) -> None:
    keyframes = keyframe_times(gop_2s)
    assert keyframes == {float(t) for t in range(0, SECONDS, 2)}
    # 15 s lies between 14 and 16 (the earlier wins a tie); 30 s is one.
    assert plan(gop_2s) == [(0.0, 14.0), (14.0, 30.0), (30.0, 50.0)]


def test_boundaries_on_a_10s_gop_move_up_to_a_third_of_a_window(gop_10s: Path) -> None:
    assert keyframe_times(gop_10s) == {0.0, 3.0, 13.0, 23.0, 33.0, 43.0}
    assert plan(gop_10s) == [(0.0, 13.0), (13.0, 33.0), (33.0, 50.0)]
    # Windows of 9 s, reach 3 s: no keyframe lies within 3 s of 9, 18 or 27; 36 moves to 33
    # and 45 to 43.
    assert plan(gop_10s, 9.0) == [
        (0.0, 9.0),
        (9.0, 18.0),
        (18.0, 27.0),
        (27.0, 33.0),
        (33.0, 43.0),
        (43.0, 50.0),
    ]


def test_each_aligned_segment_decodes_from_its_own_first_frame(gop_10s: Path) -> None:
    info = probe_video(gop_10s)
    segments = plan_video(info, 15.0, gop_10s)
    ranges = segment_frame_ranges(segments, info.fps, info.frame_count)
    assert [r.start for r in ranges] == [0, 130, 330]
    full = sample_segment(gop_10s, range(info.frame_count), 16, info=info)
    for index, frames in enumerate(ranges):
        sampled = sample_video_segment(gop_10s, segments, index, 16, info=info)
        # Starting on a keyframe, a segment decodes no frame before its own.
        assert sampled.decoded_frames <= int(sampled.indices[-1]) - frames.start + 2
        assert sampled.indices[0] == frames.start
    # The frames themselves are a full decode's (spot check on the first segment's first).
    first = sample_video_segment(gop_10s, segments, 0, 16, info=info)
    np.testing.assert_array_equal(first.frames[0], full.frames[0])


@pytest.mark.parametrize(
    ("name", "options", "fmt"),
    [
        ("transport.ts", ("-g", str(2 * FPS)), "mpegts"),  # no index at all
        ("cues.mkv", ("-g", str(2 * FPS)), "matroska"),  # cues are read only on a seek
        ("one_keyframe.mp4", ("-g", "100000", "-keyint_min", "100000"), None),
        ("all_intra.mp4", ("-g", "1"), None),
    ],
)
def test_without_a_usable_keyframe_the_fixed_cut_stays(
    folder: Path, name: str, options: tuple[str, ...], fmt: str | None
) -> None:
    path = x264(folder / name, *options, fmt=fmt)
    assert plan(path) == [(0.0, 15.0), (15.0, 30.0), (30.0, 50.0)]


def test_matroska_through_a_pipe_is_not_scanned_for_keyframes(gop_2s: Path, folder: Path) -> None:
    """Without cues FFmpeg finds a keyframe by reading up to it: nothing is looked up."""
    import imageio_ffmpeg

    path = folder / "piped.mkv"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error",
        "-i", str(gop_2s), "-c", "copy", "-f", "matroska", "-",
    ]  # fmt: skip
    with path.open("wb") as out:
        subprocess.run(command, check=True, stdout=out)
    assert keyframes_near(path, [15.0, 30.0], 5.0) == [(), ()]


def test_a_15s_clip_stays_one_segment(folder: Path) -> None:
    clip = x264(folder / "clip15.mp4", "-g", str(2 * FPS), seconds=15)
    assert plan(clip) == [(0.0, 15.0)]


def test_an_unreadable_file_finds_no_keyframes(folder: Path) -> None:
    junk = folder / "junk.mp4"
    junk.write_bytes(b"not a video" * 100)
    assert keyframes_near(junk, [15.0], 5.0) == [()]


# --- align_to_keyframes, on given keyframes ----------------------------------------------------


def aligned(duration: float, near: list[tuple[float, ...]], fps: float = 30.0) -> list[tuple]:
    segments = plan_segments(duration)
    return [(s.start_s, s.end_s) for s in align_to_keyframes(segments, near, fps)]


def test_the_nearest_keyframe_within_reach_wins() -> None:
    assert aligned(45.0, [(12.0, 16.5), (29.0, 36.0)]) == [(0, 16.5), (16.5, 29.0), (29.0, 45.0)]


def test_keyframes_out_of_reach_leave_the_mark() -> None:
    assert aligned(45.0, [(9.9, 20.1), ()]) == [(0, 15.0), (15.0, 30.0), (30.0, 45.0)]


def test_no_segment_is_left_shorter_than_a_third_of_a_window() -> None:
    # 38 s: 15 + 15 + 8; a keyframe at 34 s (4 s from the 30 s mark) would leave 4 s.
    assert aligned(38.0, [(), (34.0,)]) == [(0, 15.0), (15.0, 30.0), (30.0, 38.0)]


def test_boundaries_land_on_the_frame_grid() -> None:
    (first, second) = align_to_keyframes(
        [Segment(0, 0.0, 15.0), Segment(1, 15.0, 30.0)], [(14.4333334,)], 30.0
    )
    assert second.start_s == first.end_s == round(14.4333334 * 30) / 30
    assert segment_frame_ranges([first, second], 30.0, 900)[1].start == 433
