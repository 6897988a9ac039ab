"""A live source cut into segments as its frames arrive: what `oceanstream watch` reads.

A live source is a video whose segments arrive over time. Its frames are placed on the
video's timeline (seconds from the start of the watch) by their timestamps, and cut into the
same windows a file is: window `k` covers `[k * S, (k + 1) * S)` for `S` =
`segment_seconds`, and frame `i` (shown at `i / fps`) belongs to the window holding that
moment (`core.video.segments.first_frame_at`). A window's frame count is known from the frame rate
before its frames arrive, so its T samples and their successors are planned at once, exactly
as for a file (`core.video.segments.plan_segment_samples`), and only those frames are kept (scaled
down to `max_side`): at most 2T frames of one window are held in memory, whatever the frame
rate or window length.

A window is complete when a frame of a later window arrives: the first frame of the next
window is the successor of its last sample, as in a file. When the source ends (or drops, or
the watch is stopped) the window in progress is cut short: its last frame is its own
successor, as at the end of a file; a window cut short to less than half its length is
dropped, a longer one is analysed as a partial segment whose T samples are taken from the
frames kept in it (the nearest planned sample for each slot of a plan over its own length).

`SegmentCutter` does the cutting, with no I/O; `LiveSource` opens and reads a source with
PyAV (FFmpeg), with timeouts, and says whether it is finite (a file, a finished playlist)
or may be reopened when it drops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import numpy as np

from core.video.probe import downscale
from core.video.segments import first_frame_at, plan_segment_samples

if TYPE_CHECKING:
    import av

#: Frames of one window, planned and kept; slots missing at close take their nearest kept one.
_HUGE = 1 << 62


@dataclass(frozen=True)
class LiveSegment:
    """One window of a live source, cut: its place on the timeline and its sampled frames."""

    window: int  # the window's number on the timeline grid
    start_s: float
    end_s: float
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    successors: np.ndarray  # [T, H, W, 3]
    indices: np.ndarray  # [T] frame indices on the timeline
    partial: bool  # cut short by the end of the source, a drop or a stop
    closed_at: float  # time.time() when its last frame arrived


@dataclass
class _Window:
    number: int
    frames: range  # the window's frames on the timeline
    indices: np.ndarray  # [T] planned samples
    successors: np.ndarray  # [T] each sample's next frame
    kept: dict[int, np.ndarray] = field(default_factory=dict)
    first: int | None = None
    last: int | None = None
    seen: int = 0

    @property
    def wanted(self) -> frozenset[int]:
        return frozenset(self.indices.tolist()) | frozenset(self.successors.tolist())


class SegmentCutter:
    """Frames in (timeline position, a way to convert the frame), finished segments out.

    `add` converts a frame to RGB only when a sample needs it. Positions are seconds on the
    video's timeline; a frame before the current window's start (a timestamp going back) is
    ignored.
    """

    def __init__(
        self,
        segment_seconds: float,
        fps: float,
        num_frames: int,
        max_side: int | None = None,
    ) -> None:
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        if not segment_seconds * fps >= 1:
            raise ValueError(
                f"a window of {segment_seconds:g} s at {fps:g} fps holds no frame; "
                "use longer segments"
            )
        self.segment_seconds = float(segment_seconds)
        self.fps = float(fps)
        self.num_frames = int(num_frames)
        self.max_side = max_side
        self._window: _Window | None = None

    @property
    def holding(self) -> int:
        """Frames held now (at most 2T)."""
        return 0 if self._window is None else len(self._window.kept)

    def frame_index(self, position_s: float) -> int:
        return max(0, round(position_s * self.fps))

    def window_of(self, index: int) -> int:
        """The window holding frame `index`."""
        k = int(index // (self.segment_seconds * self.fps))
        while first_frame_at((k + 1) * self.segment_seconds, self.fps) <= index:
            k += 1
        while k > 0 and first_frame_at(k * self.segment_seconds, self.fps) > index:
            k -= 1
        return k

    def add(self, position_s: float, convert: Callable[[], np.ndarray]) -> list[LiveSegment]:
        """Place one frame; the segments it completed (none, or the window before it)."""
        index = self.frame_index(position_s)
        done: list[LiveSegment] = []
        image: np.ndarray | None = None
        window = self._window
        if window is not None and index >= window.frames.stop:
            if index == window.frames.stop and index in window.wanted:
                image = self._scaled(convert())
                window.kept[index] = image
            segment = self._close(window)
            if segment is not None:
                done.append(segment)
            window = self._window = None
        if window is None:
            window = self._window = self._open(self.window_of(index))
        if index < window.frames.start or (window.last is not None and index <= window.last):
            return done  # a timestamp that went back, or a repeated one
        window.first = index if window.first is None else window.first
        window.last = index
        window.seen += 1
        if index in window.wanted:
            window.kept[index] = image if image is not None else self._scaled(convert())
        return done

    def flush(self) -> LiveSegment | None:
        """Cut the window in progress short (the source ended, dropped or the watch stops)."""
        window, self._window = self._window, None
        if window is None:
            return None
        return self._close(window)

    def next_window_start(self, position_s: float) -> float:
        """The start of the first window at or after `position_s`: where a source that comes
        back after a drop resumes, so that its first window is whole."""
        k = math.ceil(position_s / self.segment_seconds - 1e-9)
        return k * self.segment_seconds

    def _open(self, number: int) -> _Window:
        start = first_frame_at(number * self.segment_seconds, self.fps)
        stop = first_frame_at((number + 1) * self.segment_seconds, self.fps)
        samples = plan_segment_samples(range(start, stop), _HUGE, self.num_frames)
        return _Window(number, samples.frames, samples.indices, samples.successors)

    def _scaled(self, image: np.ndarray) -> np.ndarray:
        if self.max_side is None:
            return image
        return downscale(image[None], self.max_side)[0]

    def _close(self, window: _Window) -> LiveSegment | None:
        if window.first is None or window.last is None:
            return None
        length = len(window.frames)
        # Whole: from its first frame to (about) its last; a few frames the source dropped
        # take their nearest kept frame.
        whole = window.first == window.frames.start and window.last >= window.frames.stop - 1 - (
            length // 10
        )
        if whole:
            indices, successors = window.indices, window.successors
            partial = False
            end = window.frames.stop
        else:
            span = range(window.first, window.last + 1)
            if len(span) * 2 < length:
                return None
            indices, successors = self._partial_plan(window, span)
            partial = True
            end = window.last + 1
        frames = [_nearest(window.kept, int(i), window.first) for i in indices]
        # The frame after the last one: the next window's first, or, where the source ended,
        # the last frame itself (as at the end of a file).
        nexts = [
            window.kept.get(int(s))
            if int(s) in window.kept
            else _nearest(window.kept, int(i), window.first)
            for i, s in zip(indices, successors, strict=True)
        ]
        return LiveSegment(
            window=window.number,
            start_s=window.first / self.fps if partial else window.number * self.segment_seconds,
            end_s=end / self.fps if partial else (window.number + 1) * self.segment_seconds,
            frames=_stack(frames),
            successors=_stack([f for f in nexts if f is not None]),
            indices=np.asarray(indices, dtype=np.int64),
            partial=partial,
            closed_at=time.time(),
        )

    def _partial_plan(self, window: _Window, span: range) -> tuple[np.ndarray, np.ndarray]:
        """T slots over `span`, each the nearest planned sample kept in it, with its successor
        (itself for the last frame of the span)."""
        wanted = plan_segment_samples(span, span.stop, self.num_frames).indices
        planned = [int(i) for i in window.indices if span.start <= i <= span.stop - 1]
        planned = [i for i in planned if i in window.kept] or sorted(
            i for i in window.kept if span.start <= i < span.stop
        )
        chosen = np.array([min(planned, key=lambda p: (abs(p - w), p)) for w in wanted])
        nexts = np.minimum(chosen + 1, span.stop - 1)
        return chosen, nexts


def _nearest(kept: dict[int, np.ndarray], index: int, first: int) -> np.ndarray:
    """The kept frame at `index`, else the nearest kept one before it (a frame the source
    dropped), else the nearest after it."""
    if index in kept:
        return kept[index]
    before = [i for i in kept if first <= i < index]
    if before:
        return kept[max(before)]
    return kept[min(kept, key=lambda i: abs(i - index))]


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    from core.video.probe import stack_frames

    order = np.arange(len(frames))
    return stack_frames(dict(enumerate(frames)), order, frames[0].shape)


# --- reading a source -------------------------------------------------------------------


@dataclass(frozen=True)
class SourceOptions:
    """How a source is opened and read.

    `open_timeout_s` bounds opening (connecting and reading the first packets to find the
    streams), `read_timeout_s` a read that gets no data; past either the source counts as
    dropped. `ffmpeg` options go to FFmpeg as they are (e.g. `rtsp_transport=tcp`).
    """

    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    ffmpeg: dict[str, str] = field(default_factory=dict)


class SourceError(Exception):
    """The source cannot be opened or read (its message says why, in FFmpeg's words)."""


@dataclass
class LiveSource:
    """One connection to a source: its frames with their positions from its first frame.

    `finite` says the source has an end of its own (a file, a finished playlist: FFmpeg knows
    its duration), so that reaching it ends the watch instead of a reconnect.
    """

    url: str
    container: av.container.InputContainer
    stream: av.VideoStream
    fps: float
    finite: bool

    def frames(self, stop: Callable[[], bool]) -> Iterator[tuple[float, av.VideoFrame]]:
        """(seconds since this connection's first frame, frame) until the source ends, drops
        (`SourceError`) or `stop()` is true."""
        import av

        first: int | None = None
        time_base = self.stream.time_base or Fraction(1, 90000)
        count = 0
        try:
            for frame in self.container.decode(self.stream):
                if stop():
                    return
                if frame.pts is None:
                    offset = count / self.fps
                else:
                    first = frame.pts if first is None else first
                    offset = float((frame.pts - first) * time_base)
                count += 1
                yield offset, frame
        except av.error.EOFError:
            return
        except av.FFmpegError as exc:
            # The frames the decoder still holds (it reorders) came before the drop: keep them.
            for frame in _drained(self.stream):
                if frame.pts is not None and first is not None:
                    yield float((frame.pts - first) * time_base), frame
            raise SourceError(_reason(exc)) from exc

    def close(self) -> None:
        self.container.close()


def _drained(stream: av.VideoStream) -> list[av.VideoFrame]:
    import av

    try:
        return list(stream.codec_context.decode(None))
    except av.FFmpegError:
        return []


def open_source(url: str, options: SourceOptions | None = None) -> LiveSource:
    """Open `url` (anything FFmpeg opens: rtsp, rtmp, srt, udp, tcp, http(s) and HLS, a
    device, a file); `SourceError` when it cannot be opened or holds no video."""
    import av

    options = options or SourceOptions()
    ffmpeg = {"analyzeduration": "2000000", "probesize": "2000000", **options.ffmpeg}
    try:
        container = av.open(
            url,
            mode="r",
            options=ffmpeg,
            timeout=(options.open_timeout_s, options.read_timeout_s),
        )
    except av.FFmpegError as exc:
        raise SourceError(_reason(exc)) from exc
    if not container.streams.video:
        container.close()
        raise SourceError("no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or float(rate) <= 0:
        container.close()
        raise SourceError("the video stream declares no frame rate")
    finite = container.duration is not None and container.duration > 0
    return LiveSource(url, container, stream, float(rate), finite)


def _reason(exc: Exception) -> str:
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__)


def backoff_delays(first_s: float = 0.5, most_s: float = 8.0) -> Iterator[float]:
    """0.5, 1, 2, 4, 8, 8, ... seconds: the pauses between tries to reopen a source."""
    delay = first_s
    while True:
        yield delay
        delay = min(most_s, delay * 2)
