"""Cutting a live stream of frames into segments: the same samples as a file, one window held."""

from __future__ import annotations

import numpy as np

from core.video.live import SegmentCutter
from core.video.segments import plan_segment_samples, plan_segments, segment_frame_ranges

FPS = 15.0
SECONDS = 2.0
T = 8


def _frame(index: int) -> np.ndarray:
    """A 4x4 frame whose pixels hold its index (mod 256), to see which frame was kept."""
    return np.full((4, 4, 3), index % 256, np.uint8)


def _feed(cutter: SegmentCutter, frames: range, base_s: float = 0.0) -> list:
    done = []
    for i in frames:
        done += cutter.add(base_s + i / FPS, lambda i=i: _frame(i))
        assert cutter.holding <= 2 * T
    return done


def test_whole_windows_sample_what_the_file_path_samples() -> None:
    count = 150  # 10 s: five windows of 2 s
    cutter = SegmentCutter(SECONDS, FPS, T)
    segments = _feed(cutter, range(count))
    last = cutter.flush()
    assert last is not None
    segments.append(last)
    plan = plan_segments(count / FPS, SECONDS)
    ranges = segment_frame_ranges(plan, FPS, count)
    assert [(s.start_s, s.end_s) for s in segments] == [(p.start_s, p.end_s) for p in plan]
    for segment, frames in zip(segments, ranges, strict=True):
        expected = plan_segment_samples(frames, count, T)
        assert not segment.partial
        np.testing.assert_array_equal(segment.indices, expected.indices)
        np.testing.assert_array_equal(segment.frames[:, 0, 0, 0], expected.indices % 256)
        np.testing.assert_array_equal(segment.successors[:, 0, 0, 0], expected.successors % 256)


def test_a_window_cut_short_is_kept_from_half_its_length() -> None:
    cutter = SegmentCutter(SECONDS, FPS, T)
    assert len(_feed(cutter, range(30 + 14))) == 1
    assert cutter.flush() is None  # 14 of 30 frames: under half a window
    cutter = SegmentCutter(SECONDS, FPS, T)
    _feed(cutter, range(30 + 15))
    partial = cutter.flush()
    assert partial is not None and partial.partial
    assert (partial.start_s, partial.end_s) == (2.0, 3.0)
    assert partial.frames.shape == (T, 4, 4, 3)
    kept = set(partial.frames[:, 0, 0, 0].tolist())
    assert kept <= set(range(30, 45)) and len(kept) >= T // 2
    # The last frame of the span is its own successor; every other is followed by the next.
    assert (partial.successors[:, 0, 0, 0] >= partial.frames[:, 0, 0, 0]).all()


def test_a_source_back_after_a_drop_resumes_at_the_next_window() -> None:
    cutter = SegmentCutter(SECONDS, FPS, T)
    first = _feed(cutter, range(40))
    assert len(first) == 1 and cutter.flush() is None  # 10 frames: dropped
    base = cutter.next_window_start(40 / FPS + 3.1)
    assert base == 6.0
    after = _feed(cutter, range(30), base_s=base)
    after.append(cutter.flush())
    assert [(s.start_s, s.end_s, s.partial) for s in after] == [(6.0, 8.0, False)]


def test_dropped_frames_take_the_nearest_earlier_frame() -> None:
    cutter = SegmentCutter(SECONDS, FPS, T)
    frames = [i for i in range(31) if i != 17]  # sample 17 never arrives
    done = []
    for i in frames:
        done += cutter.add(i / FPS, lambda i=i: _frame(i))
    [segment] = done
    assert not segment.partial
    assert segment.frames[:, 0, 0, 0].tolist() == [0, 4, 8, 12, 13, 21, 25, 29]


def test_a_window_the_timestamps_jump_out_of_is_cut_short() -> None:
    cutter = SegmentCutter(SECONDS, FPS, T)
    done = _feed(cutter, range(51))  # window 1 holds frames 30-50 of 30-59
    done += cutter.add(75 / FPS, lambda: _frame(75))  # then the timestamps jump to window 2
    assert [(s.start_s, s.partial) for s in done] == [(0.0, False), (2.0, True)]
    assert done[1].end_s == 51 / FPS
    assert set(done[1].frames[:, 0, 0, 0].tolist()) <= set(range(30, 51))
