"""One command runs a job through every fault the pipeline is built to survive.

    python -m pytest -m chaos -s

A private PostgreSQL server and a private redis-server, one worker process per queue and
`oceanstream reconcile --loop` run as they would in production. Two jobs of healthy clips go
through:

1. job A with every worker up: PostgreSQL is stopped and started again while it is being
   extracted, and the inference pool is SIGKILLed while it holds a batch (a new one is
   started, as a supervisor would);
2. job B while the flow stage is down for `OCEANSTREAM_CHAOS_OUTAGE_S` (default 300 s):
   during the outage Redis is killed and started again (every queued message lost) and
   poison messages are pushed onto every queue.

At the end every video is `done` with exactly one prediction, no healthy video failed, every
poison message is in its queue's dead-letter list exactly once, and every worker is alive.
The time to recovery from each fault is printed (docs/reliability.md quotes it).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.chaos.faults import Timeline, poll_until, push_poison
from tests.clips import write_talking_head
from tests.support.cluster import Cluster
from tests.support.private_postgres import PrivatePostgres
from tests.support.redis import RedisServer
from tests.support.services import ROOT
from workers.services.dead_letters import counts

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = float(os.environ.get("OCEANSTREAM_CHAOS_OUTAGE_S", "300"))
QUEUES = ("ingest", "faces", "flow", "inference")
CLIPS_PER_JOB = 8
# The reconciler's deadline and period: short, so the outage spans many of its rounds.
RECONCILE_OLDER_THAN_S = 10
RECONCILE_EVERY_S = 2


@pytest.fixture
def chaos_cluster(tmp_path: Path) -> Iterator[Cluster]:
    with PrivatePostgres(tmp_path / "pg") as postgres, RedisServer(tmp_path) as broker:
        home = tmp_path / "home"
        home.mkdir()
        nodes = Cluster(
            home=home,
            database_url=postgres.url,
            broker_url=broker.url,
            # Small batches: the pool is more often caught holding one.
            extra_env={"OCEANSTREAM_MAX_BATCH_SIZE": "4"},
        )
        nodes.postgres = postgres  # type: ignore[attr-defined]
        nodes.broker = broker  # type: ignore[attr-defined]
        migrated = nodes.cli("db", "upgrade")
        assert migrated.returncode == 0, migrated.stderr
        try:
            yield nodes
        finally:
            nodes.stop_workers(signal.SIGKILL)


@pytest.fixture
def timeline(capsys: pytest.CaptureFixture[str]) -> Iterator[Timeline]:
    """The faults of the run, printed at the end whether the run passed or not."""
    faults = Timeline()
    yield faults
    with capsys.disabled():
        print("\n" + faults.table(), flush=True)


def spawn(cluster: Cluster, name: str, *args: str) -> subprocess.Popen[bytes]:
    """`oceanstream ARGS` in the background, its output in a log file under the home."""
    log = cluster.home / f"{name}-{uuid.uuid4().hex[:6]}.log"
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", *args],
        env=cluster.env,
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    process.log_path = log  # type: ignore[attr-defined]
    cluster.workers.append(process)
    return process


def start_workers(cluster: Cluster, *queues: str) -> dict[str, subprocess.Popen[bytes]]:
    """One worker per queue, started together, returned once each has warmed its model."""
    started = {q: spawn(cluster, f"worker-{q}", "worker", "--queues", q) for q in queues}
    for queue, process in started.items():
        poll_until(lambda p=process: warmed_or_gone(p), 240, f"the {queue} worker to start")
        assert process.poll() is None, process.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
    return started


def warmed_or_gone(process: subprocess.Popen[bytes]) -> bool:
    log: Path = process.log_path  # type: ignore[attr-defined]
    return process.poll() is not None or b"process ready with model" in log.read_bytes()


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    os.killpg(process.pid, sig)
    process.wait(60)


def kill_mid_batch(cluster: Cluster, pool: subprocess.Popen[bytes]) -> bool:
    """Let the paused pool run in short steps; SIGKILL it once it holds a claimed batch.

    Returns whether it was caught holding one (it is killed either way).
    """
    deadline = time.monotonic() + 60
    caught = False
    while not caught and time.monotonic() < deadline:
        os.killpg(pool.pid, signal.SIGCONT)
        time.sleep(0.01)
        os.killpg(pool.pid, signal.SIGSTOP)
        caught = bool(
            cluster.query(
                "SELECT id FROM segments WHERE status = 'inference' "
                "AND coalesce((deliveries::jsonb ->> 'inference')::int, 0) > 0"
            )
        )
    os.killpg(pool.pid, signal.SIGKILL)
    pool.wait(30)
    return caught


def make_clips(folder: Path, prefix: str, seed: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(CLIPS_PER_JOB):
        write_talking_head(folder / f"{prefix}_{i}.mp4", seconds=1.5, seed=seed + i)
    return folder


def submit(cluster: Cluster, folder: Path) -> str:
    done = cluster.cli("submit", str(folder))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def job_statuses(cluster: Cluster, job_id: str) -> list[str]:
    rows = cluster.query(
        "SELECT v.status FROM videos v JOIN job_videos j ON j.video_id = v.id WHERE j.job_id = :j",
        j=job_id,
    )
    return [status for (status,) in rows]


def segment_statuses(cluster: Cluster, job_id: str) -> list[str]:
    """The statuses of the segments of the job's videos (one each: the clips are short)."""
    rows = cluster.query(
        "SELECT s.status FROM segments s JOIN job_videos j ON j.video_id = s.video_id "
        "WHERE j.job_id = :j",
        j=job_id,
    )
    return [status for (status,) in rows]


def safe_statuses(cluster: Cluster, job_id: str) -> list[str]:
    """The job's statuses, or none while the database is down."""
    try:
        return job_statuses(cluster, job_id)
    except Exception:
        return []


def safe_segment_statuses(cluster: Cluster, job_id: str) -> list[str]:
    """The job's segments' statuses, or none while the database is down."""
    try:
        return segment_statuses(cluster, job_id)
    except Exception:
        return []


def all_final(cluster: Cluster, job_id: str) -> bool:
    found = safe_statuses(cluster, job_id)
    return len(found) == CLIPS_PER_JOB and all(s in ("done", "no_face", "failed") for s in found)


def dead_letter_counts(client: redis.Redis) -> dict[str, int]:
    return counts(client, QUEUES)


def test_a_job_survives_every_fault(
    chaos_cluster: Cluster, tmp_path: Path, timeline: Timeline
) -> None:
    cluster = chaos_cluster
    postgres: PrivatePostgres = cluster.postgres  # type: ignore[attr-defined]
    broker: RedisServer = cluster.broker  # type: ignore[attr-defined]
    workers = start_workers(cluster, *QUEUES)
    reconciler = spawn(
        cluster,
        "reconcile",
        "reconcile",
        "--loop",
        str(RECONCILE_EVERY_S),
        "--older-than",
        str(RECONCILE_OLDER_THAN_S),
    )

    # 1. Job A with every worker up: a database restart while it is being extracted, then
    # the pool killed while it holds a batch. The pool is paused meanwhile, so job A's
    # inference messages are waiting for it when it goes on.
    pool = workers["inference"]
    os.killpg(pool.pid, signal.SIGSTOP)
    job_a = submit(cluster, make_clips(tmp_path / "a", "a", seed=300))
    restart = timeline.begin("PostgreSQL stopped 20 s and restarted")
    postgres.stop()
    time.sleep(20)
    postgres.start()
    restart.cleared = time.monotonic()
    restart.recovered = poll_until(
        lambda: safe_segment_statuses(cluster, job_a) == ["inference"] * CLIPS_PER_JOB,
        300,
        "job A's feature stages to finish after the database restart",
    )
    restart.note = "until job A's feature stages all finished"

    kill = timeline.begin("inference pool SIGKILLed mid-batch")
    kill.note = "held a batch" if kill_mid_batch(cluster, pool) else "between batches"
    kill.note += "; a new pool started at once; until job A is final"
    workers["inference"] = start_workers(cluster, "inference")["inference"]
    kill.cleared = time.monotonic()
    kill.recovered = poll_until(lambda: all_final(cluster, job_a), 600, "job A to finish")

    # 2. Job B while the flow stage is down: Redis lost and poison on every queue meanwhile.
    outage = timeline.begin(f"flow stage down {OUTAGE_S:.0f} s")
    stop(workers.pop("flow"))
    job_b = submit(cluster, make_clips(tmp_path / "b", "b", seed=400))
    client = redis.Redis.from_url(broker.url)

    def waiting_on_flow() -> bool:
        rows = cluster.query(
            "SELECT s.status, s.faces_ready FROM segments s JOIN job_videos j "
            "ON j.video_id = s.video_id WHERE j.job_id = :j",
            j=job_b,
        )
        settled = len(rows) == CLIPS_PER_JOB and all(s == "extracting" and f for s, f in rows)
        return settled and client.llen("flow") >= CLIPS_PER_JOB

    poll_until(waiting_on_flow, 300, "job B to wait on the flow stage")
    lost = timeline.begin("Redis killed and restarted (queues lost)")
    broker.kill()
    time.sleep(3)
    broker.start()
    lost.cleared = time.monotonic()
    lost.recovered = poll_until(waiting_on_flow, 300, "the flow messages to be resent")
    lost.note = "until every lost flow message is queued again"

    poison = timeline.begin("4 poison messages on every queue")
    pushed = {queue: push_poison(client, queue) for queue in QUEUES}
    poison.cleared = time.monotonic()
    poison.recovered = poll_until(
        lambda: all(dead_letter_counts(client)[q] == pushed[q] for q in QUEUES if q != "flow"),
        120,
        "the poison messages of the running queues to be dead-lettered",
    )
    poison.note = "until dead-lettered (flow's: when flow is back)"

    remaining = OUTAGE_S - (time.monotonic() - outage.started)
    time.sleep(max(remaining, 0))
    workers["flow"] = start_workers(cluster, "flow")["flow"]
    outage.cleared = time.monotonic()
    outage.recovered = poll_until(lambda: all_final(cluster, job_b), 600, "job B to finish")
    outage.note = "from the flow worker's start to job B final"

    # Every video done, with exactly one prediction; nothing healthy failed.
    for job in (job_a, job_b):
        assert job_statuses(cluster, job) == ["done"] * CLIPS_PER_JOB, cluster.query(
            "SELECT v.name, v.status, v.error FROM videos v JOIN job_videos j "
            "ON j.video_id = v.id WHERE j.job_id = :j",
            j=job,
        )
    per_video = cluster.query("SELECT count(*) FROM predictions GROUP BY video_id")
    assert sorted(n for (n,) in per_video) == [1] * (2 * CLIPS_PER_JOB)
    # Every poison message dead-lettered exactly once, flow's included.
    poll_until(lambda: dead_letter_counts(client) == pushed, 60, "flow's poison dead-lettered")
    # No worker died: the only process that exited is the pool this test killed.
    assert reconciler.poll() is None, reconciler.log_path.read_text()[-3000:]  # type: ignore[attr-defined]
    for queue, process in workers.items():
        assert process.poll() is None, f"{queue} worker died"
