"""Bytes read from storage per segment, against the file size / segments, for a few lengths.

    python -m tests.benchmarks.storage [--minutes 2 8 20] [--bitrate 2M]

Each video is one generated 10 s clip (320x240, keyframes every 2 s, constant bit rate)
repeated by stream copy. It is stored in a local folder and in a bucket of moto's standalone
S3 server (started here, over HTTP); ingest's probe and the sampling of every fourth segment
are run on each, and the bytes they fetched are printed. A ratio near 1 means a segment reads
its share of the file; one that grows with the length means it reads more than its window.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from unittest import mock

from core.decode_limits import VideoLimits
from core.segment_sampling import plan_video, sample_video_segment
from core.storage import ArtifactStore
from core.video import probe_video
from tests.support.long_videos import write_long_video
from tests.support.s3 import running_s3_server

#: The workers' default limits (a 3-hour video).
LIMITS = VideoLimits(max_duration_s=3 * 60 * 60)


def measure(store: ArtifactStore, video: Path) -> tuple[int, float, float]:
    """(probe bytes, mean and max segment bytes / share) of `video` in `store`."""
    uri = store.put_file(video, f"videos/{video.name}")
    stamp = store.stamp(uri)
    with store.open_video(uri, stamp) as stored:
        info = probe_video(stored, LIMITS)
        probe = stored.bytes_read
    plan = plan_video(info, 15.0)
    share = stamp.size / len(plan)
    ratios = []
    for index in range(0, len(plan), 4):
        with store.open_video(uri, stamp) as stored:
            sample_video_segment(stored, plan, index, 16, info=info, limits=LIMITS)
            ratios.append(stored.bytes_read / share)
    return probe, sum(ratios) / len(ratios), max(ratios)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[2, 8, 20])
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
            print("minutes  size_MB  segments  store  probe_KB  segment/share(mean)  (max)")
            for minutes in args.minutes:
                video = write_long_video(
                    folder / f"v{minutes:g}", 60 * minutes, bitrate=args.bitrate
                )
                size = video.stat().st_size
                for name, store in stores.items():
                    probe, mean, most = measure(store, video)
                    segments = round(60 * minutes / 15)
                    print(
                        f"{minutes:7g}  {size / 1e6:7.1f}  {segments:8d}  {name:5s}  "
                        f"{probe / 1024:8.0f}  {mean:19.2f}  {most:5.2f}"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
