"""Benchmark: decoding a segment's samples selectively (PyAV) against a full decode.

Writes a 15 s 720p x264 clip with B-frames (libx264 defaults: medium, CRF 23, three B-frames),
samples T=16 frames and their successors from it, and prints, on one decoder thread:

* frames decoded of the total, and how many of the 2T kept frames are bit-identical to a full
  PyAV decode and to OpenCV's frames (today's path, `core.video.probe.sample_frames`);
* CPU time (process time) of the selective read, of a full PyAV decode converting only the
  same frames, and of `sample_frames` (OpenCV), best of ``--repeat``; the ratio selective /
  full is the figure of merit (target at most 0.75).

``--minutes M`` also writes an M-minute clip (preset veryfast), cuts it into 15 s segments
and prints the same per segment, each segment seeking to its own window.

    .venv/bin/python -m tests.benchmarks.selective_decode [--minutes 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import av
import numpy as np

from core.video.probe import VideoInfo, probe_video, sample_frames
from core.video.segments import plan_segment_samples, plan_segments, segment_frame_ranges
from core.video.selective_decode import sample_segment
from tests import clips

T = 16
Result = TypeVar("Result")


def cpu(run: Callable[[], Result], repeat: int) -> tuple[float, Result]:
    """Best process time of ``repeat`` runs, and the last run's result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        began = time.process_time()
        result = run()
        best = min(best, time.process_time() - began)
    assert result is not None
    return best, result


def full_decode(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Decode every frame on one thread, converting the wanted ones to RGB."""
    kept = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(container.decode(stream)):
            if index in wanted:
                kept[index] = frame.to_ndarray(format="rgb24")
    return kept


def one_segment(path: Path, info: VideoInfo, repeat: int) -> None:
    frames = range(info.frame_count)
    samples = plan_segment_samples(frames, info.frame_count, T)
    wanted = set(samples.wanted)
    selective_s, sampled = cpu(lambda: sample_segment(path, frames, T, info=info), repeat)
    full_s, reference = cpu(lambda: full_decode(path, wanted), repeat)
    opencv_s, today = cpu(lambda: sample_frames(path, T, info=info, decode_threads=1), repeat)
    pairs = [
        *zip(samples.indices, sampled.frames, strict=True),
        *zip(samples.successors, sampled.successors, strict=True),
    ]
    identical = sum(np.array_equal(frame, reference[int(i)]) for i, frame in pairs)
    mine = np.concatenate([sampled.frames, sampled.successors]).astype(np.int16)
    cv = np.concatenate([today.frames, today.successors]).astype(np.int16)
    same_as_cv = sum(np.array_equal(a, b) for a, b in zip(mine, cv, strict=True))
    print(f"{info.duration_s:g} s {info.width}x{info.height} at {info.fps:g} fps, T={T}:")
    print(f"  frames decoded      : {sampled.decoded_frames} of {info.frame_count}")
    print(f"  bit-identical       : {identical} of {len(pairs)} (to a full PyAV decode)")
    print(
        f"  same as OpenCV      : {same_as_cv} of {len(pairs)} "
        f"(max difference {int(np.abs(mine - cv).max())})"
    )
    print(f"  selective (PyAV)    : {selective_s:6.3f} s CPU")
    print(f"  full decode (PyAV)  : {full_s:6.3f} s CPU")
    print(f"  full decode (OpenCV): {opencv_s:6.3f} s CPU (sample_frames, today's path)")
    print(f"  ratio selective/full: {selective_s / full_s:.2f} (target <= 0.75)")
    print(f"  ratio selective/OpenCV: {selective_s / opencv_s:.2f}")


def segmented(path: Path, info: VideoInfo, repeat: int) -> None:
    segments = plan_segments(info.duration_s)
    ranges = segment_frame_ranges(segments, info.fps, info.frame_count)
    wanted = set().union(*(plan_segment_samples(r, info.frame_count, T).wanted for r in ranges))
    decoded = 0
    selective_s = 0.0
    for frames in ranges:
        seconds, sampled = cpu(lambda f=frames: sample_segment(path, f, T, info=info), repeat)
        selective_s += seconds
        decoded += sampled.decoded_frames
    full_s, _ = cpu(lambda: full_decode(path, wanted), 1)
    n = len(ranges)
    print(f"{info.duration_s:g} s cut into {n} segments:")
    print(f"  frames decoded      : {decoded} of {info.frame_count}")
    print(f"  selective per segment : {selective_s / n:6.3f} s CPU")
    print(f"  full decode per segment: {full_s / n:6.3f} s CPU (the whole video / {n})")
    print(f"  ratio selective/full: {selective_s / full_s:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--minutes", type=float, default=0.0, help="also a long clip, cut")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    size = (1280, 720)
    with tempfile.TemporaryDirectory() as folder:
        short = clips.write_h264(
            Path(folder) / "short.mp4", seconds=args.seconds, fps=args.fps, size=size
        )
        one_segment(short, probe_video(short), args.repeat)
        if args.minutes > 0:
            long = clips.write_h264(
                Path(folder) / "long.mp4",
                seconds=60 * args.minutes,
                fps=args.fps,
                size=size,
                preset="veryfast",
            )
            segmented(long, probe_video(long), args.repeat)


if __name__ == "__main__":
    main()
