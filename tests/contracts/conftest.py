"""Contract tests: what workers/broker/ assumes of kombu and Flower, checked on the real thing.

They fail loudly when an upgrade of kombu or Flower changes a private detail the workers rely
on; pyproject.toml pins the minor versions they last passed with.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.db.postgres import service_unavailable
from tests.integration.harness import RedisServer


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """The URL of a redis-server of the test's own."""
    if not shutil.which("redis-server"):
        service_unavailable("redis-server is not installed")
    with RedisServer(tmp_path) as server:
        yield server.url
