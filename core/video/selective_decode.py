"""Decoding only the frames a segment's samples need, with PyAV.

A segment samples T frames and their successors out of hundreds. Decoding is the expensive
part of ingest, and most of it is spent on frames nobody looks at. Two things cut it:

* **Seek.** A segment starts decoding at the keyframe at or before its first wanted frame, not
  at the start of the video, and stops after its last wanted frame.
* **Skip non-reference frames.** A frame that no other frame references (in x264 output, the
  B-frames outside the B-pyramid) can be dropped without changing any other frame. FFmpeg's
  `skip_frame = NONREF` does that per packet; it is switched back to `DEFAULT` for each packet
  that holds a wanted frame. Packets come in decode order, B-frames in between reorder, so a
  packet is matched to its frame by its presentation timestamp, never by its position.

The kept frames are bit-identical to a full decode (the skipped frames are, by definition,
never read by the ones decoded). Content without B-frames has no non-reference frames, and
simply decodes every frame of the window.

Frames are indexed by their timestamps on the stream's frame grid (`core.video.frame_grid`). A
stream whose timestamps are missing or off that grid (variable frame rate) is decoded from its
start without skipping, counting frames as they come out: slower, and still exact.

Limits hold on what is read (`core.video.decode_limits`): reading stops with `VideoLimitError` as
soon as a frame's index passes `max_frames` or its time passes `max_duration_s`, or a decoded
frame is larger than the resolution limit (a stream that changes size mid-way). Every decoded
frame's size is checked before it is converted, and kept frames are scaled to `max_side` as
they come, so a segment holds T pairs of small frames whatever the stream does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from core.errors import VideoDecodeError
from core.storage.store import StoredVideo
from core.video.decode_limits import (
    MIN_DECODED_FRACTION,
    IndexGuard,
    VideoLimits,
    overrun_allowance,
)
from core.video.frame_grid import FrameGrid, OffGrid, check_contiguous, seek_packets, stream_grid
from core.video.probe import (
    SampledFrames,
    VideoInfo,
    VideoSource,
    check_source,
    fit_frame,
    probe_video,
    stack_frames,
)
from core.video.segments import SegmentSamples, plan_segment_samples

# H.264 reorders at most 16 frames: past that many packets after a frame, none comes before it.
_REORDER_DEPTH = 16


@dataclass(frozen=True)
class DecodedFrames:
    """What one selective read found."""

    kept: dict[int, np.ndarray]  # the wanted frames found, RGB uint8, by frame index
    decoded: int  # frames the decoder produced (skipped frames excluded)
    stream_frames: int | None  # frames in the stream, when it was read to its end


def _open(path: VideoSource) -> av.container.InputContainer:
    try:
        # A stored video is read through a seekable file: only the index and the window's
        # bytes are fetched.
        return av.open(path.open() if isinstance(path, StoredVideo) else str(path), mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(
            f"not a video container FFmpeg can read ({_reason(error)}, {_size(path)} "
            f"bytes; expected mp4, mov, mkv, webm, avi...): {path}"
        ) from error


def _size(path: VideoSource) -> int:
    return path.size if isinstance(path, StoredVideo) else path.stat().st_size


def _reason(error: av.FFmpegError) -> str:
    return str(getattr(error, "strerror", None) or type(error).__name__)


def _video_stream(container: av.container.InputContainer, path: VideoSource) -> av.VideoStream:
    if not container.streams.video:
        raise VideoDecodeError(f"not a video (no video stream): {path}")
    return container.streams.video[0]


def _decode(context: av.VideoCodecContext, packet: av.Packet | None) -> list[av.VideoFrame]:
    """Decode one packet; a packet the decoder refuses yields no frame, as in OpenCV.

    A broken packet (an upload cut off mid-frame) loses its frame, not the read: the frames
    around it still decode, and a wanted frame that never came out is reported by the caller.
    """
    try:
        return context.decode(packet)
    except av.error.InvalidDataError:
        return []


def _read_selectively(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    grid: FrameGrid,
    wanted: frozenset[int],
    limits: IndexGuard,
    to_end: bool,
    max_side: int | None,
) -> DecodedFrames:
    context = stream.codec_context
    kept: dict[int, np.ndarray] = {}
    pending = set(wanted)
    seen: set[int] = set()
    decoded = settled = 0

    def take(frames: Iterable[av.VideoFrame]) -> None:
        nonlocal decoded
        for frame in frames:
            decoded += 1
            limits.check_frame(frame.width, frame.height)
            index = grid.index(frame.pts)
            if index in wanted:
                kept[index] = _rgb(frame, max_side)

    for packet in seek_packets(container, stream, grid, min(wanted)):
        if packet.size == 0:
            continue  # the demuxer's end-of-stream marker
        index = grid.index(packet.pts)
        limits.check(index)
        if index in seen:
            raise OffGrid(f"two frames at index {index}")
        seen.add(index)
        if not pending:
            # Read on (without decoding) past the reordering window, or to the end to
            # count the frames, so that a gap in the timestamps before here shows.
            if not to_end and (packet.is_keyframe or len(seen) > settled + _REORDER_DEPTH):
                break
            continue
        context.skip_frame = "DEFAULT" if index in wanted else "NONREF"
        take(_decode(context, packet))
        pending.discard(index)
        if not pending:
            settled = len(seen)
            take(_decode(context, None))  # the decoder holds back frames to reorder them
    if pending:
        take(_decode(context, None))
    check_contiguous(seen, None if to_end or pending else max(wanted))
    stream_frames = max(seen) + 1 if seen and (to_end or pending) else None
    return DecodedFrames(kept, decoded, stream_frames)


def _read_sequentially(
    container: av.container.InputContainer,
    stream: av.VideoStream,
    wanted: frozenset[int],
    limits: IndexGuard,
    to_end: bool,
    max_side: int | None,
) -> DecodedFrames:
    """Every frame from the start, counted as it comes out: for streams without a time grid."""
    container.seek(0, backward=True, any_frame=False)
    context = stream.codec_context
    context.skip_frame = "DEFAULT"
    kept: dict[int, np.ndarray] = {}
    last = max(wanted)
    index = -1
    packets = container.demux(stream)
    frames = (f for p in packets for f in _decode(context, None if p.size == 0 else p))
    for index, frame in enumerate(frames):
        limits.check(index)
        limits.check_frame(frame.width, frame.height)
        if index in wanted:
            kept[index] = _rgb(frame, max_side)
        if index >= last and not to_end:
            return DecodedFrames(kept, index + 1, None)
    return DecodedFrames(kept, index + 1, index + 1)


def _rgb(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    """A frame as RGB, scaled to ``max_side`` at once (as `core.video.probe.downscale` does)."""
    return fit_frame(frame.to_ndarray(format="rgb24"), max_side)


def decode_frames(
    path: str | Path | StoredVideo,
    wanted: Iterable[int],
    *,
    limits: VideoLimits | None = None,
    decode_threads: int = 1,
    to_end: bool = False,
    sequential: bool = False,
    max_side: int | None = None,
) -> DecodedFrames:
    """Decode the frames at ``wanted`` indices (presentation order), and as little else.

    ``to_end`` goes on reading packets (without decoding them) to the stream's end, to count
    its frames: the last segment of a video does, so a stream longer than its header says is
    found, and held to the limits. A stream that ends before a wanted frame returns without
    it, with ``stream_frames`` set. ``decode_threads`` is the decoder's thread count (1: one
    thread, as worker hosts scale by processes; 0: FFmpeg's choice). ``sequential`` decodes
    every frame from the start and counts frames as they come out, as OpenCV does: for a
    broken stream, whose packets are not all frames. ``max_side`` scales each kept frame
    down as it is decoded.
    """
    path = path if isinstance(path, StoredVideo) else Path(path)
    limits = limits or VideoLimits()
    want = frozenset(int(i) for i in wanted)
    if not want or min(want) < 0:
        raise ValueError(f"wanted must hold frame indices >= 0, got {sorted(want)[:5]}")
    check_source(path, limits)
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.codec_context.thread_count = decode_threads
        # Frame threads, as OpenCV uses: PyAV's default (slice threads) gives x264 output,
        # one slice per frame, no parallelism, and makes each frame wait on idle threads: on a
        # busy host a 15 s 720p window took 3.6 s instead of 1.0 s for the same CPU time.
        stream.codec_context.thread_type = "AUTO"
        grid = stream_grid(stream)
        rate = float(grid.rate) if grid else float(stream.guessed_rate or 0)
        check = IndexGuard(limits, rate, path)
        try:
            if grid is not None and not sequential:
                try:
                    return _read_selectively(container, stream, grid, want, check, to_end, max_side)
                except OffGrid:
                    stream.codec_context.flush_buffers()
            return _read_sequentially(container, stream, want, check, to_end, max_side)
        except av.FFmpegError as error:
            raise VideoDecodeError(f"video stream is corrupt ({_reason(error)}): {path}") from error


def sample_segment(
    path: str | Path | StoredVideo,
    frames: range,
    num_frames: int = 16,
    *,
    info: VideoInfo | None = None,
    limits: VideoLimits | None = None,
    decode_threads: int = 1,
    max_side: int | None = None,
) -> SampledFrames:
    """Sample one segment's ``frames`` (from `core.video.segments.segment_frame_ranges`).

    Returns what `core.video.probe.sample_frames` returns, for the segment: T frames spread over
    it and their successors. For a one-segment video the frames are exactly those
    `sample_frames` gives. The last segment (``frames.stop == info.frame_count``) reads the
    stream to its end: when the header's frame count was wrong, it re-plans over the frames
    that exist, as `sample_frames` does. Pass ``info`` from the probe that planned the
    segments.
    """
    path = path if isinstance(path, StoredVideo) else Path(path)
    limits = limits or VideoLimits()
    info = info or probe_video(path, limits)
    declared = info.frame_count
    last = frames.stop == declared
    samples = plan_segment_samples(frames, declared, num_frames)
    read = decode_frames(
        path,
        samples.wanted,
        limits=limits,
        decode_threads=decode_threads,
        to_end=last,
        max_side=max_side,
    )
    real = read.stream_frames
    short = real is not None and real < declared
    overran = last and real is not None and real > declared - 1 + overrun_allowance(declared)
    if short:
        # Cut off or corrupt: its packets overstate its frames (a partial packet, B-frames
        # lost after their reference), so count the frames that decode.
        assert real is not None
        _check_stream(real, declared, frames, last, path)
        real = _decoded_count(path, limits, decode_threads)
        _check_stream(real, declared, frames, last, path)
    if short or overran:
        assert real is not None
        samples = plan_segment_samples(range(frames.start, real), real, num_frames)
        read = decode_frames(
            path,
            samples.wanted,
            limits=limits,
            decode_threads=decode_threads,
            to_end=True,
            sequential=short,
            max_side=max_side,
        )
    missing = samples.wanted - read.kept.keys()
    if missing:
        raise VideoDecodeError(
            f"video is corrupt: frames {sorted(missing)[:4]} of segment frames "
            f"{frames.start}-{frames.stop - 1} did not decode: {path}"
        )
    shape = read.kept[int(samples.indices[0])].shape
    return SampledFrames(
        frames=stack_frames(read.kept, samples.indices, shape),
        successors=stack_frames(read.kept, samples.successors, shape),
        indices=samples.indices,
        info=info,
        decoded_frames=read.decoded,
    )


def _decoded_count(path: VideoSource, limits: VideoLimits, decode_threads: int) -> int:
    read = decode_frames(
        path, {0}, limits=limits, decode_threads=decode_threads, to_end=True, sequential=True
    )
    return read.stream_frames or 0


def _check_stream(real: int, declared: int, frames: range, last: bool, path: VideoSource) -> None:
    """Refuse a stream that ends before this segment, or far before its declared end."""
    if real <= frames.start or not last or real < MIN_DECODED_FRACTION * declared:
        raise VideoDecodeError(
            f"video is truncated or corrupt: it holds {real} of {declared} declared frames, "
            f"this segment needs frames {frames.start}-{frames.stop - 1}: {path}"
        )


__all__ = ["DecodedFrames", "SegmentSamples", "decode_frames", "sample_segment"]
