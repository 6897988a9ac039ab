"""Cutting a video into segments of about 15 s, and the frames each segment samples.

The models are trained on 15 s clips of one person, so a longer video is analysed window by
window. Windows are `segment_seconds` long; a remainder shorter than half a window is absorbed
by the last one (a 37 s video is 15 s + 22 s), a longer one is its own segment (38 s is
15 + 15 + 8), and a video up to 1.5 windows long is one segment. A 15 s video is therefore one
segment, and it samples exactly the frames it sampled before segments existed.

Segments are planned in seconds (what a user reads) and mapped to frames here, once: frame
`i` is shown at `i / fps` and belongs to the segment whose window holds that moment. The first
segment starts at frame 0 and the last one ends at the video's last frame, so the segments
cover every frame exactly once, whatever rounding the frame rate brings.

A stored video's boundaries then move onto keyframes (`align_to_keyframes`): each one to the
keyframe nearest its nominal mark, within a third of a window either side, so that a segment
starts decoding at its own first frame. Segments then last about 15 s, not exactly; where no
keyframe lies within reach the fixed cut stays. Live sources cut as they go, on fixed marks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.video.probe import plan_sample_indices, successor_indices

DEFAULT_SEGMENT_SECONDS = 15.0
# Timestamps a hair under a frame's time (29.97 fps arithmetic) still land on that frame.
_FRAME_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Segment:
    """One analysis window of a video, in seconds from the video's start."""

    index: int
    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class SegmentSamples:
    """The frames one segment samples: T frame indices and each one's successor.

    Indices count frames from the start of the video, in presentation order, as
    `core.video.probe.sample_frames` does.
    """

    frames: range  # the segment's own frames
    indices: np.ndarray  # [T] int64, the sampled frames
    successors: np.ndarray  # [T] int64, each sampled frame's next frame in the video

    @property
    def wanted(self) -> frozenset[int]:
        """Every frame the samples need decoded: the sampled frames and their successors."""
        return frozenset(self.indices.tolist()) | frozenset(self.successors.tolist())


def plan_segments(
    duration_s: float, segment_seconds: float = DEFAULT_SEGMENT_SECONDS
) -> list[Segment]:
    """Cut ``duration_s`` seconds into windows of ``segment_seconds``.

    Up to 1.5 windows is one segment; beyond, every full window is a segment and the rest is
    absorbed by the last window when shorter than half a window, else it is a segment of its
    own. A video of unknown length (0 s) is one segment: the last segment always runs to the
    end of the stream, however long that turns out to be.
    """
    if not (math.isfinite(segment_seconds) and segment_seconds > 0):
        raise ValueError(f"segment_seconds must be a positive number, got {segment_seconds}")
    if not (math.isfinite(duration_s) and duration_s >= 0):
        raise ValueError(f"duration_s must be a finite number >= 0, got {duration_s}")
    if duration_s <= 1.5 * segment_seconds:
        return [Segment(0, 0.0, float(duration_s))]
    full = math.floor(duration_s / segment_seconds)
    # Division can land a hair off an exact multiple; settle it on the products themselves.
    while (full + 1) * segment_seconds <= duration_s:
        full += 1
    while full * segment_seconds > duration_s:
        full -= 1
    remainder = duration_s - full * segment_seconds
    count = full + 1 if remainder >= segment_seconds / 2 else full
    starts = [i * segment_seconds for i in range(count)]
    ends = [*starts[1:], float(duration_s)]
    return [Segment(i, start, end) for i, (start, end) in enumerate(zip(starts, ends, strict=True))]


def align_to_keyframes(
    segments: Sequence[Segment],
    keyframes: Sequence[Sequence[float]],
    fps: float,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
) -> list[Segment]:
    """Move each boundary of ``segments`` onto the nearest keyframe within reach.

    ``keyframes[i]`` holds the keyframe times (seconds) found near the start of segment
    ``i + 1`` (`core.video.keyframes.keyframes_near`). A boundary moves to the nearest of them that
    lies within a third of a window of its mark and leaves every segment at least a third of
    a window long; else it stays. Boundaries are put on the frame grid (``fps``), so that the
    stored start of a segment is the time of its first frame.
    """
    if len(keyframes) != len(segments) - 1:
        raise ValueError(
            f"expected keyframes for {len(segments) - 1} boundaries, got {len(keyframes)}"
        )
    if len(segments) < 2 or not (math.isfinite(fps) and fps > 0):
        return list(segments)
    reach = segment_seconds / 3
    end = segments[-1].end_s
    starts = [segments[0].start_s]
    for segment, near in zip(segments[1:], keyframes, strict=True):
        mark = segment.start_s
        fits = [
            t
            for t in (round(k * fps) / fps for k in near)
            if abs(t - mark) <= reach + _FRAME_TOLERANCE
            and t - starts[-1] >= reach
            and end - t >= reach
        ]
        starts.append(min(fits, key=lambda t: (abs(t - mark), t), default=mark))
    ends = [*starts[1:], end]
    return [Segment(i, a, b) for i, (a, b) in enumerate(zip(starts, ends, strict=True))]


def first_frame_at(seconds: float, fps: float) -> int:
    """Index of the first frame shown at or after ``seconds`` (frame ``i`` shows at i / fps)."""
    return max(0, math.ceil(seconds * fps - _FRAME_TOLERANCE))


def segment_frame_ranges(segments: Sequence[Segment], fps: float, frame_count: int) -> list[range]:
    """Each segment's frames: consecutive, non-overlapping ranges covering ``frame_count``.

    ``segments`` is the full plan of one video (from `plan_segments`), in order. The last
    range ends at ``frame_count`` whatever the last segment's end second says, so frames past
    a rounded duration are never orphaned.
    """
    if not segments:
        raise ValueError("segments must hold at least one segment")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    bounds = [0] + [first_frame_at(s.start_s, fps) for s in segments[1:]] + [frame_count]
    ranges = [range(a, b) for a, b in itertools.pairwise(bounds)]
    for segment, frames in zip(segments, ranges, strict=True):
        if len(frames) == 0:
            raise ValueError(
                f"segment {segment.index} ({segment.start_s:g}-{segment.end_s:g} s) holds no "
                f"frame of a video of {frame_count} frames at {fps:g} fps: plan the segments "
                f"from that video's duration (frame_count / fps)"
            )
    return ranges


def plan_segment_samples(frames: range, frame_count: int, num_frames: int) -> SegmentSamples:
    """T frames spread over one segment's ``frames``, each with its successor in the video.

    The spread is `core.video.probe.plan_sample_indices` over the segment, shifted to its first
    frame; a segment's last sample has the next segment's first frame as its successor, and
    only the video's last frame is its own successor. For a one-segment video
    (``frames == range(frame_count)``) this is exactly what `core.video.probe.sample_frames`
    samples.
    """
    if len(frames) == 0 or frames.step != 1:
        raise ValueError(f"frames must be a non-empty range of step 1, got {frames}")
    if frames.stop > frame_count:
        raise ValueError(f"frames {frames} run past the video's {frame_count} frames")
    indices = frames.start + plan_sample_indices(len(frames), num_frames)
    return SegmentSamples(frames, indices, successor_indices(indices, frame_count))
