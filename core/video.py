"""Probing videos and sampling frames (with each frame's successor) in one forward pass.

Decoding is the expensive part of ingest. Seeking to each sample is worse than decoding the
whole clip on H.264 (every seek restarts at the previous keyframe), so `sample_frames` walks
the stream forward once, grabbing every packet and converting only the frames it keeps.

Container metadata can lie about the frame count. The sampler trusts what it decodes: when the
stream ends early it re-plans over the frames that exist, and a stream that yields fewer than
half the declared frames is reported as truncated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import EmptyVideoError, VideoDecodeError, VideoLimitError, VideoNotFoundError

# A stream that decodes fewer than this fraction of its declared frames is truncated.
MIN_DECODED_FRACTION = 0.5


@dataclass(frozen=True)
class VideoLimits:
    """Inputs over these limits are refused before any decoding.

    Resolution limits describe a landscape box and apply to either orientation, so a portrait
    phone video of the same size passes too.
    """

    max_bytes: int = 2 * 1024**3
    max_duration_s: float = 20 * 60
    max_width: int = 3840
    max_height: int = 2160


@dataclass(frozen=True)
class VideoInfo:
    """What the container declares about a video stream."""

    fps: float
    frame_count: int  # as the container declares it; may be wrong
    duration_s: float
    width: int
    height: int

    def to_dict(self) -> dict[str, float | int]:
        """Plain JSON-ready values, for storing alongside a video's record."""
        return asdict(self)


@dataclass(frozen=True)
class SampledFrames:
    """T sampled frames, each frame's successor, and where they came from."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB, the sampled frames
    successors: np.ndarray  # [T, H, W, 3] uint8 RGB, each sampled frame's next frame
    indices: np.ndarray  # [T] int64, decoded frame index of each sampled frame
    info: VideoInfo
    decoded_frames: int  # frames actually decoded


def _check_file(path: Path, limits: VideoLimits) -> None:
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


def _open(path: Path, threads: int = 0) -> cv2.VideoCapture:
    """Open with the FFmpeg backend only, so no other backend guesses at odd files.

    `threads` > 0 caps the decoder's threads (a worker host scales with processes instead);
    0 lets FFmpeg choose.
    """
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        # The message describes what was received without quoting any of it: the file may
        # hold anything, and messages are stored and shown.
        raise VideoDecodeError(
            f"not a video container FFmpeg can read (unknown format, {path.stat().st_size} "
            f"bytes; expected mp4, mov, mkv, webm, avi...; an upload cut off before its index "
            f"also fails here): {path}"
        )
    return cap


def _read_info(cap: cv2.VideoCapture, path: Path) -> VideoInfo:
    fps = float(cap.get(cv2.CAP_PROP_FPS))
    fps = fps if np.isfinite(fps) and fps > 0 else 0.0
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    frame_count = int(count) if np.isfinite(count) and count > 0 else 0
    width = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))
    height = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    if width <= 0 or height <= 0:
        raise VideoDecodeError(
            f"not a video (no video stream, frame size {width}x{height}): {path}"
        )
    duration = frame_count / fps if fps > 0 else 0.0
    return VideoInfo(fps, frame_count, duration, width, height)


def _check_limits(info: VideoInfo, limits: VideoLimits, path: Path) -> None:
    if info.duration_s > limits.max_duration_s:
        raise VideoLimitError(
            f"video lasts {info.duration_s:.1f} s, over the limit of "
            f"{limits.max_duration_s:.1f} s: {path}"
        )
    long_side, short_side = max(info.width, info.height), min(info.width, info.height)
    max_long = max(limits.max_width, limits.max_height)
    max_short = min(limits.max_width, limits.max_height)
    if long_side > max_long or short_side > max_short:
        raise VideoLimitError(
            f"video is {info.width}x{info.height}, over the limit of "
            f"{limits.max_width}x{limits.max_height}: {path}"
        )


def probe_video(path: str | Path, limits: VideoLimits | None = None) -> VideoInfo:
    """Read a video's declared properties and refuse it early if it breaks a limit.

    Checks run cheapest first: missing file, empty file, byte size, then whether FFmpeg can
    open it as a video at all, then duration and resolution.
    """
    path = Path(path)
    limits = limits or VideoLimits()
    _check_file(path, limits)
    cap = _open(path)
    try:
        info = _read_info(cap, path)
    finally:
        cap.release()
    _check_limits(info, limits, path)
    return info


def plan_sample_indices(frame_count: int, num_frames: int) -> np.ndarray:
    """T frame indices spread evenly from the first to the last frame, in order.

    Uses rounded ``np.linspace``, so a clip shorter than T frames repeats some indices rather
    than padding: every sample is a real frame.
    """
    if frame_count < 1:
        raise ValueError(f"frame_count must be at least 1, got {frame_count}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    return np.round(np.linspace(0, frame_count - 1, num_frames)).astype(np.int64)


def _successor_indices(indices: np.ndarray, frame_count: int) -> np.ndarray:
    """Each sample's next frame; the clip's last frame is its own successor."""
    return np.minimum(indices + 1, frame_count - 1)


def _read_forward(
    path: Path, wanted: set[int], threads: int = 0
) -> tuple[dict[int, np.ndarray], int, bool]:
    """Decode forward once, keeping the frames at ``wanted`` indices as RGB.

    Every frame is grabbed (demuxed and decoded) but only wanted ones are retrieved
    (colour-converted and copied out). Reading stops after the last wanted frame. Returns the
    kept frames, how many frames were decoded, and whether the stream ended first.
    """
    last = max(wanted)
    kept: dict[int, np.ndarray] = {}
    cap = _open(path, threads)
    try:
        index = 0
        while index <= last:
            if not cap.grab():
                return kept, index, True
            if index in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    return kept, index, True
                kept[index] = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        return kept, index, False
    finally:
        cap.release()


def _count_frames(path: Path) -> int:
    """Decode the whole stream to count frames, for containers that declare no count."""
    cap = _open(path)
    try:
        count = 0
        while cap.grab():
            count += 1
        return count
    finally:
        cap.release()


def _stack(kept: dict[int, np.ndarray], order: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Stack frames in ``order``; a stream that changes size mid-way is resized to ``shape``."""
    height, width = shape[:2]
    frames = [kept[int(i)] for i in order]
    frames = [
        f if f.shape[:2] == (height, width) else cv2.resize(f, (width, height)) for f in frames
    ]
    return np.stack(frames)


def _sample(
    path: Path, frame_count: int, num_frames: int, threads: int = 0
) -> tuple[dict[int, np.ndarray], int, bool]:
    indices = plan_sample_indices(frame_count, num_frames)
    wanted = set(indices.tolist()) | set(_successor_indices(indices, frame_count).tolist())
    return _read_forward(path, wanted, threads)


def _check_decoded(decoded: int, declared: int, path: Path) -> None:
    """Refuse a stream that ended far before its declared length: it is cut off or corrupt."""
    if decoded == 0:
        raise VideoDecodeError(f"video has no decodable frames (declares {declared}): {path}")
    if decoded < MIN_DECODED_FRACTION * declared:
        raise VideoDecodeError(
            f"video is truncated or corrupt: decoded {decoded} of {declared} declared "
            f"frames: {path}"
        )


def sample_frames(
    path: str | Path,
    num_frames: int = 16,
    limits: VideoLimits | None = None,
    info: VideoInfo | None = None,
    decode_threads: int = 0,
) -> SampledFrames:
    """Sample ``num_frames`` frames spread over the clip, each with its successor.

    ``decode_threads`` > 0 caps the decoder's threads; 0 leaves the choice to FFmpeg.

    Pass ``info`` from an earlier ``probe_video`` to skip probing again. The stream is read
    forward once; only when it ends before the planned frames (the declared count was wrong)
    is it read a second time, over the frames that really exist. A container that declares
    no frame count at all is counted by a first full pass.
    """
    path = Path(path)
    if info is None:
        info = probe_video(path, limits)
    else:
        _check_file(path, limits or VideoLimits())
    declared = info.frame_count if info.frame_count > 0 else _count_frames(path)
    if declared < 1:
        raise VideoDecodeError(f"video has no decodable frames: {path}")
    kept, decoded, ended_early = _sample(path, declared, num_frames, decode_threads)
    frame_count = declared
    if ended_early:
        _check_decoded(decoded, declared, path)
        frame_count = decoded
        kept, decoded, ended_early = _sample(path, frame_count, num_frames, decode_threads)
        if ended_early:
            raise VideoDecodeError(
                f"video is corrupt: it decoded {frame_count} frames on one read and only "
                f"{decoded} on the next: {path}"
            )
    indices = plan_sample_indices(frame_count, num_frames)
    successors = _successor_indices(indices, frame_count)
    shape = kept[int(indices[0])].shape
    return SampledFrames(
        frames=_stack(kept, indices, shape),
        successors=_stack(kept, successors, shape),
        indices=indices,
        info=info,
        decoded_frames=decoded,
    )
