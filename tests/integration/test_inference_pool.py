"""The inference pool with real PostgreSQL, Redis and `oceanstream worker --queues inference`.

Feature sets are written to storage and one-segment videos made directly, their segments in
state `inference`; messages (a segment id each) are sent by producer processes the way the
feature stages send them. A segment's finish also aggregates its video, so every video ends
with its headline prediction.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest
import redis
from kombu import Connection

from core.bundles.bundle import build_default_bundle
from core.storage.artifacts import LAYOUT
from tests.support.cluster import Cluster
from tests.support.pool import (
    log_text,
    make_feature_segments,
    register_version,
    scrape,
    send_from_producers,
    start_pool_worker,
    wait_finished,
)
from tests.support.services import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]
T = 8  # the cluster's OCEANSTREAM_NUM_FRAMES


@pytest.fixture
def cluster(isolated_cluster: Cluster) -> Cluster:
    return isolated_cluster


@pytest.fixture(scope="module")
def version() -> str:
    return build_default_bundle(num_frames=T).metadata.version


def segments(cluster: Cluster, version: str, count: int, prefix: str, seed: int = 0) -> list[str]:
    register_version(cluster.database_url, build_default_bundle(num_frames=T).metadata)
    return make_feature_segments(
        cluster.database_url,
        cluster.env["OCEANSTREAM_STORAGE_URL"],
        version,
        count,
        prefix=prefix,
        num_frames=T,
        seed=seed,
    )


def one(cluster: Cluster, sql: str, **params: object) -> object:
    return cluster.query(sql, **params)[0][0]


def video_ids(cluster: Cluster) -> dict[str, str]:
    """Segment id -> its video's id."""
    return dict(cluster.query("SELECT id, video_id FROM segments"))


def test_pool_batches_under_load_fails_bad_segments_alone_and_flushes_when_idle(
    cluster: Cluster, version: str
) -> None:
    ids = segments(cluster, version, 200, "load")
    store, video_of = cluster.home / "storage", video_ids(cluster)
    (store / LAYOUT.segment_dynamic(video_of[ids[10]], 0)).unlink()  # missing features
    corrupt = store / LAYOUT.segment_static(video_of[ids[20]], 0)
    corrupt.write_bytes(b"not an npz archive")
    port = free_port()
    worker = start_pool_worker(
        cluster,
        env={
            "OCEANSTREAM_MAX_BATCH_SIZE": "16",
            "OCEANSTREAM_MAX_WAIT_MS": "100",
            "OCEANSTREAM_METRICS_PORT": str(port),
        },
    )
    send_from_producers(cluster.broker_url, ids, producers=2)
    wait_finished(cluster.database_url, "load", len(ids), timeout=120)

    statuses = dict(cluster.query("SELECT id, status FROM segments"))
    assert statuses[ids[10]] == statuses[ids[20]] == "failed"
    assert sum(s == "done" for s in statuses.values()) == 198
    errors = dict(cluster.query("SELECT id, error FROM segments WHERE status = 'failed'"))
    assert "missing" in errors[ids[10]] and "corrupt" in errors[ids[20]]
    assert one(cluster, "SELECT count(*) FROM segment_predictions") == 198
    # Each segment was its video's only one: the videos are final, with their headline.
    videos = dict(cluster.query("SELECT id, status FROM videos"))
    assert videos[video_of[ids[10]]] == videos[video_of[ids[20]]] == "failed"
    assert sum(s == "done" for s in videos.values()) == 198
    assert one(cluster, "SELECT count(*) FROM predictions") == 198
    assert one(cluster, "SELECT count(DISTINCT video_id) FROM predictions") == 198
    assert one(cluster, "SELECT count(*) FROM attention_maps") == 198

    # Batches formed: the stored size of each segment's model call, and the workers' metrics.
    sizes = [
        int(t["inference_batch"])
        for (t,) in cluster.query("SELECT timings FROM segments WHERE status = 'done'")
    ]
    assert max(sizes) == 16 and sum(sizes) / len(sizes) > 4, sizes
    # Each batch is counted when it is settled, just after its results commit.
    done = 'oceanstream_inference_videos_total{outcome="done"}'
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: scrape(url).get(done) == 198, 10, "198 segments counted done")
    metrics = scrape(url)
    assert metrics['oceanstream_inference_videos_total{outcome="failed"}'] == 2
    calls = metrics["oceanstream_inference_batch_size_count"]
    assert metrics["oceanstream_inference_batch_size_sum"] == 198 and calls <= 198 / 4
    queues = [f'oceanstream_queue_length{{queue="{q}"}}' for q in ("ingest", "faces", "flow")]
    inference = 'oceanstream_queue_length{queue="inference"}'
    # Lengths are read every few seconds, not at the scrape.
    wait_for(lambda: scrape(url).get(inference) == 0, 12, "an empty inference queue shown")
    assert all(scrape(url)[name] == 0 for name in queues)
    assert metrics["oceanstream_inference_queue_delay_seconds_count"] == 200
    batches = metrics["oceanstream_inference_batches_total"]

    # Idle: a lone segment is run by the timer, after about max_wait_ms.
    [alone] = segments(cluster, version, 1, "alone", seed=9)
    # Timed from the send itself: starting the producer process is no part of it.
    sent, _ = send_from_producers(cluster.broker_url, [alone], producers=1)
    wait_finished(cluster.database_url, "alone", 1, timeout=30)
    assert time.time() - sent < 5.0
    timings = one(cluster, "SELECT timings FROM segments WHERE id = :s", s=alone)
    assert timings["inference_batch"] == 1
    assert 0.09 <= timings["inference_queue"] < 1.5, timings
    assert "Traceback" not in log_text(worker)

    # One INFO line per batch: its size, outcomes and time; together, every message.
    def batch_lines() -> list[re.Match[str]]:
        return list(BATCH_LINE.finditer(log_text(worker)))

    wait_for(lambda: sum(int(m["size"]) for m in batch_lines()) == 201, 10, "201 logged")
    lines = batch_lines()
    assert sum(int(m["done"] or 0) for m in lines) == 199
    assert sum(int(m["failed"] or 0) for m in lines) == 2
    assert len(lines) == batches + 1


BATCH_LINE = re.compile(
    r"batch of (?P<size>\d+): (?:(?P<done>\d+) done)?(?:, )?(?:(?P<failed>\d+) failed)? "
    r"in \d+\.\d{3} s \(model \d+\.\d{3} s\)"
)


def test_a_broker_the_pool_cannot_use_is_refused_in_one_line(cluster: Cluster) -> None:
    cluster.extra_env["OCEANSTREAM_BROKER_URL"] = "amqp://guest@127.0.0.1:5672//"
    began = time.monotonic()
    refused = cluster.cli("worker", "--queues", "inference", timeout=60)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "Redis broker" in lines[0], refused.stderr
    assert time.monotonic() - began < 30  # before any model is loaded


def claimed_unfinished(cluster: Cluster) -> list[str]:
    """Segments a worker has claimed (a delivery counted) but not finished: mid-batch."""
    return [
        segment_id
        for (segment_id,) in cluster.query(
            "SELECT id FROM segments WHERE status = 'inference' "
            "AND (deliveries::jsonb ->> 'inference') IS NOT NULL"
        )
    ]


def test_a_killed_batch_worker_loses_and_duplicates_nothing(cluster: Cluster, version: str) -> None:
    ids = segments(cluster, version, 400, "kill")
    batch_env = {
        "OCEANSTREAM_MAX_BATCH_SIZE": "16",
        "OCEANSTREAM_MAX_WAIT_MS": "20",
        "OCEANSTREAM_BATCHES_IN_FLIGHT": "2",
    }
    # A backlog first: the pool drains 400 segments in well under a second once it runs.
    send_from_producers(cluster.broker_url, ids, producers=2)
    worker = start_pool_worker(cluster, env=batch_env)

    # Freeze the worker; if it is between claiming a batch and committing it, kill it there.
    in_flight: list[str] = []
    deadline = time.monotonic() + 60
    while not in_flight and time.monotonic() < deadline:
        os.killpg(worker.pid, signal.SIGSTOP)
        in_flight = claimed_unfinished(cluster)
        if in_flight:
            os.killpg(worker.pid, signal.SIGKILL)
        else:
            os.killpg(worker.pid, signal.SIGCONT)
            time.sleep(0.005)
    assert in_flight, "never caught the worker mid-batch"
    worker.wait(10)
    done = one(cluster, "SELECT count(*) FROM segments WHERE status = 'done'")
    assert 0 < len(in_flight) <= 2 * 16 and done < len(ids)  # at most two batches in hand
    broker = redis.Redis.from_url(cluster.broker_url)
    held = broker.hlen("unacked")
    assert held >= len(in_flight)  # its messages are not lost: unacknowledged in Redis

    # Recovery: a new worker, and the reconciler for what the dead one held.
    start_pool_worker(cluster, env=batch_env)
    swept = cluster.cli("reconcile", "--older-than", "0")
    assert swept.returncode == 0, swept.stderr
    wait_finished(cluster.database_url, "kill", len(ids), timeout=120)
    assert one(cluster, "SELECT count(*) FROM segments WHERE status = 'done'") == len(ids)
    assert one(cluster, "SELECT count(*) FROM videos WHERE status = 'done'") == len(ids)
    assert one(cluster, "SELECT count(*) FROM segment_predictions") == len(ids)
    assert one(cluster, "SELECT count(*) FROM predictions") == len(ids)
    assert one(cluster, "SELECT count(*) FROM attention_maps") == len(ids)
    assert one(cluster, "SELECT count(*) FROM persons") == len(ids)  # aggregated once each
    deliveries = dict(
        cluster.query("SELECT id, (deliveries::jsonb ->> 'inference')::int FROM segments")
    )
    assert all(deliveries[s] >= 2 for s in in_flight)

    # Later Redis hands the dead worker's messages out again (visibility timeout): no-ops.
    wait_for(lambda: broker.llen("inference") == 0, 60, "the queue to drain")
    wait_for(lambda: broker.hlen("unacked") <= held, 30, "the live worker's acks")
    with Connection(cluster.broker_url, transport_options={"visibility_timeout": 0}) as conn:
        conn.channel().qos.restore_visible(num=10_000, interval=1)
    wait_for(
        lambda: broker.llen("inference") == 0 and broker.hlen("unacked") == 0,
        60,
        "the redelivered messages to be consumed",
    )
    assert one(cluster, "SELECT count(*) FROM segment_predictions") == len(ids)
    assert one(cluster, "SELECT count(*) FROM predictions") == len(ids)
    assert one(cluster, "SELECT count(*) FROM persons") == len(ids)
    assert one(cluster, "SELECT count(*) FROM videos WHERE status <> 'done'") == 0


def test_one_pinned_process_per_device_and_a_clean_stop(cluster: Cluster, version: str) -> None:
    ids = segments(cluster, version, 120, "devices")
    port = free_port()
    pool = start_pool_worker(
        cluster,
        "--devices",
        "0,1",
        env={"OCEANSTREAM_MAX_BATCH_SIZE": "8", "OCEANSTREAM_METRICS_PORT": str(port)},
        ready_lines=2,
    )
    log = log_text(pool)
    assert "CUDA_VISIBLE_DEVICES=0" in log and "CUDA_VISIBLE_DEVICES=1" in log
    send_from_producers(cluster.broker_url, ids, producers=2)
    wait_finished(cluster.database_url, "devices", len(ids), timeout=120)

    def done() -> list[float]:
        return [
            scrape(f"http://127.0.0.1:{p}/metrics").get(
                'oceanstream_inference_videos_total{outcome="done"}', 0.0
            )
            for p in (port, port + 1)
        ]

    wait_for(lambda: sum(done()) == len(ids), 10, "every segment counted done")
    assert all(count > 0 for count in done())  # both took work
    assert one(cluster, "SELECT count(*) FROM predictions") == len(ids)

    os.kill(pool.pid, signal.SIGTERM)  # the supervisor forwards it to both processes
    assert pool.wait(60) == 0
    assert log_text(pool).count("inference pool process stopped") == 2
