"""Benchmark: one long video as segments, decoded selectively and fanned out across workers.

    .venv/bin/python -m tests.benchmarks.segments [--minutes 5] [--per-queue 1,2]

Writes a 1280x720 30 fps H.264 talking head (libx264's defaults: medium, CRF 23, three
B-frames; ``--preset`` changes it) of ``--minutes`` minutes: a ``--piece``-second clip (20 s
by default, so that most segment boundaries fall inside a group of pictures, not on a
keyframe) stream-copied end to end.
Then prints, in one run:

1. decode CPU time per 15 s segment, each segment sampling T=16 frames and their successors
   from its own window (`core.video.selective_decode`), against a full single-thread decode of the
   video shared out per segment (`tests.benchmarks.selective_decode.segmented`), and the ratio
   (the target: at most 0.75);
2. the time to the result of the video, submitted once, with one and with two worker
   processes per queue (ingest, faces, flow, and the inference pool), each run on a fresh
   PostgreSQL database and its own redis-server, workers warmed (models loaded, then a 2 s
   clip through every process) before the clock starts; the clock stops when the video is
   final. Each run is set against the CPU bound of this host: the worker CPU seconds per
   segment measured in the one-process run (every worker process's user + system time,
   from /proc) x segments / cores. The share is bound / time (the target: at least
   85 % with two per queue). Redis and PostgreSQL run beside the workers and are not counted.
   On a shared host other processes take CPU too: the cores they used meanwhile (from
   /proc/stat, less the workers' own time) are printed with each run, and the share of the
   bound recomputed on the cores they left free.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from core.video.probe import probe_video
from db.engine import normalize_url
from tests.benchmarks.distributed import group_cpu_seconds
from tests.benchmarks.selective_decode import segmented
from tests.support.postgres import POSTGRES_URL

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

QUEUES = ("ingest", "faces", "flow", "inference")
FPS = 30
SIZE = (1280, 720)


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-y", "-nostdin", "-loglevel", "error", *args], check=True)


def make_video(folder: Path, minutes: float, piece_s: float, preset: str) -> Path:
    """A `minutes`-long H.264 video: one `piece_s` clip repeated by stream copy."""
    from tests.clips import write_h264

    piece = write_h264(
        folder / "piece.mp4", seconds=piece_s, fps=FPS, size=SIZE, seed=3, preset=preset
    )
    repeats = max(1, round(60 * minutes / piece_s))
    listing = folder / "pieces.txt"
    listing.write_text(f"file '{piece}'\n" * repeats)
    video = folder / f"talk_{minutes:g}min.mp4"
    ffmpeg("-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy", str(video))
    return video


def make_warmups(folder: Path, source: Path, count: int) -> list[Path]:
    """`count` 2 s clips cut from `source`, with distinct bytes (content de-duplication)."""
    clips = []
    for i in range(count):
        clip = folder / f"warm_{i}.mp4"
        ffmpeg("-i", str(source), "-t", "2", "-c", "copy", "-metadata", f"comment={i}", str(clip))
        clips.append(clip)
    return clips


@dataclass
class Run:
    per_queue: int
    seconds: float
    segments: int
    cpu: dict[str, float]  # worker CPU seconds by queue, for the video alone
    host_busy: float  # CPU seconds every process on the host used meanwhile

    @property
    def other_cores(self) -> float:
        """Cores that other processes (Redis, PostgreSQL, anything else) kept busy."""
        return max(0.0, self.host_busy - sum(self.cpu.values())) / self.seconds

    @property
    def cpu_per_segment(self) -> float:
        return sum(self.cpu.values()) / self.segments


def distributed(video: Path, warmups: list[Path], home: Path, admin: str, per_queue: int) -> Run:
    from core.storage.store import ArtifactStore
    from db.engine import make_engine, make_session_factory
    from tests.support.cluster import Cluster
    from tests.support.postgres import PostgresDatabases
    from tests.support.redis import RedisServer
    from workers.celery_app import create_app
    from workers.services.jobs import register_inputs
    from workers.settings import Settings

    databases = PostgresDatabases(normalize_url(admin))
    url = databases.create("segbench").render_as_string(hide_password=False)
    redis = RedisServer(home)
    redis.start()
    cluster = Cluster(
        home=home,
        database_url=url,
        broker_url=redis.url,
        extra_env={"OCEANSTREAM_NUM_FRAMES": "16"},
    )
    try:
        assert cluster.cli("db", "upgrade").returncode == 0
        # Started side by side: each waits for its processes to load their models.
        with ThreadPoolExecutor(len(QUEUES)) as pool:
            started = pool.map(lambda q: cluster.start_worker(q, concurrency=per_queue), QUEUES)
            groups = {q: process.pid for q, process in zip(QUEUES, started, strict=True)}
        settings = Settings(
            database_url=url,
            broker_url=redis.url,
            storage_url=f"file://{home / 'storage'}",
            home=home,
        )
        session_factory = make_session_factory(make_engine(url))
        celery = create_app(settings)
        store = ArtifactStore(settings.effective_storage_url)

        def submit(paths: list[Path]) -> str:
            registration = register_inputs(session_factory, paths, kind="submit", store=store)
            for video_id in registration.to_process:
                celery.send_task("oceanstream.ingest", args=[video_id], queue="ingest")
            return registration.job_id

        warm = cluster.wait_job(submit(warmups[:per_queue]), timeout=600)
        assert warm == {"done": per_queue}, warm
        before = {q: group_cpu_seconds(pgid) for q, pgid in groups.items()}
        busy_before = host_busy_seconds()
        start = time.perf_counter()
        counts = cluster.wait_job(submit([video]), timeout=3600)
        elapsed = time.perf_counter() - start
        busy = host_busy_seconds() - busy_before
        assert counts == {"done": 1}, counts
        cpu = {q: group_cpu_seconds(pgid) - before[q] for q, pgid in groups.items()}
        segments = cluster.query(
            "SELECT s.timings FROM segments s JOIN videos v ON v.id = s.video_id "
            "WHERE v.name = :name",
            name=video.name,
        )
        print_stage_means(per_queue, [t for (t,) in segments])
        return Run(per_queue, elapsed, len(segments), cpu, busy)
    finally:
        cluster.stop_workers()
        redis.kill()
        databases.drop_all()


def host_busy_seconds() -> float:
    """CPU seconds the whole host has spent busy since boot (all cores, from /proc/stat)."""
    fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def print_stage_means(per_queue: int, timings: list[object]) -> None:
    """Mean seconds of each stage per segment, from the timings the segments stored."""
    rows = [json.loads(t) if isinstance(t, str) else t for t in timings]
    stages = sorted({k for row in rows for k in row})  # type: ignore[union-attr]
    means = ", ".join(
        f"{k} {statistics.mean(r.get(k, 0.0) for r in rows):.3f}"  # type: ignore[union-attr]
        for k in stages
    )
    print(f"  {per_queue} per queue, mean per segment: {means}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--piece", type=float, default=20.0, help="seconds of the repeated clip")
    parser.add_argument("--preset", default="medium", help="libx264 preset of the clip")
    parser.add_argument("--per-queue", default="1,2", help="worker processes per queue")
    parser.add_argument("--repeat", type=int, default=1, help="selective decodes per segment")
    parser.add_argument("--postgres", default=POSTGRES_URL)
    args = parser.parse_args()
    counts = [int(n) for n in args.per_queue.split(",")]
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        video = make_video(root / "clips", args.minutes, args.piece, args.preset)
        warmups = make_warmups(root / "clips", video, max(counts))
        info = probe_video(video)
        print(
            f"{info.duration_s:g} s {info.width}x{info.height} H.264 ({args.preset}) "
            f"at {info.fps:g} fps "
            f"({video.stat().st_size / 1e6:.1f} MB), T=16, {cores} cores, "
            f"load average {os.getloadavg()[0]:.1f} at start"
        )
        print("1. decode, one thread:")
        segmented(video, info, args.repeat)
        print("2. time to the result, distributed:")
        runs = []
        for per_queue in counts:
            home = root / f"run{per_queue}"
            home.mkdir()
            runs.append(distributed(video, warmups, home, args.postgres, per_queue))
        base = runs[0]
        bound = base.cpu_per_segment * base.segments / cores
        print(
            f"  CPU per segment ({base.per_queue} per queue): {base.cpu_per_segment:.2f} s "
            "(" + ", ".join(f"{q} {s / base.segments:.2f}" for q, s in base.cpu.items()) + "); "
            f"CPU bound of {base.segments} segments on {cores} cores: {bound:.1f} s"
        )
        print(
            f"  {'per queue':>9} {'seconds':>8} {'CPU s/segment':>14} {'share of bound':>15} "
            f"{'other cores busy':>17} {'share of cores left':>20}"
        )
        for run in runs:
            left = cores - run.other_cores
            # The bound on the cores other processes left free: meaningful on a shared host.
            share_left = f"{bound * cores / left / run.seconds:.0%}" if left > 0.05 else "-"
            print(
                f"  {run.per_queue:>9} {run.seconds:8.1f} {run.cpu_per_segment:14.2f} "
                f"{bound / run.seconds:15.0%} {run.other_cores:17.2f} {share_left:>20}"
            )
        print(f"  load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
