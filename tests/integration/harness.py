"""Real processes for the integration tests: redis-server, `oceanstream worker`, Flower."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import REDIS_URL, port_open
from tests.db.postgres import service_unavailable

ROOT = Path(__file__).resolve().parents[2]

# Database numbers of the machine's Redis handed out by `machine_redis_database` and not
# given back yet (their holders may not have connected anything to them so far).
_HELD_DATABASES: set[int] = set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def machine_redis_database() -> Iterator[str]:
    """The machine's Redis on a database number nobody uses, emptied first.

    Nobody: no client connected to it (a worker of another test, of this run or of another
    run on the machine, consuming there would take this test's messages) and not held by a
    test of this run that has not connected yet.
    """
    if not port_open("127.0.0.1", 6379):
        service_unavailable("Redis on 127.0.0.1:6379 is not reachable")
    import redis

    base = REDIS_URL.rsplit("/", 1)[0]
    first, last = _database_range()
    with redis.Redis.from_url(f"{base}/0") as client:
        busy = {int(entry["db"]) for entry in client.client_list()} | _HELD_DATABASES
    free = [number for number in range(first, last + 1) if number not in busy]
    if not free:
        raise RuntimeError(f"every database {first}-{last} of the Redis at {base} has clients")
    number = random.choice(free)
    _HELD_DATABASES.add(number)
    url = f"{base}/{number}"
    try:
        with redis.Redis.from_url(url) as client:
            client.flushdb()
        yield url
    finally:
        _HELD_DATABASES.discard(number)


def _database_range() -> tuple[int, int]:
    """The database numbers this test run may use: `OCEANSTREAM_TEST_REDIS_DBS` ("8-15"),
    so that two pytest processes run side by side (`python -m tests`) never pick the same
    one between one's choice and its workers' connecting; 1-15 without it."""
    first, _, last = os.environ.get("OCEANSTREAM_TEST_REDIS_DBS", "1-15").partition("-")
    return int(first), int(last or first)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class RedisServer:
    """A redis-server of the test's own, on a free port, that can be killed and restarted."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.url_with(self.password)

    def url_with(self, password: str | None) -> str:
        """This server's URL carrying `password` (a wrong one, to test refusals)."""
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 10, "redis-server to accept connections")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                auth = f"AUTH {self.password}\r\n" if self.password else ""
                sock.sendall(f"{auth}PING\r\n".encode())
                return b"+PONG" in sock.recv(64)
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()


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
