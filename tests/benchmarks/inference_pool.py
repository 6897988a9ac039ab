"""Benchmark: the inference pool against its offline ceiling and per-segment inference.

    python -m tests.benchmarks.inference_pool [--segments 2000] [--persons 1] [--producers 4]
        [--max-batch-size 32] [--max-wait-ms 20] [--workers 1] [--per-segment 400]

Makes one-segment videos directly, each segment in state `inference` with `--persons`
persons and their feature sets in storage (no decoding), on a fresh PostgreSQL database and
a redis-server of its own, then measures in one run (`--videos` and `--per-video` are the
old names of `--segments` and `--per-segment`):

1. the model alone, offline: `ModelBundle.predict` (a compiled call) on ready arrays at the
   pool's batch size and at batch 1 (the ceiling);
2. the inference stage offline: `run_inference_batch` called in this process on batches of
   that size (features from storage, claim and commit in PostgreSQL; no broker);
3. per-segment inference: the Celery task (`oceanstream worker --queues inference
   --no-batcher`), messages sent from the producers;
4. the pool (`oceanstream worker --queues inference`), saturated: N messages sent from
   several producer processes as fast as they go;
5. the pool at a paced load (half its saturated throughput by default), for queue delay.

Prints throughput (segments/s; the model-alone rows are person rows/s, which is the same with
one person per segment), mean batch size (person rows per model call, from the workers'
Prometheus metrics), queue delay p50/p99 (message sent -> batch start, from each segment's
stored timings) and the issue's targets. Runs with any Keras backend (`KERAS_BACKEND=jax`
too); the model is built in this process's backend, as the workers build theirs.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from db.engine import normalize_url
from tests.support.cluster import Cluster
from tests.support.pool import (
    make_feature_segments,
    register_version,
    scrape,
    send_from_producers,
    start_pool_worker,
    wait_finished,
)
from tests.support.postgres import POSTGRES_URL, PostgresDatabases
from tests.support.redis import RedisServer
from tests.support.services import free_port

T = 16


def model_only(bundle: Any, batch_size: int, seconds: float = 2.0) -> float:
    """Rows/s of compiled fusion-model calls at `batch_size`, on arrays already in memory."""
    from core.model.batching import FeatureSet, pad_batch

    rng = np.random.default_rng(1)
    item = FeatureSet(
        rng.standard_normal((T, 512)).astype(np.float32),
        np.ones(T, bool),
        rng.standard_normal((T, 256)).astype(np.float32),
    )
    batch = pad_batch([item] * batch_size, batch_size, T)
    arrays = (batch.static, batch.dynamic, batch.static_mask, batch.dynamic_mask)
    for _ in range(5):
        bundle.predict(*arrays)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        bundle.predict(*arrays)
        calls += 1
    return calls * batch_size / (time.perf_counter() - start)


def offline_stage(cluster: Cluster, bundle: Any, ids: list[str], batch_size: int) -> float:
    """Segments/s of `run_inference_batch` in this process, `batch_size` segments per call."""
    from core.model.batching import bucket_sizes
    from core.pipeline import PipelineConfig
    from core.storage.store import ArtifactStore
    from db.engine import make_engine, make_session_factory
    from tasks.context import StageContext
    from tasks.stages import run_inference_batch

    engine = make_engine(cluster.database_url)
    ctx = StageContext(
        session_factory=make_session_factory(engine),
        store=ArtifactStore(cluster.env["OCEANSTREAM_STORAGE_URL"]),
        config=PipelineConfig(num_frames=T),
        load_bundle=lambda version: bundle,
        active_version=lambda session=None: bundle.metadata.version,
    )
    buckets = bucket_sizes(batch_size)
    run_inference_batch(ctx, ids[:batch_size], buckets=buckets)  # warm: connections, caches
    rest = ids[batch_size:]
    start = time.perf_counter()
    for i in range(0, len(rest), batch_size):
        report = run_inference_batch(ctx, rest[i : i + batch_size], buckets=buckets)
        assert set(report.statuses.values()) == {"done"}, report.errors
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(rest) / elapsed


def phase_figures(
    cluster: Cluster, prefix: str, begin: float, sent: float | None = None
) -> dict[str, float]:
    """Throughput from the first send to the last commit, and queue-delay percentiles.

    With `sent` (the epoch second the last message was sent), also the throughput after it:
    the pool draining its backlog with no producer competing for the CPU.
    """
    rows = cluster.query(
        "SELECT s.status, s.timings, extract(epoch from s.updated_at) FROM segments s "
        "JOIN videos v ON v.id = s.video_id WHERE v.name LIKE :p",
        p=f"{prefix}-%",
    )
    statuses = {status for status, _, _ in rows}
    assert statuses == {"done"}, f"{prefix}: statuses {statuses}"
    ends = sorted(float(epoch) for _, _, epoch in rows)
    end = ends[-1]
    delays = sorted(float(t["inference_queue"]) for _, t, _ in rows if "inference_queue" in t)
    figures = {
        "segments": len(rows),
        "seconds": end - begin,
        "throughput": len(rows) / (end - begin),
    }
    if sent is not None:
        after = [e for e in ends if e >= sent]
        if len(after) >= 64 and end - sent > 0.05:
            figures["drain"] = len(after) / (end - sent)
    if delays:
        figures["p50_ms"] = 1000 * float(np.percentile(delays, 50))
        figures["p99_ms"] = 1000 * float(np.percentile(delays, 99))
    return figures


def metric_sums(ports: list[int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for port in ports:
        for name, value in scrape(f"http://127.0.0.1:{port}/metrics").items():
            totals[name] = totals.get(name, 0.0) + value
    return totals


def pool_phase(
    cluster: Cluster,
    ids: list[str],
    prefix: str,
    producers: int,
    ports: list[int],
    rate: float | None = None,
) -> dict[str, float]:
    before = metric_sums(ports)
    begin, sending = send_from_producers(cluster.broker_url, ids, producers, rate)
    wait_finished(cluster.database_url, prefix, len(ids), timeout=1200)
    time.sleep(0.3)  # the last batch's metrics are recorded after its acknowledgements
    after = metric_sums(ports)
    figures = phase_figures(cluster, prefix, begin, sent=begin + sending)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    calls = delta("oceanstream_inference_batch_size_count")
    batches = delta("oceanstream_inference_batch_seconds_count")
    figures["send_rate"] = len(ids) / sending
    figures["mean_batch"] = delta("oceanstream_inference_batch_size_sum") / max(calls, 1)
    figures["batch_ms"] = 1000 * delta("oceanstream_inference_batch_seconds_sum") / max(batches, 1)
    figures["call_ms"] = (
        1000 * delta("oceanstream_inference_model_call_seconds_sum") / max(calls, 1)
    )
    return figures


def run(args: argparse.Namespace, root: Path) -> None:
    import keras

    from core.bundles.bundle import build_default_bundle
    from core.model.batching import bucket_sizes, choose_bucket
    from workers.signals import limit_threads

    backend = keras.backend.backend()
    limit_threads(args.threads)  # the same thread budget as the workers (--threads)
    devices = _accelerators(backend)
    print(
        f"backend {backend}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}, "
        f"accelerators: {', '.join(devices) or 'none (CPU only)'}\n"
        f"{args.segments} segments of {args.persons} person(s) from {args.producers} "
        f"producers, max batch "
        f"{args.max_batch_size}, max wait {args.max_wait_ms:g} ms, {args.workers} pool "
        f"process(es) with {args.threads} compute thread(s) each"
    )
    redis = RedisServer(root)
    redis.start()
    databases = PostgresDatabases(normalize_url(args.postgres))
    url = databases.create("bench").render_as_string(hide_password=False)
    home = root / "home"
    home.mkdir()
    cluster = Cluster(
        home=home,
        database_url=url,
        broker_url=redis.url,
        extra_env={
            "OCEANSTREAM_NUM_FRAMES": str(T),
            "OCEANSTREAM_MAX_BATCH_SIZE": str(args.max_batch_size),
            "OCEANSTREAM_MAX_WAIT_MS": str(args.max_wait_ms),
        },
    )
    try:
        assert cluster.cli("db", "upgrade").returncode == 0
        bundle = build_default_bundle(num_frames=T)
        meta = bundle.metadata
        register_version(url, meta)
        storage = cluster.env["OCEANSTREAM_STORAGE_URL"]
        made = time.perf_counter()

        def segments(count: int, prefix: str, seed: int = 0) -> list[str]:
            return make_feature_segments(
                url,
                storage,
                meta.version,
                count,
                prefix=prefix,
                num_frames=T,
                seed=seed,
                persons=args.persons,
            )

        offline_ids = segments(args.offline, "offline", seed=1)
        per_segment_ids = segments(args.per_segment, "persegment", seed=2)
        pool_ids = segments(args.segments, "pool")
        paced_ids = segments(args.paced, "paced", seed=3)
        print(
            f"made {len(offline_ids) + len(per_segment_ids) + len(pool_ids) + len(paced_ids)} "
            f"segments' feature sets in {time.perf_counter() - made:.1f} s"
        )

        # Per-segment inference: the Celery task, one message at a time.
        worker = start_pool_worker(cluster, "--no-batcher", "--threads", str(args.threads))
        per_segment = _celery_phase(cluster, per_segment_ids, "persegment", args.producers)
        cluster.stop_workers()
        del worker

        # The pool.
        port = free_port()
        start_pool_worker(
            cluster,
            "--concurrency",
            str(args.workers),
            "--threads",
            str(args.threads),
            env={"OCEANSTREAM_METRICS_PORT": str(port)},
            ready_lines=args.workers,
        )
        ports = [port + i for i in range(args.workers)]
        saturated = pool_phase(cluster, pool_ids, "pool", args.producers, ports)
        rate = args.paced_fraction * saturated["throughput"]
        paced = pool_phase(cluster, paced_ids, "paced", args.producers, ports, rate=rate)
        cluster.stop_workers()

        # Offline references at the batch size the pool actually used, in the same run.
        buckets = bucket_sizes(args.max_batch_size)
        # The pool's model calls, in person rows; the offline stage gets as many segments
        # per call as fill that many rows.
        bucket = choose_bucket(max(1, round(saturated["mean_batch"])), buckets)
        ceiling = model_only(bundle, bucket)
        ceiling_max = (
            ceiling if bucket == args.max_batch_size else model_only(bundle, args.max_batch_size)
        )
        single = model_only(bundle, 1)
        stage = offline_stage(cluster, bundle, offline_ids, max(1, bucket // args.persons))
    finally:
        cluster.stop_workers(signal.SIGKILL)
        redis.kill()
        databases.drop_all()
    _report(args, saturated, paced, per_segment, ceiling, ceiling_max, single, stage, bucket, rate)


def _celery_phase(
    cluster: Cluster, ids: list[str], prefix: str, producers: int
) -> dict[str, float]:
    begin, _ = send_from_producers(cluster.broker_url, ids, producers)
    wait_finished(cluster.database_url, prefix, len(ids), timeout=1200)
    return phase_figures(cluster, prefix, begin)


def _accelerators(backend: str) -> tuple[str, ...]:
    from workers.pool.accelerators import _accelerators as listed

    return listed(backend)


def _report(
    args: argparse.Namespace,
    saturated: dict[str, float],
    paced: dict[str, float],
    per_segment: dict[str, float],
    ceiling: float,
    ceiling_max: float,
    single: float,
    stage: float,
    bucket: int,
    rate: float,
) -> None:
    rows = [
        (f"model alone, compiled call, batch {bucket} (ceiling)", ceiling, ""),
        (f"model alone, compiled call, batch {args.max_batch_size}", ceiling_max, ""),
        ("model alone, compiled call, batch 1", single, ""),
        (
            f"inference stage offline, batches of {max(1, bucket // args.persons)} segments "
            "(no broker)",
            stage,
            "",
        ),
        (
            "per-segment Celery task (--no-batcher)",
            per_segment["throughput"],
            _delays(per_segment),
        ),
        (
            f"pool, saturated ({args.producers} producers)",
            saturated["throughput"],
            _delays(saturated),
        ),
        (f"pool, paced at {rate:.0f}/s", paced["throughput"], _delays(paced)),
    ]
    print(f"\n{'run':<58} {'per s':>9}  queue delay p50 / p99")
    for label, value, delays in rows:
        print(f"{label:<58} {value:9.0f}  {delays}")
    pool = saturated["throughput"]
    bound = args.max_wait_ms + 2 * paced["batch_ms"]
    print(
        f"\npool: mean batch {saturated['mean_batch']:.1f} person rows per model call "
        f"(paced: {paced['mean_batch']:.1f}), batch processed in {saturated['batch_ms']:.1f} ms "
        f"(model call {saturated['call_ms']:.1f} ms), producers sent "
        f"{saturated['send_rate']:.0f} messages/s"
    )
    if "drain" in saturated:
        drain = saturated["drain"]
        print(
            f"pool after the producers stopped (draining the backlog): {drain:.0f} segments/s, "
            f"{drain * args.persons / ceiling:.0%} of the model-alone ceiling (in rows), "
            f"{drain / stage:.0%} of the "
            "offline stage"
        )
    print(
        f"pool / model-alone ceiling at batch {bucket}, in person rows: "
        f"{pool * args.persons / ceiling:.0%} (target 70%)\n"
        f"pool / offline inference stage: {pool / stage:.0%}\n"
        f"pool / per-segment inference: {pool / per_segment['throughput']:.1f}x (target 5x)\n"
        f"paced p99 queue delay {paced['p99_ms']:.1f} ms vs max_wait + 2 batch times "
        f"= {bound:.1f} ms: {'within' if paced['p99_ms'] <= bound else 'over'}"
    )


def _delays(figures: dict[str, float]) -> str:
    if "p50_ms" not in figures:
        return ""
    return f"{figures['p50_ms']:.1f} / {figures['p99_ms']:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--segments", "--videos", type=int, default=2000, help="segments sent to the pool"
    )
    parser.add_argument("--persons", type=int, default=1, help="persons per segment")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=1, help="pool processes")
    parser.add_argument("--threads", type=int, default=1, help="compute threads per process")
    parser.add_argument(
        "--per-segment", "--per-video", type=int, default=400, help="segments for the Celery task"
    )
    parser.add_argument("--offline", type=int, default=640, help="segments for the offline stage")
    parser.add_argument("--paced", type=int, default=1000, help="segments in the paced phase")
    parser.add_argument("--paced-fraction", type=float, default=0.5)
    parser.add_argument(
        "--postgres",
        default=POSTGRES_URL,
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(args, Path(tmp))


if __name__ == "__main__":
    main()
