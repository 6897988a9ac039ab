"""Where a video's keyframes lie near given moments, from its container index.

A segment boundary on a keyframe lets each segment's decoding start at its own first frame,
instead of decoding the reference frames from the keyframe before it (most of a group of
pictures on long-GOP content). The keyframes are found the way a player finds them: seek to
the moment, backward and forward, and read the timestamp of the packet the demuxer lands on.
Each look-up reads one packet's header and bytes, never decodes, and never walks the file.

Only an index read with the header counts (MP4 and MOV, the formats of phones and cameras, and
AVI): a container without one (MPEG-TS, a raw elementary stream) answers nothing, and so does
Matroska/WebM, whose cues are read on the first seek if they exist at all. Without cues (a
browser's recording, anything written through a pipe) FFmpeg finds a keyframe by reading the
clusters up to it, a read of the whole file, so those keep the boundaries of the fixed plan.
So does any stream whose timestamps do not sit on its frame grid.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import av

from core.video.frame_grid import FrameGrid, OffGrid, stream_grid

log = logging.getLogger(__name__)


def keyframes_near(
    source: str | Path | BinaryIO | io.BufferedIOBase, marks: Sequence[float], reach_s: float
) -> list[tuple[float, ...]]:
    """For each of ``marks`` (seconds from the stream's first frame), the keyframes nearest it.

    The container's index, as read with its header, must reach within ``reach_s`` of the
    last mark; otherwise nothing is looked up (a seek past an index reads the file to get
    there).

    Each entry holds the presentation times (seconds, on the stream's frame grid) of the
    keyframe at or before the mark and of the one at or after it, where the index holds
    them; an empty tuple where it holds none. A video that cannot be opened or read, or whose
    container keeps no index, gives empty tuples throughout: finding keyframes is an
    optimisation, and the decoder reports a broken file on its own.
    """
    none: list[tuple[float, ...]] = [() for _ in marks]
    if not marks:
        return none
    try:
        with av.open(source if not isinstance(source, Path) else str(source), mode="r") as c:
            if not c.streams.video:
                return none
            stream = c.streams.video[0]
            grid = stream_grid(stream)
            if grid is None or not _indexed_to(stream, max(marks) - reach_s):
                return none
            return [_near(c, stream, grid, mark) for mark in marks]
    except (av.FFmpegError, OffGrid, OSError) as error:
        log.info("keyframe look-up gave up (%s); segments keep fixed boundaries", error)
        return none


def _indexed_to(stream: av.VideoStream, seconds: float) -> bool:
    """Whether the stream's index, as the header gave it, runs to ``seconds``."""
    entries = stream.index_entries
    if len(entries) == 0 or stream.time_base is None:
        return False
    origin = stream.start_time or 0
    return float((entries[len(entries) - 1].timestamp - origin) * stream.time_base) >= seconds


def _near(
    container: av.container.InputContainer, stream: av.VideoStream, grid: FrameGrid, mark: float
) -> tuple[float, ...]:
    target = grid.pts(round(mark * float(grid.rate)))
    found = set()
    for backward in (True, False):
        try:
            container.seek(target, stream=stream, backward=backward, any_frame=False)
            packet = next(iter(container.demux(stream)), None)
        except av.FFmpegError:
            continue  # nothing at or after the mark: one keyframe for the whole file
        if packet is None or packet.size == 0 or not packet.is_keyframe:
            continue
        found.add(grid.index(packet.pts) / float(grid.rate))
    return tuple(sorted(found))


__all__ = ["keyframes_near"]
