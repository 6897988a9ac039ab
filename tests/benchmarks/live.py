"""Benchmark: live 720p streams watched with one worker per queue, in one run.

    python -m tests.benchmarks.live [--seconds 40] [--segment 5] [--most 4]

Writes one talking-head H.264 clip (1280x720, 30 fps) and serves it in real time (`ffmpeg
-re ... -c copy -f mpegts tcp://...?listen=1`), once per stream. One `oceanstream worker` per
queue (faces, flow, inference) runs on a fresh PostgreSQL database and its own redis-server,
started and warmed before any stream; each stream gets its own `oceanstream watch --json`.

Prints, for 1, 2, ... simultaneous streams (up to --most, stopping at the first that does not
keep up): the segment latency p50 and p99 (end of the segment's window in the stream to its
stored result) over every stream's segments, and whether the watchers kept up with real
time: a run keeps up when the p99 latency stays under two windows
(`workers.services.watch.BEHIND_WINDOWS`), that is, results do not pile up behind the stream.
The last line is the largest number of streams that kept up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from db.engine import normalize_url
from tests.support.postgres import POSTGRES_URL

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def watch_streams(cluster: object, clip: Path, count: int, seconds: float) -> list[float]:
    """Serve `count` streams of `clip` at once, watch each; every segment's latency."""
    from tests.support.services import ROOT
    from tests.support.streams import TcpStream

    streams = [TcpStream(clip).start() for _ in range(count)]
    latencies: list[float] = []
    lock = threading.Lock()

    def follow(process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip():
                with lock:
                    latencies.append(float(json.loads(line)["latency_s"]))

    watchers = []
    for i, stream in enumerate(streams):
        name = f"bench-{count}-{i}-{time.time_ns()}"
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "watch", stream.url, "--name", name, "--json"],
            env=cluster.env,  # type: ignore[attr-defined]
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        thread = threading.Thread(target=follow, args=(process,), daemon=True)
        thread.start()
        watchers.append((process, thread))
    try:
        for process, thread in watchers:
            process.wait(timeout=seconds * 20 + 600)
            thread.join(10)
    finally:
        for stream in streams:
            stream.kill()
        for process, _ in watchers:
            if process.poll() is None:
                process.kill()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="length of each stream")
    parser.add_argument("--segment", type=float, default=5.0, help="OCEANSTREAM_SEGMENT_SECONDS")
    parser.add_argument("--most", type=int, default=4, help="most simultaneous streams to try")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    args = parser.parse_args()

    from tests.clips import write_h264
    from tests.support.cluster import Cluster
    from tests.support.postgres import PostgresDatabases
    from tests.support.redis import RedisServer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = write_h264(
            root / "live.mp4", seconds=args.seconds, fps=30, size=(1280, 720), preset="veryfast"
        )
        databases = PostgresDatabases(normalize_url(args.postgres))
        url = databases.create("live").render_as_string(hide_password=False)
        redis = RedisServer(root)
        redis.start()
        home = root / "home"
        home.mkdir()
        cluster = Cluster(
            home=home,
            database_url=url,
            broker_url=redis.url,
            extra_env={
                "OCEANSTREAM_NUM_FRAMES": "16",
                "OCEANSTREAM_SEGMENT_SECONDS": f"{args.segment:g}",
                "OCEANSTREAM_WATCH_RECONNECT_S": "2",
            },
        )
        try:
            assert cluster.cli("db", "upgrade").returncode == 0
            for queue in ("faces", "flow", "inference"):
                cluster.start_worker(queue)
            print(
                f"{args.seconds:g} s streams of 1280x720 H.264 at 30 fps in real time, "
                f"{args.segment:g} s segments, T=16, one worker per queue, "
                f"{os.cpu_count()} cores"
            )
            print(f"{'streams':>7} {'segments':>8} {'p50 s':>7} {'p99 s':>7}  keeps up")
            kept = 0
            for count in range(1, args.most + 1):
                latencies = watch_streams(cluster, clip, count, args.seconds)
                p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (np.nan,) * 2
                keeps = bool(latencies) and p99 <= 2.0 * args.segment
                print(f"{count:>7} {len(latencies):>8} {p50:7.2f} {p99:7.2f}  {keeps}")
                if not keeps:
                    break
                kept = count
            print(f"largest number of real-time streams kept up with: {kept}")
        finally:
            cluster.stop_workers()
            redis.kill()
            databases.drop_all()


if __name__ == "__main__":
    main()
