"""Frame indices from presentation timestamps, and seeking to a frame, on a PyAV stream.

Frame ``i`` is the frame presented at ``start_time + i / rate`` (the stream's own rate), which
is the i-th frame a sequential decode outputs on a constant-rate stream. `FrameGrid` maps
timestamps to those indices and back; a timestamp that is missing or off the grid, or frames
with gaps between them, raise `OffGrid`: the stream has a variable frame rate (or is broken),
and `core.video.selective_decode` decodes it sequentially instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from fractions import Fraction

import av

# A packet whose timestamp is further than this (in frames) from the frame grid is off it.
_GRID_TOLERANCE = Fraction(1, 4)
# Seeks that land after the wanted frame step back by this much more each time (seconds).
_SEEK_BACKOFF_S = (1, 4, 16)


class OffGrid(Exception):
    """The stream's timestamps do not index its frames; decode it sequentially instead."""


class FrameGrid:
    """Maps presentation timestamps to frame indices on a constant-rate stream."""

    def __init__(self, origin: int, time_base: Fraction, rate: Fraction) -> None:
        self._origin = origin
        self._frames_per_tick = time_base * rate  # frames per timestamp unit
        self.rate = rate

    def index(self, pts: int | None) -> int:
        if pts is None:
            raise OffGrid("a packet has no timestamp")
        position = (pts - self._origin) * self._frames_per_tick
        index = round(position)
        if abs(position - index) > _GRID_TOLERANCE:
            raise OffGrid(f"timestamp {pts} is off the {float(self.rate):g} fps grid")
        return index

    def pts(self, index: int) -> int:
        """The timestamp of frame ``index`` (rounded down onto the stream's time base)."""
        return self._origin + int(index / self._frames_per_tick)


def stream_grid(stream: av.VideoStream) -> FrameGrid | None:
    """The stream's frame grid, or None where it declares no start, time base or rate."""
    rate = stream.guessed_rate or stream.average_rate
    if stream.start_time is None or stream.time_base is None or not rate:
        return None
    return FrameGrid(stream.start_time, Fraction(stream.time_base), Fraction(rate))


def check_contiguous(seen: set[int], up_to: int | None) -> None:
    """Frames on a constant-rate grid leave no gaps; a stream that drops frames does."""
    if not seen:
        return
    first = min(seen)
    last = max(seen) if up_to is None else up_to
    if sum(1 for i in seen if i <= last) != last - first + 1:
        raise OffGrid(f"frames {first}-{last} have gaps in their timestamps")


def seek_packets(
    container: av.container.InputContainer, stream: av.VideoStream, grid: FrameGrid, first: int
) -> Iterator[av.Packet]:
    """Packets from the keyframe at or before frame ``first``, in decode order.

    Demuxers seek on decode or presentation time depending on the format; a seek that lands
    on a keyframe presented after ``first`` steps further back until it does not.
    """
    if first == 0:
        return container.demux(stream)
    target = grid.pts(first)
    for back_s in (0, *_SEEK_BACKOFF_S):
        pts = max(grid.pts(first - int(back_s * grid.rate)), grid.pts(0))
        container.seek(pts, stream=stream, backward=True, any_frame=False)
        packets = container.demux(stream)
        head = next((p for p in packets if p.is_keyframe or p.size == 0), None)
        if head is None or head.size == 0:
            break
        if head.pts is not None and head.pts <= target:
            return itertools.chain([head], packets)
    container.seek(grid.pts(0), stream=stream, backward=True, any_frame=False)
    return container.demux(stream)
