"""Passwords in the database and broker URLs and Flower's never reach logs or output."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.clips import write_faceless
from tests.support.cluster import Cluster, running_cluster
from tests.support.redis import RedisServer
from tests.support.services import ROOT, free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BROKER_PW = "brokerS3cret"
DATABASE_PW = "dbS3cret"
FLOWER_PW = "flowerS3cret"
WRONG_PW = "wrongS3cret"
SECRETS = (BROKER_PW, DATABASE_PW, FLOWER_PW, WRONG_PW)


@pytest.fixture
def secret_cluster(tmp_path: Path, postgres_database: str) -> Iterator[Cluster]:
    """A cluster whose database URL, broker URL and Flower settings all carry a password
    (PostgreSQL trusts local connections, so any password is accepted)."""
    database = make_url(postgres_database).set(password=DATABASE_PW)
    with RedisServer(tmp_path, password=BROKER_PW) as redis_server:
        broker = redis_server.url
        with running_cluster(
            tmp_path / "home", database.render_as_string(hide_password=False), broker
        ) as nodes:
            nodes.extra_env.update(
                {
                    "OCEANSTREAM_FLOWER_PASSWORD": FLOWER_PW,
                    "OCEANSTREAM_METRICS_PORT": str(free_port()),
                }
            )
            nodes.redis = redis_server  # type: ignore[attr-defined]
            yield nodes


def cli_with(cluster: Cluster, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env={**cluster.env, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def flower_output(cluster: Cluster, log: Path) -> str:
    """What `oceanstream flower` prints from start until it serves, then stops."""
    port = free_port()
    with open(log, "wb") as handle:
        flower = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "flower", "--port", str(port)],
            env=cluster.env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: serves(f"http://127.0.0.1:{port}/healthcheck"), 60, "flower")
    finally:
        flower.terminate()
        flower.wait(30)
    return log.read_text()


def serves(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def test_no_password_in_worker_logs_status_or_error_lines(
    secret_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = secret_cluster
    redis_server: RedisServer = cluster.redis  # type: ignore[attr-defined]
    worker = cluster.start_worker("ingest,faces,flow,inference")
    clip = write_faceless(tmp_path / "faceless.mp4", seconds=1.0, seed=3)
    submitted = cluster.cli("submit", str(clip))
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().splitlines()[-1]
    assert cluster.wait_job(job, timeout=180) == {"no_face": 1}
    shown = [submitted.stdout + submitted.stderr]
    for args in (("status", job), ("status", job, "--json")):
        done = cluster.cli(*args)
        assert done.returncode == 0, done.stderr
        shown.append(done.stdout + done.stderr)
    assert json.loads(shown[-1])["counts"]["no_face"] == 1

    dead_port = free_port()
    dead_database = make_url(cluster.database_url).set(port=dead_port)
    failures = {
        "wrong broker password": cli_with(
            cluster,
            {"OCEANSTREAM_BROKER_URL": redis_server.url_with(WRONG_PW)},
            "submit",
            str(clip),
        ),
        "broker down": cli_with(
            cluster,
            {"OCEANSTREAM_BROKER_URL": f"redis://:{BROKER_PW}@127.0.0.1:{dead_port}/0"},
            "submit",
            str(clip),
        ),
        "database down, reconcile": cli_with(
            cluster,
            {"OCEANSTREAM_DATABASE_URL": dead_database.render_as_string(hide_password=False)},
            "reconcile",
        ),
        "database down": cli_with(
            cluster,
            {"OCEANSTREAM_DATABASE_URL": dead_database.render_as_string(hide_password=False)},
            "status",
            job,
        ),
    }
    for what, failed in failures.items():
        assert failed.returncode == 1, (what, failed.stderr)
        assert "***" in failed.stderr and "Traceback" not in failed.stderr, (what, failed.stderr)
        shown.append(failed.stdout + failed.stderr)

    shown.append(flower_output(cluster, tmp_path / "flower.log"))
    cluster.stop_workers()
    log = Path(worker.log_path).read_text()  # type: ignore[attr-defined]
    assert "redis://:**@127.0.0.1" in log  # the broker is named in the banner, masked
    assert "metrics on http://127.0.0.1:" in log  # not on every interface
    shown.append(log)
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
