"""The distributed pipeline with real Redis, PostgreSQL and `oceanstream worker` processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clips import (
    write_empty,
    write_faceless,
    write_random_bytes,
    write_talking_head,
    write_text,
    write_truncated,
)
from tests.support.cluster import Cluster, running_cluster
from tests.support.redis import RedisServer
from tests.support.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def make_batch(folder: Path, good: int, faceless: int) -> dict[str, str]:
    """Clips with the status each must end in."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for i in range(good):
        write_talking_head(folder / f"good_{i:02d}.mp4", seconds=1.5, seed=100 + i)
        expected[f"good_{i:02d}.mp4"] = "done"
    for i in range(faceless):
        write_faceless(folder / f"faceless_{i}.mp4", seconds=1.5, seed=200 + i)
        expected[f"faceless_{i}.mp4"] = "no_face"
    return expected


def add_broken(folder: Path) -> dict[str, str]:
    write_empty(folder / "empty.mp4")
    write_text(folder / "text.mp4")
    write_random_bytes(folder / "random.mp4", n=100_000, seed=5)
    write_talking_head(folder / "whole.avi", seconds=1.5, seed=7, fourcc="MJPG")
    write_truncated(folder / "whole.avi", folder / "truncated.avi", keep_fraction=0.3)
    (folder / "whole.avi").unlink()
    return {name: "failed" for name in ("empty.mp4", "text.mp4", "random.mp4", "truncated.avi")}


def submit(cluster: Cluster, *paths: Path) -> str:
    done = cluster.cli("submit", *map(str, paths))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def statuses(cluster: Cluster, job_id: str) -> dict[str, str]:
    rows = cluster.query(
        "SELECT v.name, v.status FROM videos v JOIN job_videos j ON j.video_id = v.id "
        "WHERE j.job_id = :job",
        job=job_id,
    )
    return dict(rows)


def predictions_per_video(cluster: Cluster) -> list[int]:
    return [
        n
        for (n,) in cluster.query(
            "SELECT count(*) FROM predictions GROUP BY video_id, model_version"
        )
    ]


def test_mixed_job_of_twenty_ends_with_every_video_final(cluster: Cluster, tmp_path: Path) -> None:
    expected = make_batch(tmp_path / "in", good=13, faceless=3)
    expected.update(add_broken(tmp_path / "in"))
    assert len(expected) == 20
    cluster.start_worker("ingest,faces,flow,inference", concurrency=2)
    job_id = submit(cluster, tmp_path / "in")
    counts = cluster.wait_job(job_id)
    assert counts == {"done": 13, "no_face": 3, "failed": 4}
    assert statuses(cluster, job_id) == expected
    assert predictions_per_video(cluster) == [1] * 13

    report = json.loads(cluster.cli("status", job_id, "--json").stdout)
    assert report["finished"] and report["counts"]["done"] == 13
    errors = {f["video"].rsplit("/", 1)[-1]: f["error"] for f in report["failures"]}
    assert "empty" in errors["empty.mp4"]
    assert set(errors) == {"empty.mp4", "text.mp4", "random.mp4", "truncated.avi"}
    rows = json.loads(cluster.cli("results", "--job", job_id, "--format", "json").stdout)
    assert len(rows) == 20
    assert all(r["model_trained"] is False for r in rows if r["status"] == "done")


def test_same_file_submitted_twice_is_stored_and_analysed_once(
    cluster: Cluster, tmp_path: Path
) -> None:
    clip = write_talking_head(tmp_path / "a.mp4", seconds=1.5, seed=1)
    copy = tmp_path / "copy_of_a.mp4"
    copy.write_bytes(clip.read_bytes())
    cluster.start_worker("ingest,faces,flow,inference")
    first = submit(cluster, clip)
    second = submit(cluster, copy, clip)
    cluster.wait_job(first)
    cluster.wait_job(second)
    assert cluster.query("SELECT count(*) FROM videos") == [(1,)]
    stored = list((cluster.home / "storage" / "videos").iterdir())
    assert len(stored) == 1
    assert predictions_per_video(cluster) == [1]


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def test_worker_child_killed_mid_task_still_one_prediction_each(
    cluster: Cluster, tmp_path: Path
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):  # long enough that the ingest queue's work is caught in progress
        write_talking_head(folder / f"long_{i}.mp4", seconds=12, fps=15, size=(640, 480), seed=i)
    cluster.start_worker("faces,flow,inference")
    # Queued before the ingest worker starts, so its work begins as it comes up rather than
    # while `submit` is still returning (on a loaded host that was after the ingest queue's
    # work for four short clips had ended).
    job_id = submit(cluster, folder)
    ingest = cluster.start_worker("ingest", concurrency=2)

    def ingesting() -> bool:
        # A video being probed, or a segment whose sampling (the ingest queue's longer task)
        # has not finished.
        return bool(
            cluster.query(
                "SELECT 1 FROM videos WHERE status = 'ingesting' "
                "UNION ALL SELECT 1 FROM segments WHERE status IN ('pending', 'ingesting')"
            )
        )

    wait_for(ingesting, 60, "a video or segment to be mid-ingest", every=0.005)
    children = child_pids(ingest.pid)
    assert children, "the prefork pool has no children"
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    assert cluster.wait_job(job_id) == {"done": 4}, cluster.query("SELECT name, error FROM videos")
    assert predictions_per_video(cluster) == [1] * 4


def test_whole_worker_killed_then_reconcile_finishes(cluster: Cluster, tmp_path: Path) -> None:
    expected = make_batch(tmp_path / "in", good=4, faceless=0)
    cluster.start_worker("ingest,faces,flow,inference")
    job_id = submit(cluster, tmp_path / "in")
    wait_for(
        lambda: bool(cluster.query("SELECT 1 FROM videos WHERE status <> 'pending'")),
        60,
        "work to start",
        every=0.01,
    )
    cluster.stop_workers(signal.SIGKILL)
    cluster.start_worker("ingest,faces,flow,inference")
    swept = cluster.cli("reconcile", "--older-than", "0")
    assert swept.returncode == 0, swept.stderr
    assert cluster.wait_job(job_id) == {"done": len(expected)}
    assert predictions_per_video(cluster) == [1] * len(expected)


def test_redis_restart_loses_queue_and_reconcile_recovers(
    tmp_path: Path, postgres_database: str, redis_server: RedisServer
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    cluster = Cluster(home=home, database_url=postgres_database, broker_url=redis_server.url)
    assert cluster.cli("db", "upgrade").returncode == 0
    expected = make_batch(tmp_path / "in", good=4, faceless=1)
    try:
        job_id = submit(cluster, tmp_path / "in")  # queued, no worker yet
        redis_server.kill()  # every queued message is gone
        redis_server.start()
        cluster.start_worker("ingest,faces,flow,inference")
        time.sleep(1.0)
        assert set(statuses(cluster, job_id).values()) == {"pending"}
        swept = cluster.cli("reconcile", "--older-than", "0")
        assert "resent 5" in swept.stderr, swept.stderr
        counts = cluster.wait_job(job_id)
    finally:
        cluster.stop_workers()
    assert counts == {"done": 4, "no_face": 1}
    assert statuses(cluster, job_id) == expected


def test_submit_wait_prints_the_analyze_contract(cluster: Cluster, tmp_path: Path) -> None:
    make_batch(tmp_path / "in", good=1, faceless=1)
    cluster.start_worker("ingest,faces,flow,inference")
    done = cluster.cli("submit", str(tmp_path / "in"), "--wait", "--json", "--timeout", "180")
    assert done.returncode == 0, done.stderr
    rows = {Path(r["video"]).name: r for r in json.loads(done.stdout)}
    assert rows["good_00.mp4"]["status"] == "done"
    assert rows["good_00.mp4"]["model_trained"] is False
    assert set(rows["good_00.mp4"]["traits"]) == {
        "openness",
        "conscientiousness",
        "extraversion",
        "agreeableness",
        "neuroticism",
    }
    assert rows["faceless_0.mp4"]["status"] == "no_face"
    assert rows["faceless_0.mp4"]["traits"] is None


@pytest.fixture
def sqlite_cluster(tmp_path: Path, shared_redis_url: str) -> Iterator[Cluster]:
    """Workers and CLI on a SQLite file in their home, as with OCEANSTREAM_DATABASE_URL unset."""
    url = f"sqlite:///{tmp_path / 'home' / 'oceanstream.db'}"
    with running_cluster(tmp_path / "home", url, shared_redis_url) as nodes:
        yield nodes


def test_submit_wait_on_sqlite_with_a_worker_per_stage_pair(
    sqlite_cluster: Cluster, tmp_path: Path
) -> None:
    expected = make_batch(tmp_path / "in", good=3, faceless=1)
    write_empty(tmp_path / "in" / "empty.mp4")
    expected["empty.mp4"] = "failed"
    # Several processes write the one SQLite file at once; each ingest pins the model version
    # inside its own transaction.
    sqlite_cluster.start_worker("ingest,flow")
    sqlite_cluster.start_worker("faces,inference")
    began = time.monotonic()
    done = sqlite_cluster.cli(
        "submit", str(tmp_path / "in"), "--wait", "--json", "--timeout", "150", timeout=200
    )
    assert done.returncode == 1, done.stderr  # the empty file failed
    rows = {Path(r["video"]).name: r for r in json.loads(done.stdout)}
    assert {name: r["status"] for name, r in rows.items()} == expected
    assert time.monotonic() - began < 120  # no transaction waited out the busy timeout
    assert predictions_per_video(sqlite_cluster) == [1] * 3
    error = rows["empty.mp4"]["error"]
    assert "empty" in error and str(tmp_path / "in" / "empty.mp4") in error
    assert "storage" not in error
