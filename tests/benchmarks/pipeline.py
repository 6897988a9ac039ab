"""Benchmark: the in-process pipeline against plain OpenCV decoding of the same clip.

    python -m tests.benchmarks.pipeline [--clips 4] [--seconds 15] [--width 1280 --height 720]
                                        [--detect-width 256]

Writes a talking-head H.264 clip (the size of a First Impressions clip), then measures in one
run: decoding every frame with OpenCV (the baseline), each pipeline stage, and the whole
pipeline per clip, both one clip at a time and over a batch with decode prefetch (what
`oceanstream analyze` does). Prints the figures and the ratio whole/decode.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.video_analysis import SegmentedResult

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def decode_all(path: Path) -> tuple[float, int]:
    """Seconds to decode every frame with `grab` (decode without colour conversion)."""
    import cv2

    start = time.perf_counter()
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.grab():
        count += 1
    capture.release()
    return time.perf_counter() - start, count


def stage_names(result: SegmentedResult) -> list[str]:
    names = dict.fromkeys(n for s in result.segments for n in s.timings if n != "total")
    return list(names)


def stage_seconds(result: SegmentedResult, stage: str) -> float:
    return sum(s.timings.get(stage, 0.0) for s in result.segments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="clips in the batch run")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the per-clip runs")
    parser.add_argument(
        "--detect-width", type=int, default=None, help="face detection width (default: 256)"
    )
    args = parser.parse_args()

    from core.bundles.bundle import build_default_bundle
    from core.pipeline import PipelineConfig
    from core.video_analysis import VideoAnalyzer
    from tests.clips import write_h264

    with tempfile.TemporaryDirectory() as tmp:
        clip = write_h264(
            Path(tmp) / "clip.mp4",
            seconds=args.seconds,
            fps=args.fps,
            size=(args.width, args.height),
        )
        mb = clip.stat().st_size / 1e6
        print(f"clip: {args.seconds:.0f} s {args.width}x{args.height} H.264, {mb:.1f} MB")
        config = PipelineConfig()
        if args.detect_width is not None:
            config = dataclasses.replace(config, detect_width=args.detect_width)
        print(f"faces detected at {config.detect_width} px wide")
        analyzer = VideoAnalyzer(build_default_bundle(), config)
        analyzer.analyze(clip)  # warm-up: builds the compiled functions

        decode = [decode_all(clip) for _ in range(args.repeats)]
        decode_s = statistics.median(s for s, _ in decode)
        print(f"decode only (OpenCV, {decode[0][1]} frames): {decode_s:.3f} s/clip")

        singles = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = analyzer.analyze(clip)
            singles.append((time.perf_counter() - start, result))
        single_s = statistics.median(s for s, _ in singles)
        last = singles[-1][1]
        faces = sum(s.faces_found for s in last.segments)
        frames = sum(s.frames for s in last.segments)
        print(f"status {last.status}, {len(last.segments)} segment(s), faces {faces}/{frames}")
        print(f"stage costs (one clip, median of {args.repeats}, summed over its segments):")
        for stage in stage_names(last):
            seconds = statistics.median(stage_seconds(r, stage) for _, r in singles)
            print(f"  {stage:<10} {seconds:.3f} s")
        print(
            f"whole pipeline, one clip at a time: {single_s:.3f} s/clip"
            f"  ratio to decode {single_s / decode_s:.2f}x"
        )

        start = time.perf_counter()
        results = list(analyzer.analyze_many([clip] * args.clips))
        batch_s = (time.perf_counter() - start) / args.clips
        assert all(r.status == "done" for r in results)
        print(
            f"whole pipeline, batch of {args.clips} with decode prefetch: {batch_s:.3f} s/clip"
            f"  ratio to decode {batch_s / decode_s:.2f}x"
        )


if __name__ == "__main__":
    main()
