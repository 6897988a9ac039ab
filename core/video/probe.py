"""Probing videos and sampling frames (with each frame's successor) in one forward pass.

Decoding is the expensive part of ingest. Seeking to each sample is worse than decoding the
whole clip on H.264 (every seek restarts at the previous keyframe), so `sample_frames` walks
the stream forward once, grabbing every packet and converting only the frames it keeps.

Container metadata can lie about the frame count. The sampler trusts what it decodes: when the
stream ends early it re-plans over the frames that exist, and a stream that yields fewer than
half the declared frames is reported as truncated. A stream that runs on past its declared end
is read to its real end and re-planned too.

Every pass is held to `VideoLimits` by what it decodes, whatever the header declared
(`core.video.decode_limits`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from core.errors import EmptyVideoError, VideoDecodeError, VideoLimitError
from core.storage.store import StoredVideo
from core.video.decode_limits import (  # VideoLimits stays importable from here (INTERFACES.md)
    DecodeGuard,
    VideoLimits,
    check_decoded,
    check_file,
    exceeds_resolution,
    overrun_allowance,
)

#: What the decoders open: a local path, or a stored video read by ranges (`core.storage.store`).
VideoSource = Path | StoredVideo


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


# Builds the limit check for one opened capture.
_Guard = Callable[[cv2.VideoCapture], DecodeGuard]


@dataclass(frozen=True)
class SampledFrames:
    """T sampled frames, each frame's successor, and where they came from."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB, the sampled frames
    successors: np.ndarray  # [T, H, W, 3] uint8 RGB, each sampled frame's next frame
    indices: np.ndarray  # [T] int64, decoded frame index of each sampled frame
    info: VideoInfo
    decoded_frames: int  # frames actually decoded


def _open(path: VideoSource, threads: int = 0) -> cv2.VideoCapture:
    """Open with the FFmpeg backend only, so no other backend guesses at odd files.

    `threads` > 0 caps the decoder's threads (a worker host scales with processes instead);
    0 lets FFmpeg choose.
    """
    params = [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []
    if isinstance(path, StoredVideo):
        cap = cv2.VideoCapture(path.open(), cv2.CAP_FFMPEG, params)  # type: ignore[call-overload]
    else:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        # The message describes what was received without quoting any of it: the file may
        # hold anything, and messages are stored and shown.
        raise VideoDecodeError(
            f"not a video container FFmpeg can read (unknown format, {_size(path)} "
            f"bytes; expected mp4, mov, mkv, webm, avi...; an upload cut off before its index "
            f"also fails here): {path}"
        )
    return cap


def _size(path: VideoSource) -> int:
    return path.size if isinstance(path, StoredVideo) else path.stat().st_size


def check_source(path: VideoSource, limits: VideoLimits) -> None:
    """`check_file` for a local path; a stored video's size against the same limits."""
    if not isinstance(path, StoredVideo):
        check_file(path, limits)
    elif path.size == 0:
        raise EmptyVideoError(f"video file is empty (0 bytes): {path}")
    elif path.size > limits.max_bytes:
        raise VideoLimitError(
            f"video is {path.size} bytes, over the limit of {limits.max_bytes} bytes: {path}"
        )


def _read_info(cap: cv2.VideoCapture, path: VideoSource) -> VideoInfo:
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


def _check_limits(info: VideoInfo, limits: VideoLimits, path: VideoSource) -> None:
    if info.duration_s > limits.max_duration_s:
        raise VideoLimitError(
            f"video lasts {info.duration_s:.1f} s, over the limit of "
            f"{limits.max_duration_s:.1f} s: {path}"
        )
    if info.frame_count > limits.max_frames:
        raise VideoLimitError(
            f"video declares {info.frame_count} frames, over the limit of {limits.max_frames} "
            f"({limits.max_duration_s:g} s at up to {limits.max_fps:g} fps): {path}"
        )
    if exceeds_resolution(info.width, info.height, limits):
        raise VideoLimitError(
            f"video is {info.width}x{info.height}, over the limit of "
            f"{limits.max_width}x{limits.max_height}: {path}"
        )


def probe_video(path: str | Path | StoredVideo, limits: VideoLimits | None = None) -> VideoInfo:
    """Read a video's declared properties and refuse it early if it breaks a limit.

    Checks run cheapest first: missing file, empty file, byte size, then whether FFmpeg can
    open it as a video at all, then duration and resolution. A stored video is read by
    ranges: its header and index, not its frames.
    """
    path = path if isinstance(path, StoredVideo) else Path(path)
    limits = limits or VideoLimits()
    check_source(path, limits)
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


def successor_indices(indices: np.ndarray, frame_count: int) -> np.ndarray:
    """Each sample's next frame; the clip's last frame is its own successor."""
    return np.minimum(indices + 1, frame_count - 1)


@dataclass(frozen=True)
class _Pass:
    """What one forward read found."""

    kept: dict[int, np.ndarray]  # the wanted frames, RGB, by index
    decoded: int  # frames decoded: all the stream holds, unless `ended_early`
    ended_early: bool  # the stream ended (or broke) before the last wanted frame
    overran: bool  # the stream ran on past its declared count: `decoded` is its real length


def fit_frame(frame: np.ndarray, max_side: int | None) -> np.ndarray:
    """One [H, W, C] frame scaled (area filter) so that max(H, W) <= ``max_side``."""
    if max_side is None:
        return frame
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frame
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def _read_forward(
    path: Path,
    wanted: set[int],
    declared: int,
    guard: _Guard,
    threads: int = 0,
    max_side: int | None = None,
) -> _Pass:
    """Decode forward once, keeping the frames at ``wanted`` indices as RGB.

    Every frame is grabbed (demuxed and decoded) but only wanted ones are retrieved
    (colour-converted, checked against the resolution limit, scaled to ``max_side`` and
    copied out). After the last wanted frame the read goes on to the stream's end: one more
    grab where the header was right; to the real end, within the limits, where the stream
    runs on past its declared count.
    """
    last = max(wanted)
    overrun_at = max(last, declared - 1) + overrun_allowance(declared)
    kept: dict[int, np.ndarray] = {}
    cap = _open(path, threads)
    try:
        check = guard(cap)
        index = 0
        while cap.grab():
            check.check(index + 1)
            if index in wanted:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    return _Pass(kept, index, ended_early=True, overran=False)
                check.check_frame(frame.shape[1], frame.shape[0])
                kept[index] = cv2.cvtColor(fit_frame(frame, max_side), cv2.COLOR_BGR2RGB)
            index += 1
            if index > overrun_at:
                while cap.grab():
                    index += 1
                    check.check(index)
                return _Pass(kept, index, ended_early=False, overran=True)
        return _Pass(kept, index, ended_early=index <= last, overran=False)
    finally:
        cap.release()


def _count_frames(path: Path, guard: _Guard) -> int:
    """Decode the whole stream to count frames, for containers that declare no count."""
    cap = _open(path)
    try:
        check = guard(cap)
        count = 0
        while cap.grab():
            count += 1
            check.check(count)
        return count
    finally:
        cap.release()


def stack_frames(
    kept: dict[int, np.ndarray], order: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Stack frames in ``order``; a stream that changes size mid-way is resized to ``shape``."""
    height, width = shape[:2]
    frames = [kept[int(i)] for i in order]
    frames = [
        f if f.shape[:2] == (height, width) else cv2.resize(f, (width, height)) for f in frames
    ]
    return np.stack(frames)


def _sample(
    path: Path,
    frame_count: int,
    num_frames: int,
    guard: _Guard,
    threads: int = 0,
    max_side: int | None = None,
) -> _Pass:
    indices = plan_sample_indices(frame_count, num_frames)
    wanted = set(indices.tolist()) | set(successor_indices(indices, frame_count).tolist())
    return _read_forward(path, wanted, frame_count, guard, threads, max_side)


def sample_frames(
    path: str | Path,
    num_frames: int = 16,
    limits: VideoLimits | None = None,
    info: VideoInfo | None = None,
    decode_threads: int = 0,
    max_side: int | None = None,
) -> SampledFrames:
    """Sample ``num_frames`` frames spread over the clip, each with its successor.

    ``decode_threads`` > 0 caps the decoder's threads; 0 leaves the choice to FFmpeg. With
    ``max_side``, each kept frame is scaled down to it as it is decoded (`fit_frame`).

    Pass ``info`` from an earlier ``probe_video`` to skip probing again. The stream is read
    forward once; only when the declared count was wrong (the stream ends before the planned
    frames, or runs on past its declared end) is it read a second time, over the frames that
    really exist. A container that declares no frame count at all is counted by a first full
    pass. Every pass stops with `VideoLimitError` once it decodes past the limits.
    """
    path = Path(path)
    limits = limits or VideoLimits()
    if info is None:
        info = probe_video(path, limits)
    else:
        check_file(path, limits)
    known = info

    def guard(cap: cv2.VideoCapture) -> DecodeGuard:
        return DecodeGuard(cap, known.fps, known.duration_s, limits, path)

    declared = info.frame_count if info.frame_count > 0 else _count_frames(path, guard)
    if declared < 1:
        raise VideoDecodeError(f"video has no decodable frames: {path}")
    read = _sample(path, declared, num_frames, guard, decode_threads, max_side)
    frame_count = declared
    if read.ended_early or read.overran:
        if read.ended_early:
            check_decoded(read.decoded, declared, path)
        frame_count = read.decoded
        read = _sample(path, frame_count, num_frames, guard, decode_threads, max_side)
        if read.ended_early or read.overran:
            raise VideoDecodeError(
                f"video is corrupt: it decoded {frame_count} frames on one read and "
                f"{read.decoded} on the next: {path}"
            )
    indices = plan_sample_indices(frame_count, num_frames)
    successors = successor_indices(indices, frame_count)
    shape = read.kept[int(indices[0])].shape
    return SampledFrames(
        frames=stack_frames(read.kept, indices, shape),
        successors=stack_frames(read.kept, successors, shape),
        indices=indices,
        info=info,
        decoded_frames=read.decoded,
    )


def downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    """[N, H, W, C] frames scaled (area filter) so that max(H, W) <= max_side."""
    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
