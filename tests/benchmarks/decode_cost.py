"""Benchmark: what a segment costs to sample, and what `analyze` costs per clip, against decoding.

    .venv/bin/python -m tests.benchmarks.decode_cost [--minutes 60] [--clips 6] [--work DIR]

Prints, in one run:

1. **Sampling CPU per segment, long video against short.** A ``--piece``-second 1280x720
   30 fps clip encoded by libx264 with its defaults (preset medium: 250-frame groups of
   pictures, three B-frames) at ``--bitrate`` (8 Mbit/s) is stream-copied into a
   ``--minutes``-minute video and a 2-minute one of the same make. Each segment of the
   keyframe-aligned plan is sampled as the sample stage does (`sample_video_segment`, one
   decoder thread, T=16 frames and their successors, scaled to 640 px); the CPU time per
   segment of the long video (``--segments`` of its segments, spread over it) against the
   short one's (all of them). Target: at most 1.10x.
2. **Decode ratio per segment.** On the 2-minute video: the sampling CPU per segment against
   a full one-thread decode of the video shared out per segment, with boundaries on keyframes
   and with the fixed 15 s cut. Target: at most 0.75x on libx264 defaults.
3. **`analyze`'s marginal cost per clip.** ``--clips`` distinct 15 s 1280x720 talking heads
   (libx264 defaults) analysed by `VideoAnalyzer.analyze_many` in one batch; each clip's cost
   is the time between its result and the one before (the first, which carries the start-up,
   is left out), against a full OpenCV decode of the same clip (every frame grabbed, FFmpeg's
   threads), wall and CPU. Target: at most 1.2x.

Times are process CPU (`time.process_time`, every thread) unless said; on a shared host the
wall-clock ratios move with the other load, the CPU ratios much less. ``--work`` keeps the
generated videos between runs (they take minutes to encode on a small host).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FPS = 30
SIZE = (1280, 720)
T = 16
MAX_SIDE = 640
Result = TypeVar("Result")


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-y", "-nostdin", "-loglevel", "error", *args], check=True)


def cpu(run: Callable[[], Result]) -> tuple[float, Result]:
    began = time.process_time()
    result = run()
    return time.process_time() - began, result


def make_piece(work: Path, seconds: float, bitrate: str) -> Path:
    """A talking head re-encoded by libx264 with its defaults at ``bitrate``."""
    from tests.clips import write_h264

    piece = work / f"piece_{seconds:g}s_{bitrate}.mp4"
    if not piece.exists():
        source = write_h264(
            work / "piece_source.mp4", seconds=seconds, fps=FPS, size=SIZE, seed=3, crf=12
        )
        ffmpeg(
            "-i", str(source), "-an", "-c:v", "libx264", "-b:v", bitrate, "-maxrate", bitrate,
            "-bufsize", "16M", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(piece),
        )  # fmt: skip
    return piece


def stream_copy(piece: Path, minutes: float, seconds: float) -> Path:
    """``piece`` repeated by stream copy to ``minutes`` minutes."""
    video = piece.with_name(f"{piece.stem}_{minutes:g}min.mp4")
    if not video.exists():
        listing = piece.with_name(f"{video.stem}.txt")
        listing.write_text(f"file '{piece.name}'\n" * max(1, round(60 * minutes / seconds)))
        ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(video))
    return video


def sampling_cpu(video: Path, picks: int | None, keyframes: bool = True) -> tuple[float, int, int]:
    """Mean sampling CPU per segment over ``picks`` segments spread over the video (None:
    all); with the segment count and the frames decoded per segment."""
    from core.video.decode_limits import VideoLimits
    from core.video.probe import probe_video
    from core.video.segment_sampling import plan_video, sample_video_segment

    # A long video at 8 Mbit/s is past the default size and duration limits.
    limits = VideoLimits(max_bytes=2**40, max_duration_s=4 * 3600)
    info = probe_video(video, limits)
    plan = plan_video(info, 15.0, video if keyframes else None)
    count = len(plan) if picks is None else min(picks, len(plan))
    chosen = sorted({round(i * (len(plan) - 1) / max(1, count - 1)) for i in range(count)})
    total, decoded = 0.0, 0
    for index in chosen:
        seconds, sampled = cpu(
            lambda i=index: sample_video_segment(
                video, plan, i, T, info=info, limits=limits, max_side=MAX_SIDE, decode_threads=1
            )
        )
        total += seconds
        decoded += sampled.decoded_frames
    return total / len(chosen), len(plan), decoded // len(chosen)


def full_decode_cpu(video: Path) -> float:
    """CPU of decoding every frame on one thread (PyAV, no conversion)."""
    import av

    def run() -> int:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            return sum(1 for _ in container.decode(stream))

    return cpu(run)[0]


def opencv_decode(path: Path) -> tuple[float, float]:
    """Wall and CPU seconds to grab every frame with OpenCV (FFmpeg's own threads)."""
    import cv2

    wall, began = time.perf_counter(), time.process_time()
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    while capture.grab():
        pass
    capture.release()
    return time.perf_counter() - wall, time.process_time() - began


def make_clips(work: Path, count: int) -> list[Path]:
    from tests.clips import write_h264

    clips = []
    for i in range(count):
        clip = work / f"clip15_{i}.mp4"
        if not clip.exists():
            write_h264(clip, seconds=15, fps=FPS, size=SIZE, seed=40 + i)
        clips.append(clip)
    return clips


def analyze_per_clip(clips: list[Path]) -> None:
    from core.bundles.bundle import build_default_bundle
    from core.pipeline import PipelineConfig
    from core.video_analysis import VideoAnalyzer

    analyzer = VideoAnalyzer(build_default_bundle(), PipelineConfig())
    marks = [(time.perf_counter(), time.process_time())]
    stages: list[dict[str, float]] = []
    for result in analyzer.analyze_many(clips):
        assert result.status == "done", result.error
        marks.append((time.perf_counter(), time.process_time()))
        stages.append(result.segments[0].timings)
    print(f"  {'clip':<14} {'analyze s':>9} {'decode s':>8} {'wall x':>7} {'CPU s':>6} "
          f"{'decode CPU':>10} {'CPU x':>6}")  # fmt: skip
    walls, cpus = [], []
    totals = [0.0, 0.0, 0.0, 0.0]  # analyze wall, decode wall, analyze CPU, decode CPU
    for i in range(2, len(marks)):  # the first result carries the start-up
        wall = marks[i][0] - marks[i - 1][0]
        used = marks[i][1] - marks[i - 1][1]
        decode_wall, decode_cpu = opencv_decode(clips[i - 1])
        for k, v in enumerate((wall, decode_wall, used, decode_cpu)):
            totals[k] += v
        walls.append(wall / decode_wall)
        cpus.append(used / decode_cpu)
        print(
            f"  {clips[i - 1].name:<14} {wall:9.3f} {decode_wall:8.3f} {walls[-1]:7.2f} "
            f"{used:6.3f} {decode_cpu:10.3f} {cpus[-1]:6.2f}"
        )
    print(
        f"  median: wall {statistics.median(walls):.2f}x, CPU {statistics.median(cpus):.2f}x "
        "a full OpenCV decode (target <= 1.2)"
    )
    # The next clip's first segment decodes during this one's last: per-clip figures trade
    # work across neighbours, their sum does not.
    print(f"  all {len(walls)} clips together: wall {totals[0] / totals[1]:.2f}x, "
          f"CPU {totals[2] / totals[3]:.2f}x")  # fmt: skip
    keys = [k for k in stages[-1] if k != "total"]
    means = {k: statistics.mean(s.get(k, 0.0) for s in stages[1:]) for k in keys}
    print("  stage seconds per clip (wall, sampling in the decode thread): " + ", ".join(
        f"{k} {v:.3f}" for k, v in means.items()
    ))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the long video")
    parser.add_argument("--piece", type=float, default=20.0, help="seconds of the repeated clip")
    parser.add_argument("--bitrate", default="8M")
    parser.add_argument("--segments", type=int, default=12, help="long-video segments sampled")
    parser.add_argument("--clips", type=int, default=6, help="distinct 15 s clips to analyze")
    parser.add_argument("--work", type=Path, default=None, help="keep generated videos here")
    parser.add_argument("--skip", default="", help="parts to skip, e.g. 3 or 1,2")
    args = parser.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        if not {"1", "2"} <= skip:
            piece = make_piece(work, args.piece, args.bitrate)
            short = stream_copy(piece, 2.0, args.piece)
            long = stream_copy(piece, args.minutes, args.piece)
            mb = long.stat().st_size / 1e6
            print(
                f"videos: {args.piece:g} s 1280x720 libx264 (medium, {args.bitrate}bit/s) "
                f"stream-copied to {args.minutes:g} min ({mb:.0f} MB) and 2 min"
            )
            short_s, short_n, short_decoded = sampling_cpu(short, None)
        if "1" not in skip:
            long_s, long_n, long_decoded = sampling_cpu(long, args.segments)
            print("1. sampling CPU per segment (one decoder thread):")
            print(f"  {args.minutes:g} min ({args.segments} of {long_n} segments): "
                  f"{long_s:.3f} s, {long_decoded} frames decoded")  # fmt: skip
            print(f"  2 min (all {short_n} segments): {short_s:.3f} s, "
                  f"{short_decoded} frames decoded")  # fmt: skip
            print(f"  ratio long/short: {long_s / short_s:.2f} (target <= 1.10)")
        if "2" not in skip:
            full = full_decode_cpu(short) / short_n
            fixed_s, _, fixed_decoded = sampling_cpu(short, None, keyframes=False)
            print("2. decode ratio per segment, 2 min video (one thread):")
            print(f"  full decode's share per segment: {full:.3f} s")
            print(f"  boundaries on keyframes: {short_s:.3f} s ({short_decoded} frames), "
                  f"ratio {short_s / full:.2f} (target <= 0.75)")  # fmt: skip
            print(f"  fixed 15 s boundaries:   {fixed_s:.3f} s ({fixed_decoded} frames), "
                  f"ratio {fixed_s / full:.2f}")  # fmt: skip
        if "3" not in skip:
            print(f"3. analyze, marginal cost per 15 s 1280x720 clip ({args.clips} clips):")
            analyze_per_clip(make_clips(work, args.clips))
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
