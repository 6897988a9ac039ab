"""A video cut into segments, and one segment's frames sampled: what ingest and each
segment's sampling stage do.

The plan comes from the probe (`plan_video`); each segment then decodes only its own window
(`core.selective_decode`), so the segments of one video are sampled by different workers at
once. For a video of one segment the frames are exactly those `core.video.sample_frames`
gives, so a 15 s clip is analysed as it always was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import InputError
from core.segments import Segment, plan_segments, segment_frame_ranges
from core.storage import StoredVideo

if TYPE_CHECKING:
    from core.decode_limits import VideoLimits
    from core.video import SampledFrames, VideoInfo


def plan_video(info: VideoInfo, segment_seconds: float) -> list[Segment]:
    """The segments of a probed video: by its frames' duration (frame count / fps).

    A video whose header gives no usable frame count or rate is one segment; sampling it
    counts the frames that decode.
    """
    if info.frame_count < 1 or not info.fps > 0:
        return plan_segments(0.0, segment_seconds)
    return plan_segments(info.frame_count / info.fps, segment_seconds)


def sample_video_segment(
    path: str | Path | StoredVideo,
    segments: Sequence[Segment],
    index: int,
    num_frames: int,
    *,
    info: VideoInfo,
    limits: VideoLimits | None = None,
    max_side: int | None = None,
    decode_threads: int = 1,
    name: str | None = None,
) -> SampledFrames:
    """Sample segment `index` of `segments` (the video's plan from `plan_video`).

    Each segment decodes only its own window (`core.selective_decode.sample_segment`); a
    video whose header declares no frames is sampled whole, counting what decodes. Errors
    name the file as `name` (its user's name for it) instead of `path`, a storage copy.
    """
    from core.pipeline import downscale, sample_video
    from core.selective_decode import sample_segment

    if info.frame_count < 1 or not info.fps > 0:
        if len(segments) != 1:
            raise ValueError("a video without a frame count is planned as one segment")
        if isinstance(path, StoredVideo):
            raise ValueError("a video without a frame count is sampled from a local path")
        return sample_video(path, num_frames, limits, max_side, decode_threads, name=name)
    frames = segment_frame_ranges(segments, info.fps, info.frame_count)[index]
    try:
        sampled = sample_segment(
            path, frames, num_frames, info=info, limits=limits, decode_threads=decode_threads
        )
    except InputError as exc:
        if name is None:
            raise
        raise type(exc)(str(exc).replace(str(path), name)) from exc
    if max_side is None:
        return sampled
    return replace(
        sampled,
        frames=downscale(sampled.frames, max_side),
        successors=downscale(sampled.successors, max_side),
    )
