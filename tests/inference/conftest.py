"""Fixtures shared by the inference tests: a redis-server of the test's own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.db.postgres import service_unavailable
from tests.integration.harness import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server on a free port, which a test may kill and start again."""
    if not shutil.which("redis-server"):
        service_unavailable("redis-server is not installed")
    with RedisServer(tmp_path) as server:
        yield server


@pytest.fixture
def broker(redis_server: RedisServer) -> str:
    return redis_server.url
