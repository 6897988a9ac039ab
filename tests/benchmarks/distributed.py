"""Benchmark: the same clips in one process and through the Celery queues, in one run.

    python -m tests.benchmarks.distributed [--clips 24] [--seconds 15]

Writes one talking-head H.264 clip (1280x720) and remuxes it into N files with distinct bytes
(so content-hash de-duplication does not collapse them), then times:

1. in-process: `workers.services.analysis.analyze_inputs` (a `core.video_analysis.VideoAnalyzer`,
   each video stored with its segments, persons and aggregate by
   `db.repository.outcomes.store_segmented`), as `oceanstream analyze` does;
2. distributed, one `oceanstream worker` process per queue (ingest, faces, flow, inference);
3. distributed, two processes per CPU queue (ingest, faces, flow) and one for inference.

Each distributed run gets a fresh PostgreSQL database and its own redis-server; workers are
started and warmed before the clock starts (the `ingest` workers also sample the segments);
the clock stops when every video is final. `--seconds` above 22.5 cuts each clip into
segments of 15 s, which the queues analyse in parallel.
Prints throughput (clips/min) and the orchestration overhead of each distributed run:
(distributed time - in-process time) / in-process time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from db.engine import normalize_url
from tests.support.postgres import POSTGRES_URL

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def make_clips(folder: Path, count: int, seconds: float) -> list[Path]:
    import imageio_ffmpeg

    from tests.clips import write_h264

    source = write_h264(
        folder / "source.mp4", seconds=seconds, fps=30, size=(1280, 720), preset="veryfast"
    )
    clips = []
    for i in range(count):
        target = folder / f"clip_{i:03d}.mp4"
        subprocess.run(
            [
                imageio_ffmpeg.get_ffmpeg_exe(),
                "-loglevel",
                "error",
                "-y",
                "-i",
                str(source),
                "-c",
                "copy",
                "-metadata",
                f"comment=copy {i}",
                "-movflags",
                "+faststart",
                str(target),
            ],
            check=True,
        )
        clips.append(target)
    return clips


def in_process(clips: list[Path], home: Path) -> float:
    from core.persons.person_links import ContinuityLinker
    from core.pipeline import PipelineConfig
    from core.video_analysis import VideoAnalyzer
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_database
    from workers.services.analysis import Analyzer, analyze_inputs
    from workers.services.models import register_bundle, resolve_bundle

    url = f"sqlite:///{home / 'inprocess.db'}"
    upgrade_database(url)
    session_factory = make_session_factory(make_engine(url))
    bundle = resolve_bundle(None, 16)
    register_bundle(session_factory, bundle)
    # As the workers link persons across segments without a face backbone: by continuity.
    analyzer = Analyzer(VideoAnalyzer(bundle, PipelineConfig(num_frames=16)), ContinuityLinker())
    analyzer.videos.analyze(clips[0])  # warm-up, as the workers are warmed before their clock
    start = time.perf_counter()
    analysis = analyze_inputs(analyzer, session_factory, clips)
    assert all(row.status == "done" for row in analysis.rows), analysis.rows
    return time.perf_counter() - start


def distributed(clips: list[Path], home: Path, admin_url: str, per_queue: int) -> float:
    from core.storage.store import ArtifactStore
    from db.engine import make_engine, make_session_factory
    from tests.support.cluster import Cluster
    from tests.support.postgres import PostgresDatabases
    from tests.support.redis import RedisServer
    from workers.celery_app import create_app
    from workers.services.jobs import register_inputs
    from workers.settings import Settings

    databases = PostgresDatabases(normalize_url(admin_url))
    url = databases.create("bench").render_as_string(hide_password=False)
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
        groups = {
            queue: cluster.start_worker(queue, concurrency=per_queue).pid
            for queue in ("ingest", "faces", "flow")
        }
        groups["inference"] = cluster.start_worker("inference").pid
        settings = Settings(
            database_url=url,
            broker_url=redis.url,
            storage_url=f"file://{home / 'storage'}",
            home=home,
        )
        session_factory = make_session_factory(make_engine(url))
        celery = create_app(settings)
        cpu_before = {queue: group_cpu_seconds(pgid) for queue, pgid in groups.items()}
        start = time.perf_counter()
        store = ArtifactStore(settings.effective_storage_url)
        registration = register_inputs(session_factory, clips, kind="submit", store=store)
        job_id, queued = registration.job_id, registration.to_process
        for video_id in queued:
            celery.send_task("oceanstream.ingest", args=[video_id], queue="ingest")
        counts = cluster.wait_job(job_id, timeout=1800)
        elapsed = time.perf_counter() - start
        assert counts == {"done": len(clips)}, counts
        print_stage_means(cluster, per_queue)
        cpu = {q: group_cpu_seconds(g) - cpu_before[q] for q, g in groups.items()}
        print(
            f"  {per_queue} per queue, worker CPU seconds per clip: "
            + ", ".join(f"{q} {s / len(clips):.3f}" for q, s in cpu.items())
            + f"; all {sum(cpu.values()) / len(clips):.3f} in {elapsed / len(clips):.3f} s "
            f"of wall time per clip ({os.cpu_count()} cores)"
        )
        return elapsed
    finally:
        cluster.stop_workers()
        redis.kill()
        databases.drop_all()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds used so far by the live processes of process group `pgid`."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        # After "pid (comm)": state ppid pgrp ...; utime and stime are the 12th and 13th.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def print_stage_means(cluster: object, per_queue: int) -> None:
    """Mean seconds per stage: the probe per video, every later stage per segment (from the
    timings each stored). `inference_batch` is a count of rows, not seconds."""
    import json
    import statistics

    for table in ("videos", "segments"):
        rows = [
            json.loads(t) if isinstance(t, str) else t
            for (t,) in cluster.query(f"SELECT timings FROM {table}")  # type: ignore[attr-defined]
        ]
        stages = sorted({k for row in rows for k in row})
        means = ", ".join(f"{k} {statistics.mean(r.get(k, 0.0) for r in rows):.3f}" for k in stages)
        print(f"  {per_queue} per queue, mean per {table[:-1]}: {means}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--postgres",
        default=POSTGRES_URL,
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "clips").mkdir()
        clips = make_clips(root / "clips", args.clips, args.seconds)
        print(f"{len(clips)} clips of {args.seconds:.0f} s 1280x720 H.264, {os.cpu_count()} cores")
        base = in_process(clips, root)
        rows = [("in-process analyze", base)]
        for per_queue in (1, 2):
            home = root / f"dist{per_queue}"
            home.mkdir()
            rows.append(
                (
                    f"distributed, {per_queue} process(es) per CPU queue",
                    distributed(clips, home, args.postgres, per_queue),
                )
            )
        print(f"{'run':<42} {'seconds':>8} {'clips/min':>10} {'overhead':>9}")
        for label, seconds in rows:
            overhead = "" if seconds is base else f"{(seconds - base) / base:+.0%}"
            print(f"{label:<42} {seconds:8.1f} {len(clips) / seconds * 60:10.1f} {overhead:>9}")
        one, two = rows[1][1], rows[2][1]
        print(f"scaling, 2 vs 1 process per CPU queue: {one / two:.2f}x throughput")


if __name__ == "__main__":
    main()
