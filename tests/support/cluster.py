"""Clusters of real processes: `oceanstream` CLI calls and worker processes sharing one
database, broker and storage folder; the fixtures that start them on a fresh database."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.redis import RedisServer
from tests.support.services import ROOT, wait_for


@dataclass
class Cluster:
    """Environment shared by the CLI and the workers of one test: database, broker, storage."""

    home: Path
    database_url: str
    broker_url: str
    extra_env: dict[str, str] = field(default_factory=dict)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _engine: sa.Engine | None = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "OCEANSTREAM_HOME": str(self.home),
            "OCEANSTREAM_DATABASE_URL": self.database_url,
            "OCEANSTREAM_BROKER_URL": self.broker_url,
            "OCEANSTREAM_STORAGE_URL": f"file://{self.home / 'storage'}",
            "OCEANSTREAM_NUM_FRAMES": "8",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "workers.cli", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start_worker(self, queues: str, concurrency: int = 1) -> subprocess.Popen[bytes]:
        log = self.home / f"worker-{queues.replace(',', '-')}-{uuid.uuid4().hex[:6]}.log"
        handle = open(log, "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "workers.cli",
                "worker",
                "--queues",
                queues,
                "--concurrency",
                str(concurrency),
            ],
            env=self.env,
            cwd=ROOT,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        process.log_path = log  # type: ignore[attr-defined]
        self.workers.append(process)
        # Every process logs this once its models are loaded and warmed.
        processes = 1 if concurrency == 1 or queues == "inference" else concurrency

        def warmed() -> bool:
            return log.read_bytes().count(b"process ready with model") >= processes

        wait_for(lambda: warmed() or process.poll() is not None, 180, f"worker {queues} to start")
        if process.poll() is not None:
            raise RuntimeError(f"worker {queues} exited:\n{log.read_text()[-3000:]}")
        return process

    def stop_workers(self, sig: int = signal.SIGTERM) -> None:
        for process in self.workers:
            if process.poll() is None:
                os.killpg(process.pid, sig)
        for process in self.workers:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        self.workers.clear()

    def worker_logs(self, lines: int = 40) -> str:
        """The last lines of each worker's log: what a test that timed out shows."""
        tails = []
        for process in self.workers:
            path: Path | None = getattr(process, "log_path", None)
            if path is not None and path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {path.name}\n" + "\n".join(tail))
        return "\n".join(tails)

    def query(self, sql: str, **params: object) -> list[tuple]:
        if self._engine is None:
            self._engine = sa.create_engine(self.database_url, poolclass=sa.pool.NullPool)
        with self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql), params)]

    def wait_job(self, job_id: str, timeout: float = 240) -> dict[str, int]:
        final = ("done", "no_face", "failed")

        def finished() -> bool:
            rows = self.query(
                "SELECT v.status FROM videos v JOIN job_videos j ON j.video_id = v.id "
                "WHERE j.job_id = :job",
                job=job_id,
            )
            return bool(rows) and all(status in final for (status,) in rows)

        try:
            wait_for(finished, timeout, f"job {job_id} to finish", every=0.5)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.worker_logs()}") from None
        rows = self.query(
            "SELECT v.status, count(*) FROM videos v JOIN job_videos j ON j.video_id = v.id "
            "WHERE j.job_id = :job GROUP BY v.status",
            job=job_id,
        )
        return {status: count for status, count in rows}


@contextlib.contextmanager
def running_cluster(
    home: Path, database_url: str, broker_url: str, stop: int = signal.SIGTERM
) -> Iterator[Cluster]:
    """A migrated database and the environment for CLI calls and workers; workers stopped after."""
    home.mkdir()
    nodes = Cluster(home=home, database_url=database_url, broker_url=broker_url)
    migrated = nodes.cli("db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    try:
        yield nodes
    finally:
        nodes.stop_workers(stop)


@pytest.fixture
def cluster(tmp_path: Path, postgres_database: str, shared_redis_url: str) -> Iterator[Cluster]:
    """Workers and CLI on the machine's Redis (a random database number) and PostgreSQL."""
    with running_cluster(tmp_path / "home", postgres_database, shared_redis_url) as nodes:
        yield nodes


@pytest.fixture
def isolated_cluster(
    tmp_path: Path, postgres_database: str, redis_server: RedisServer
) -> Iterator[Cluster]:
    """Like `cluster`, with a redis-server of the test's own: no other test run's workers can
    take its messages. Workers are killed at the end (the test is over)."""
    with running_cluster(
        tmp_path / "home", postgres_database, redis_server.url, stop=signal.SIGKILL
    ) as nodes:
        yield nodes
