"""Fixtures for the distributed pipeline: a fresh PostgreSQL database, Redis, clips."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.db.postgres import POSTGRES_URL, open_postgres
from tests.integration.harness import Cluster, RedisServer, machine_redis_database

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    databases = open_postgres(POSTGRES_URL)
    try:
        yield databases.create("it").render_as_string(hide_password=False)
    finally:
        databases.drop_all()


@pytest.fixture
def shared_redis_url() -> Iterator[str]:
    """The machine's Redis, on a database number no other client uses, emptied first."""
    with machine_redis_database() as url:
        yield url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server on a free port, which a test may kill and start again."""
    with RedisServer(tmp_path) as server:
        yield server


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
    tmp_path: Path, postgres_database: str, own_redis: RedisServer
) -> Iterator[Cluster]:
    """Like `cluster`, with a redis-server of the test's own: no other test run's workers can
    take its messages. Workers are killed at the end (the test is over)."""
    with running_cluster(
        tmp_path / "home", postgres_database, own_redis.url, stop=signal.SIGKILL
    ) as nodes:
        yield nodes
