"""Redis for the tests: a database of the machine's Redis of the run's own, or a redis-server of
the test's own (which a test may kill and start again)."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.services import free_port, port_open, service_unavailable, wait_for

REDIS_URL = os.environ.get("OCEANSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

# Database numbers of the machine's Redis handed out by `machine_redis_database` and not
# given back yet (their holders may not have connected anything to them so far).
_HELD_DATABASES: set[int] = set()


@contextlib.contextmanager
def machine_redis_database() -> Iterator[str]:
    """The machine's Redis on a database number nobody uses, emptied first.

    Nobody: no client connected to it (a worker of another test, of this run or of another
    run on the machine, consuming there would take this test's messages) and not held by a
    test of this run that has not connected yet.
    """
    where = urlsplit(REDIS_URL)
    host, port = where.hostname or "127.0.0.1", where.port or 6379
    if not port_open(host, port):
        service_unavailable(f"Redis on {host}:{port} is not reachable")
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


@contextlib.contextmanager
def own_redis_server(workdir: Path, password: str | None = None) -> Iterator[RedisServer]:
    """A started `RedisServer`, killed on exit; fails in CI (skips elsewhere) without
    redis-server."""
    if not shutil.which("redis-server"):
        service_unavailable("redis-server is not installed")
    with RedisServer(workdir, password=password) as server:
        yield server


@pytest.fixture
def shared_redis_url() -> Iterator[str]:
    """The machine's Redis, on a database number no other client uses, emptied first."""
    with machine_redis_database() as url:
        yield url


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server on a free port, which a test may kill and start again."""
    with own_redis_server(tmp_path) as server:
        yield server


@pytest.fixture
def broker(redis_server: RedisServer) -> str:
    """The URL of the test's own redis-server."""
    return redis_server.url
