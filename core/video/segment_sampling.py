"""A video cut into segments, and one segment's frames sampled: what ingest and each
segment's sampling stage do.

The plan comes from the probe (`plan_video`); each segment then decodes only its own window
(`core.video.selective_decode`), so the segments of one video are sampled by different workers at
once. For a video of one segment the frames are exactly those `core.video.probe.sample_frames`
gives, so a 15 s clip is analysed as it always was.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from core.errors import InputError
from core.storage.store import StoredVideo
from core.video.keyframes import keyframes_near
from core.video.probe import probe_video, sample_frames
from core.video.segments import Segment, align_to_keyframes, plan_segments, segment_frame_ranges
from core.video.selective_decode import sample_segment

if TYPE_CHECKING:
    from core.video.decode_limits import VideoLimits
    from core.video.probe import SampledFrames, VideoInfo


def plan_video(
    info: VideoInfo,
    segment_seconds: float,
    source: str | Path | BinaryIO | StoredVideo | None = None,
) -> list[Segment]:
    """The segments of a probed video: by its frames' duration (frame count / fps).

    With ``source`` (the video itself), boundaries move onto the keyframes nearest them,
    found in its container index (`core.video.segments.align_to_keyframes`). A video whose header
    gives no usable frame count or rate is one segment; sampling it counts the frames that
    decode.
    """
    if info.frame_count < 1 or not info.fps > 0:
        return plan_segments(0.0, segment_seconds)
    plan = plan_segments(info.frame_count / info.fps, segment_seconds)
    if source is None or len(plan) < 2:
        return plan
    opened = source.open() if isinstance(source, StoredVideo) else source
    near = keyframes_near(opened, [s.start_s for s in plan[1:]], segment_seconds / 3)
    return align_to_keyframes(plan, near, info.fps, segment_seconds)


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

    Each segment decodes only its own window (`core.video.selective_decode.sample_segment`); a
    video whose header declares no frames is sampled whole, counting what decodes. Errors
    name the file as `name` (its user's name for it) instead of `path`, a storage copy.
    """
    if info.frame_count < 1 or not info.fps > 0:
        if len(segments) != 1:
            raise ValueError("a video without a frame count is planned as one segment")
        if isinstance(path, StoredVideo):
            raise ValueError("a video without a frame count is sampled from a local path")
        return sample_video(path, num_frames, limits, max_side, decode_threads, name=name)
    frames = segment_frame_ranges(segments, info.fps, info.frame_count)[index]
    with _named(path, name):
        return sample_segment(
            path,
            frames,
            num_frames,
            info=info,
            limits=limits,
            decode_threads=decode_threads,
            max_side=max_side,
        )


def sample_video(
    path: str | Path,
    num_frames: int,
    limits: VideoLimits | None = None,
    max_side: int | None = None,
    decode_threads: int = 0,
    name: str | None = None,
) -> SampledFrames:
    """Probe a video against the limits, then sample T frames and their successors.

    With `max_side`, frames larger than that on their long side are scaled down. `name` is
    the file as its user knows it: errors name it instead of `path`, which may be a storage
    copy the user never saw.
    """
    with _named(path, name):
        info = probe_video(path, limits)
        # Frames are scaled as they are decoded, so a segment never holds T full-size pairs.
        return sample_frames(
            path,
            num_frames=num_frames,
            limits=limits,
            info=info,
            decode_threads=decode_threads,
            max_side=max_side,
        )


@contextmanager
def _named(path: str | Path | StoredVideo, name: str | None) -> Iterator[None]:
    """Input errors raised inside name the file as `name`, its user's name for it.

    (`path` may be a storage copy the user never saw. Messages never quote a file's bytes:
    `core.video.probe` describes what it received without them.)
    """
    try:
        yield
    except InputError as exc:
        if name is None:
            raise
        raise type(exc)(str(exc).replace(str(path), name)) from exc
