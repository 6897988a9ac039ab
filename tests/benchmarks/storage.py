"""Bytes read from storage per segment, against the file size / segments, for a few lengths.

    python -m tests.benchmarks.storage [--minutes 2 10 30] [--bitrate 2M]

Each video is one generated 10 s clip (320x240, keyframes every 2 s, constant bit rate)
repeated by stream copy. It is stored in a local folder and in a bucket of moto's standalone
S3 server (started here, over HTTP); ingest's probe and the sampling of every fourth segment
are run on each, and the bytes they fetched are printed. A ratio near 1 means a segment reads
its share of the file; one that grows with the length means it reads more than its window.
Also printed: the CPU time per sampled segment (stamp check, ranged open, decode), as a ratio
to the first length's, and the CPU time of hashing the whole stored copy once
(`local_copy(uri, sha256=...)`), which every segment paid before content was hashed once.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

from core.storage.store import ArtifactStore
from core.video.decode_limits import VideoLimits
from core.video.files import file_sha256
from core.video.probe import probe_video
from core.video.segment_sampling import plan_video, sample_video_segment
from tests.support.long_videos import write_long_video
from tests.support.s3 import running_s3_server

#: The workers' default limits (a 3-hour video).
LIMITS = VideoLimits(max_duration_s=3 * 60 * 60)


@dataclass
class Measured:
    probe_bytes: int
    mean_share: float  # bytes read per segment / (file size / segments), mean
    max_share: float
    sample_cpu_s: float  # CPU per sampled segment: stamp check, ranged open, decode
    hash_cpu_s: float  # CPU of hashing the whole stored file: what each segment paid before


def measure(store: ArtifactStore, video: Path) -> Measured:
    """Ingest's probe and every fourth segment's sampling of `video` in `store`."""
    uri = store.put_file(video, f"videos/{video.name}")
    stamp = store.stamp(uri)
    with store.open_video(uri, stamp) as stored:
        info = probe_video(stored, LIMITS)
        probe = stored.bytes_read
    plan = plan_video(info, 15.0)
    share = stamp.size / len(plan)
    ratios, cpu = [], []
    for index in range(0, len(plan), 4):
        start = time.process_time()
        with store.open_video(uri, stamp) as stored:
            sample_video_segment(stored, plan, index, 16, info=info, limits=LIMITS)
            ratios.append(stored.bytes_read / share)
        cpu.append(time.process_time() - start)
    start = time.process_time()
    with store.local_copy(uri, sha256=file_sha256(video)):
        pass
    hashed = time.process_time() - start
    return Measured(probe, sum(ratios) / len(ratios), max(ratios), sum(cpu) / len(cpu), hashed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 10, 30])
    parser.add_argument("--bitrate", default="2M")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="storage-bench-") as tmp:
        folder = Path(tmp)
        with running_s3_server(folder) as server, mock.patch.dict(os.environ, server.env):
            bucket = server.new_bucket()
            stores = {
                "local": ArtifactStore(f"file://{folder / 'store'}"),
                "s3": ArtifactStore(f"s3://{bucket}/bench"),
            }
            print(
                "minutes  size_MB  segments  store  probe_KB  segment/share(mean)  (max)  "
                "sample_cpu_s  vs_first  old_hash_cpu_s"
            )
            first: dict[str, float] = {}
            for minutes in args.minutes:
                video = write_long_video(
                    folder / f"v{minutes:g}", 60 * minutes, bitrate=args.bitrate
                )
                size = video.stat().st_size
                for name, store in stores.items():
                    got = measure(store, video)
                    base = first.setdefault(name, got.sample_cpu_s)
                    segments = round(60 * minutes / 15)
                    print(
                        f"{minutes:7g}  {size / 1e6:7.1f}  {segments:8d}  {name:5s}  "
                        f"{got.probe_bytes / 1024:8.0f}  {got.mean_share:19.2f}  "
                        f"{got.max_share:5.2f}  {got.sample_cpu_s:12.3f}  "
                        f"{got.sample_cpu_s / base:8.2f}  {got.hash_cpu_s:14.3f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
