"""core.video.segments: cutting a video into windows and the frames each window samples."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.video.probe import plan_sample_indices, successor_indices
from core.video.segments import (
    Segment,
    first_frame_at,
    plan_segment_samples,
    plan_segments,
    segment_frame_ranges,
)

# --- plan_segments ---------------------------------------------------------------------------


def bounds(duration_s: float, window: float = 15.0) -> list[tuple[float, float]]:
    return [(s.start_s, s.end_s) for s in plan_segments(duration_s, window)]


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (0.0, [(0.0, 0.0)]),
        (0.04, [(0.0, 0.04)]),
        (15.0, [(0.0, 15.0)]),
        (22.5, [(0.0, 22.5)]),  # exactly 1.5 windows: still one segment
        (22.51, [(0.0, 15.0), (15.0, 22.51)]),
        (30.0, [(0.0, 15.0), (15.0, 30.0)]),
        (37.0, [(0.0, 15.0), (15.0, 37.0)]),  # a 7 s remainder is absorbed
        (37.49, [(0.0, 15.0), (15.0, 37.49)]),
        (37.5, [(0.0, 15.0), (15.0, 30.0), (30.0, 37.5)]),  # half a window is its own
        (38.0, [(0.0, 15.0), (15.0, 30.0), (30.0, 38.0)]),
        (45.0, [(0.0, 15.0), (15.0, 30.0), (30.0, 45.0)]),
        (52.0, [(0.0, 15.0), (15.0, 30.0), (30.0, 52.0)]),
    ],
)
def test_windows_and_remainders(duration: float, expected: list[tuple[float, float]]) -> None:
    assert bounds(duration) == expected


def test_segments_are_numbered_in_order_and_tile_the_duration() -> None:
    for duration in np.linspace(0.0, 300.0, 1201):
        segments = plan_segments(float(duration))
        assert [s.index for s in segments] == list(range(len(segments)))
        assert segments[0].start_s == 0.0 and segments[-1].end_s == float(duration)
        for before, after in itertools.pairwise(segments):
            assert before.end_s == after.start_s
            assert before.duration_s == 15.0
        if len(segments) > 1:
            assert 7.5 <= segments[-1].duration_s < 22.5


def test_five_minutes_is_twenty_segments() -> None:
    segments = plan_segments(300.0)
    assert len(segments) == 20 and segments[-1] == Segment(19, 285.0, 300.0)


def test_float_products_near_a_window_multiple() -> None:
    # 0.1-second windows: float division puts 0.3 / 0.1 a hair under 3.
    assert len(plan_segments(0.3, 0.1)) == 3
    assert bounds(0.3, 0.1)[-1] == (pytest.approx(0.2), 0.3)


@pytest.mark.parametrize("duration", [-1.0, float("nan"), float("inf")])
def test_bad_durations_are_refused(duration: float) -> None:
    with pytest.raises(ValueError, match="duration_s"):
        plan_segments(duration)


@pytest.mark.parametrize("window", [0.0, -15.0, float("nan")])
def test_bad_windows_are_refused(window: float) -> None:
    with pytest.raises(ValueError, match="segment_seconds"):
        plan_segments(30.0, window)


# --- frame ranges -------------------------------------------------------------------------


def test_frame_boundaries_follow_frame_times() -> None:
    assert first_frame_at(15.0, 30.0) == 450
    assert first_frame_at(15.0, 25.0) == 375
    assert first_frame_at(15.0, 30000 / 1001) == 450  # 449.55: frame 450 is the first after
    assert first_frame_at(15.0, 12.5) == 188  # 187.5: frame 187 shows at 14.96 s
    assert first_frame_at(0.0, 30.0) == 0


@pytest.mark.parametrize("fps", [30.0, 25.0, 24.0, 30000 / 1001, 24000 / 1001, 12.5, 60.0, 1.0])
@pytest.mark.parametrize("seconds", [0.5, 15.0, 22.5, 37.0, 38.0, 61.3, 300.0])
def test_ranges_cover_every_frame_once(fps: float, seconds: float) -> None:
    frame_count = max(1, round(seconds * fps))
    segments = plan_segments(frame_count / fps)
    ranges = segment_frame_ranges(segments, fps, frame_count)
    assert len(ranges) == len(segments)
    covered = [i for frames in ranges for i in frames]
    assert covered == list(range(frame_count))  # in order, no overlap, no gap
    for segment, frames in zip(segments, ranges, strict=True):
        # Every frame is shown inside its segment's window (the last runs to the end).
        assert frames.start / fps >= segment.start_s - 1e-6
        if segment is not segments[-1]:
            assert (frames.stop - 1) / fps < segment.end_s


def test_a_one_segment_video_is_all_its_frames() -> None:
    assert segment_frame_ranges(plan_segments(15.0), 30.0, 450) == [range(450)]
    # The last range ends at the frame count even when the duration was rounded down.
    assert segment_frame_ranges(plan_segments(14.9), 30.0, 452) == [range(452)]


def test_segments_from_another_video_are_refused() -> None:
    with pytest.raises(ValueError, match="holds no frame"):
        segment_frame_ranges(plan_segments(60.0), 30.0, 300)  # 10 s of frames


@pytest.mark.parametrize(("fps", "count"), [(0.0, 10), (float("nan"), 10), (30.0, 0)])
def test_bad_rates_and_counts_are_refused(fps: float, count: int) -> None:
    with pytest.raises(ValueError):
        segment_frame_ranges(plan_segments(1.0), fps, count)


# --- sample indices -----------------------------------------------------------------------


@pytest.mark.parametrize("frame_count", [1, 2, 15, 16, 17, 30, 360, 450, 451])
@pytest.mark.parametrize("num_frames", [1, 16, 32])
def test_one_segment_samples_exactly_as_before(frame_count: int, num_frames: int) -> None:
    samples = plan_segment_samples(range(frame_count), frame_count, num_frames)
    before = plan_sample_indices(frame_count, num_frames)
    np.testing.assert_array_equal(samples.indices, before)
    np.testing.assert_array_equal(samples.successors, successor_indices(before, frame_count))
    assert samples.indices.dtype == np.int64


def test_later_segments_sample_inside_their_frames() -> None:
    fps, frame_count = 30.0, 9000  # five minutes
    segments = plan_segments(frame_count / fps)
    ranges = segment_frame_ranges(segments, fps, frame_count)
    for frames in ranges:
        samples = plan_segment_samples(frames, frame_count, 16)
        assert samples.indices[0] == frames.start and samples.indices[-1] == frames.stop - 1
        assert all(i in frames for i in samples.indices)
        np.testing.assert_array_equal(
            samples.indices, frames.start + plan_sample_indices(len(frames), 16)
        )
    # A segment's last sample has the next segment's first frame as its successor; only the
    # video's last frame is its own.
    middle = plan_segment_samples(ranges[3], frame_count, 16)
    assert middle.successors[-1] == ranges[4].start
    last = plan_segment_samples(ranges[-1], frame_count, 16)
    assert last.successors[-1] == frame_count - 1


def test_wanted_frames_are_the_samples_and_their_successors() -> None:
    samples = plan_segment_samples(range(10, 20), 20, 4)
    assert samples.indices.tolist() == [10, 13, 16, 19]
    assert samples.wanted == {10, 11, 13, 14, 16, 17, 19}


def test_short_segments_repeat_frames_rather_than_pad() -> None:
    samples = plan_segment_samples(range(5, 8), 8, 16)
    assert set(samples.indices.tolist()) == {5, 6, 7}
    assert samples.successors.max() == 7


@pytest.mark.parametrize("frames", [range(5, 5), range(0, 10, 2), range(5, 12)])
def test_bad_frame_ranges_are_refused(frames: range) -> None:
    with pytest.raises(ValueError):
        plan_segment_samples(frames, 10, 16)
