"""The limits a video is held to, and their enforcement while it is decoded.

The limits hold on what is decoded, not only on what the header says: every pass stops with a
`VideoLimitError` as soon as the decoded timestamps pass `max_duration_s` (frames / fps where
the stream has no timestamps) or the frame count passes `max_frames`. A Matroska file written
through a pipe declares no duration at all, and a header can declare 10 s for a 2-hour stream.

Both decoders use what is here: `core.video.probe` (OpenCV, a forward pass over the whole clip) with
`DecodeGuard`, and `core.video.selective_decode` (PyAV, a segment's frames only) with `IndexGuard`;
both check the file first with `check_file`, and judge a stream's real length against its
declared one with `MIN_DECODED_FRACTION` (`check_decoded`) and `overrun_allowance`.

The resolution limit holds on every decoded frame too (`check_frame_size`), before the frame
is converted or kept: a stream may change its resolution mid-way (MPEG-TS, a new sequence
header), and the header describes only its start. Frames kept are scaled down as they come
(`core.video.probe.fit_frame`), so a segment holds at most T pairs of small frames, whatever the
stream does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import EmptyVideoError, VideoDecodeError, VideoLimitError, VideoNotFoundError

# A stream that decodes fewer than this fraction of its declared frames is truncated.
MIN_DECODED_FRACTION = 0.5
# A stream that goes on past its declared frame count by more than this fraction (or two
# frames) declared less than it holds; within it, the difference is the container's rounding.
OVERRUN_FRACTION = 0.1


@dataclass(frozen=True)
class VideoLimits:
    """Inputs over these limits are refused: by the header before any decoding, and again by
    what is decoded, whatever the header said.

    Resolution limits describe a landscape box and apply to either orientation, so a portrait
    phone video of the same size passes too. `max_fps` bounds the frame count
    (`max_frames` = duration limit × fps limit), which caps the decoding work on a stream
    whose timestamps do not advance or whose frame rate is absurd.
    """

    max_bytes: int = 2 * 1024**3
    max_duration_s: float = 3 * 60 * 60
    max_width: int = 3840
    max_height: int = 2160
    max_fps: float = 240.0

    @property
    def max_frames(self) -> int:
        return math.ceil(self.max_duration_s * self.max_fps)


def check_file(path: Path, limits: VideoLimits) -> None:
    """The checks that need no decoder: existence, emptiness, byte size."""
    if not path.exists():
        raise VideoNotFoundError(f"video not found: {path}")
    if not path.is_file():
        raise VideoNotFoundError(f"expected a video file, got a directory or device: {path}")
    size = path.stat().st_size
    if size == 0:
        raise EmptyVideoError(f"video file is empty (0 bytes): {path}")
    if size > limits.max_bytes:
        raise VideoLimitError(
            f"video is {size} bytes, over the limit of {limits.max_bytes} bytes: {path}"
        )


def exceeds_resolution(width: int, height: int, limits: VideoLimits) -> bool:
    """Whether a ``width`` x ``height`` picture is over the limits' box, in either orientation."""
    long_side, short_side = max(width, height), min(width, height)
    max_long = max(limits.max_width, limits.max_height)
    max_short = min(limits.max_width, limits.max_height)
    return long_side > max_long or short_side > max_short


def check_frame_size(width: int, height: int, limits: VideoLimits, path: object) -> None:
    """Refuse a decoded frame over the resolution limit, whatever the header declared
    (``path`` names the video: a path or a stored object)."""
    if exceeds_resolution(width, height, limits):
        raise VideoLimitError(
            f"video has a {width}x{height} frame, over the limit of {limits.max_width}x"
            f"{limits.max_height} (its resolution changes past what its header declares): "
            f"{path}"
        )


def overrun_allowance(declared: int) -> int:
    """Frames a stream may hold past its declared count before the count is taken as wrong."""
    return max(2, math.ceil(OVERRUN_FRACTION * declared))


def check_decoded(decoded: int, declared: int, path: Path) -> None:
    """Refuse a stream that ended far before its declared length: it is cut off or corrupt."""
    if decoded == 0:
        raise VideoDecodeError(f"video has no decodable frames (declares {declared}): {path}")
    if decoded < MIN_DECODED_FRACTION * declared:
        raise VideoDecodeError(
            f"video is truncated or corrupt: decoded {decoded} of {declared} declared "
            f"frames: {path}"
        )


class DecodeGuard:
    """Stops an OpenCV decoding pass once it runs past the limits, whatever the header declared.

    Checked after every grabbed frame: the frame count against `max_frames`, and the decoded
    span (the frame's timestamp plus one frame, or frames / fps without timestamps) against
    `max_duration_s`. ``fps`` and ``declared_s`` are what the header declares (0 where it
    declares nothing).
    """

    def __init__(
        self,
        cap: cv2.VideoCapture,
        fps: float,
        declared_s: float,
        limits: VideoLimits,
        path: Path,
    ) -> None:
        self._cap = cap
        self._declared_s = declared_s
        self._limits = limits
        self._path = path
        self._frame_s = 1.0 / fps if fps > 0 else 0.0

    def check(self, decoded: int) -> None:
        limits = self._limits
        if decoded > limits.max_frames:
            raise VideoLimitError(
                f"video runs past the limit of {limits.max_frames} frames "
                f"({limits.max_duration_s:g} s at up to {limits.max_fps:g} fps; decoded "
                f"{decoded} frames, {self._declared()}): {self._path}"
            )
        seconds = self._decoded_s(decoded)
        if seconds > limits.max_duration_s:
            raise VideoLimitError(
                f"video runs past the {limits.max_duration_s:g} s limit (decoded "
                f"{seconds:.1f} s, {self._declared()}): {self._path}"
            )

    def check_frame(self, width: int, height: int) -> None:
        check_frame_size(width, height, self._limits, self._path)

    def _decoded_s(self, decoded: int) -> float:
        position = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        if np.isfinite(position) and position > 0:
            return position / 1000 + self._frame_s
        return decoded * self._frame_s  # no timestamps (or the first frame)

    def _declared(self) -> str:
        if self._declared_s > 0:
            return f"its header declares {self._declared_s:.1f} s"
        return "no duration in its header"


class IndexGuard:
    """Stops a PyAV read once a frame lies past the limits, whatever the header declared.

    Frames are known by their index on the stream's frame grid, so the span is the index over
    the stream's ``rate``.
    """

    def __init__(self, limits: VideoLimits, rate: float, path: object) -> None:
        self._limits = limits
        self._rate = rate
        self._path = path

    def check(self, index: int) -> None:
        limits = self._limits
        if index + 1 > limits.max_frames:
            raise VideoLimitError(
                f"video runs past the limit of {limits.max_frames} frames "
                f"({limits.max_duration_s:g} s at up to {limits.max_fps:g} fps; reached frame "
                f"{index + 1}): {self._path}"
            )
        seconds = (index + 1) / self._rate if self._rate > 0 else 0.0
        if seconds > limits.max_duration_s:
            raise VideoLimitError(
                f"video runs past the {limits.max_duration_s:g} s limit (reached "
                f"{seconds:.1f} s): {self._path}"
            )

    def check_frame(self, width: int, height: int) -> None:
        check_frame_size(width, height, self._limits, self._path)
