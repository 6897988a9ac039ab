"""Outages of minutes, with real workers: a stopped stage, a stopped database.

* A stage whose workers are stopped while `oceanstream reconcile --loop` sweeps with a tiny
  deadline finds one message per segment when it comes back (the reconciler resends only
  what the broker lost), and the video ends `done`, not failed for "too many deliveries".
* A PostgreSQL server of the test's own stopped for 45 s while a worker has work: the stage
  retries until it is back and the video ends `done`; the reconciler's loop reports one line
  per failed round and goes on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from tests.clips import write_talking_head
from tests.support.cluster import Cluster, running_cluster
from tests.support.private_postgres import PrivatePostgres
from tests.support.redis import RedisServer
from tests.support.services import ROOT, wait_for
from workers.broker.kombu_redis import KombuRedisLayout
from workers.broker.queued_messages import queued_messages

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINAL = ("done", "no_face", "failed")


def submit(cluster: Cluster, path: Path) -> str:
    done = cluster.cli("submit", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def video_of(cluster: Cluster, job_id: str) -> dict[str, object]:
    ((video_id, status, error, deliveries),) = cluster.query(
        "SELECT v.id, v.status, v.error, v.deliveries FROM videos v "
        "JOIN job_videos j ON j.video_id = v.id WHERE j.job_id = :job",
        job=job_id,
    )
    return {"id": video_id, "status": status, "error": error, "deliveries": deliveries}


def segment_of(cluster: Cluster, job_id: str) -> dict[str, object] | None:
    """The job's video's only segment, or None before ingest planned it."""
    rows = cluster.query(
        "SELECT s.id, s.status, s.error, s.faces_ready, s.deliveries FROM segments s "
        "JOIN job_videos j ON j.video_id = s.video_id WHERE j.job_id = :job",
        job=job_id,
    )
    if not rows:
        return None
    ((segment_id, status, error, faces_ready, deliveries),) = rows
    return {
        "id": segment_id,
        "status": status,
        "error": error,
        "faces_ready": faces_ready,
        "deliveries": deliveries,
    }


def segment_status(cluster: Cluster, job_id: str) -> object:
    segment = segment_of(cluster, job_id)
    return None if segment is None else segment["status"]


class Reconciler:
    """`oceanstream reconcile --loop` as a process of its own, its lines in a file."""

    def __init__(self, cluster: Cluster, older_than: float, every: float) -> None:
        self.log = cluster.home / f"reconcile-{time.monotonic_ns()}.log"
        self._handle = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "workers.cli", "reconcile"),
                *("--older-than", str(older_than), "--loop", str(every)),
            ],
            env=cluster.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._handle,
        )

    def lines(self) -> list[str]:
        return self.log.read_text().splitlines()

    def rounds(self) -> int:
        return sum(line.startswith("reconcile: ") for line in self.lines())

    def wait_rounds(self, count: int, timeout: float = 60) -> None:
        goal = self.rounds() + count
        wait_for(lambda: self.rounds() >= goal, timeout, f"{count} reconcile rounds")

    def stop(self) -> list[str]:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._handle.close()
        return self.lines()


def queue_length(broker_url: str, queue: str) -> int:
    """Messages of `queue` on the broker: waiting, or taken and not acknowledged."""
    client = redis.Redis.from_url(broker_url)
    try:
        return len(queued_messages(client, KombuRedisLayout(), [queue]))
    finally:
        client.close()


def test_a_stopped_stage_gets_one_message_per_segment_and_fails_none(
    isolated_cluster: Cluster, redis_server: RedisServer, tmp_path: Path
) -> None:
    cluster = isolated_cluster
    clip = write_talking_head(tmp_path / "clip.mp4", seconds=1.5, seed=31)
    cluster.start_worker("ingest")  # the ingest queue also carries sampling
    job_id = submit(cluster, clip)
    wait_for(lambda: video_of(cluster, job_id)["status"] != "pending", 60, "ingest", every=0.1)
    wait_for(lambda: video_of(cluster, job_id)["status"] == "extracting", 60, "ingest to finish")
    wait_for(lambda: segment_status(cluster, job_id) == "extracting", 60, "sampling to finish")
    # Sampling commits, then sends faces and flow: stop the worker only once both are queued
    # (stopped in between, the reconciler would rightly resend them before the restart).
    wait_for(
        lambda: (
            queue_length(redis_server.url, "faces") == queue_length(redis_server.url, "flow") == 1
        ),
        60,
        "faces and flow to be queued",
    )
    cluster.stop_workers()  # the faces and flow workers are down from here on

    reconciler = Reconciler(cluster, older_than=0.2, every=0.3)
    try:
        reconciler.wait_rounds(4)
        redis_server.kill()  # the queued faces and flow messages are lost
        redis_server.start()
        reconciler.wait_rounds(10)
        assert reconciler.process.poll() is None, reconciler.lines()  # rode out the restart
    finally:
        lines = reconciler.stop()
    resends = [line for line in lines if line.startswith("reconcile: resent")]
    # Only what the broker lost is resent, once: both stages after the restart.
    assert resends.count("reconcile: resent 2 messages") == 1, lines
    assert set(resends) == {"reconcile: resent 0 messages", "reconcile: resent 2 messages"}
    assert "Traceback" not in reconciler.log.read_text()
    assert queue_length(redis_server.url, "faces") == queue_length(redis_server.url, "flow") == 1

    cluster.start_worker("faces")

    def faces_settled() -> bool:
        segment = segment_of(cluster, job_id)
        assert segment is not None
        return segment["status"] in FINAL or (
            bool(segment["faces_ready"]) and queue_length(redis_server.url, "faces") == 0
        )

    wait_for(faces_settled, 120, "the faces stage")
    assert segment_status(cluster, job_id) == "extracting"
    assert video_of(cluster, job_id)["status"] == "extracting"
    cluster.start_worker("flow,inference")
    assert cluster.wait_job(job_id, timeout=180) == {"done": 1}
    video, segment = video_of(cluster, job_id), segment_of(cluster, job_id)
    assert video["error"] is None and video["deliveries"] == {"ingest": 1}
    assert segment is not None and segment["status"] == "done" and segment["error"] is None
    assert segment["deliveries"] == {"sample": 1, "faces": 1, "flow": 1, "inference": 1}
    assert cluster.query("SELECT count(*) FROM segment_predictions") == [(1,)]
    assert cluster.query("SELECT count(*) FROM predictions") == [(1,)]


OUTAGE_S = 45


@pytest.mark.waits
def test_a_database_outage_is_ridden_out_by_the_stages_and_the_reconciler(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    clip = write_talking_head(tmp_path / "clip.mp4", seconds=1.5, seed=32)
    with (
        PrivatePostgres(tmp_path / "pg") as postgres,
        running_cluster(
            tmp_path / "home", postgres.url, redis_server.url, signal.SIGKILL
        ) as cluster,
    ):
        worker = cluster.start_worker("ingest,faces,flow,inference")
        # A deadline longer than the test: whatever finishes, the stages' retries did it.
        reconciler = Reconciler(cluster, older_than=600, every=1.0)
        try:
            reconciler.wait_rounds(1)
            # The worker is paused until the database is gone, so it meets the outage with
            # the video's first stage in hand, however fast the pipeline is.
            os.killpg(worker.pid, signal.SIGSTOP)
            job_id = submit(cluster, clip)
            postgres.stop()
            os.killpg(worker.pid, signal.SIGCONT)
            stopped = time.monotonic()
            time.sleep(OUTAGE_S)
            assert reconciler.process.poll() is None, reconciler.lines()
            postgres.start()
            restarted = time.monotonic()
            assert cluster.wait_job(job_id, timeout=150) == {"done": 1}
            recovered = time.monotonic() - restarted
            reconciler.wait_rounds(2)
            assert reconciler.process.poll() is None, reconciler.lines()
        finally:
            lines = reconciler.stop()
        assert cluster.query("SELECT count(*) FROM predictions") == [(1,)]
    worker_log = worker.log_path.read_text()  # type: ignore[attr-defined]
    assert "met an outage" in worker_log, worker_log[-3000:]
    failed_rounds = [line for line in lines if line.startswith("reconcile: error: ")]
    # One line per round in the outage (about one a second), nothing else.
    assert len(failed_rounds) >= OUTAGE_S // 3, lines
    assert all("cannot use the database at" in line for line in failed_rounds), failed_rounds
    assert lines[-1] == "reconcile: resent 0 messages", lines
    assert "Traceback" not in "\n".join(lines)
    print(
        f"outage {time.monotonic() - stopped:.0f} s in all; done {recovered:.1f} s after "
        f"the restart; {len(failed_rounds)} failed reconcile rounds"
    )
