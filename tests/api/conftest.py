"""The API under test: a migrated PostgreSQL database, Redis, an API process, tenants' keys.

Everything is package-scoped (an API process, and the workers the pipeline test starts,
take seconds to start); each test makes its own jobs. The broker is a redis-server of the
package's own: its workers live across these tests, and on the machine's Redis they would
take the messages of a later test that happened to pick the same database number.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import (
    MAX_FILE_BYTES,
    MAX_FILES,
    MAX_REQUEST_BYTES,
    ApiServer,
    Keys,
    create_key,
    key_id,
)
from tests.support.cluster import Cluster
from tests.support.postgres import POSTGRES_URL, open_postgres
from tests.support.redis import RedisServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="package")
def api_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    databases = open_postgres(POSTGRES_URL)
    home = tmp_path_factory.mktemp("api") / "home"
    home.mkdir()
    broker = RedisServer(home.parent)
    broker.start()
    try:
        nodes = Cluster(
            home=home,
            database_url=databases.create("api").render_as_string(hide_password=False),
            broker_url=broker.url,
            extra_env={
                "OCEANSTREAM_API_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
                "OCEANSTREAM_API_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
                "OCEANSTREAM_API_MAX_FILES": str(MAX_FILES),
                "OCEANSTREAM_API_UPLOAD_DIR": str(home / "spool"),
                "OCEANSTREAM_CALLBACK_BACKOFF_S": "0.5",
                # The test receiver listens on 127.0.0.1.
                "OCEANSTREAM_CALLBACK_ALLOW_PRIVATE": "1",
            },
        )
        migrated = nodes.cli("db", "upgrade")
        assert migrated.returncode == 0, migrated.stderr
        try:
            yield nodes
        finally:
            nodes.stop_workers()
    finally:
        broker.kill()
        databases.drop_all()


@pytest.fixture(scope="package")
def keys(api_cluster: Cluster) -> Keys:
    revoked = create_key(api_cluster, "gamma")
    gone = api_cluster.cli("keys", "revoke", key_id(api_cluster, "gamma"))
    assert gone.returncode == 0, gone.stderr
    return Keys(
        alpha=create_key(api_cluster, "alpha"),
        beta=create_key(api_cluster, "beta"),
        revoked=revoked,
    )


@pytest.fixture(scope="package")
def api(api_cluster: Cluster, keys: Keys) -> Iterator[ApiServer]:
    server = ApiServer(api_cluster)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def pipeline_workers(api_cluster: Cluster) -> Cluster:
    """A worker for every pipeline queue and a callback worker, for the rest of the session."""
    from tests.support.api import start_callback_worker

    api_cluster.start_worker("ingest,faces,flow,inference")
    start_callback_worker(api_cluster)
    return api_cluster


@pytest.fixture(scope="package")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.clips import write_faceless, write_random_bytes, write_talking_head

    folder = tmp_path_factory.mktemp("clips")
    return {
        "good": write_talking_head(folder / "good.mp4", seconds=1.5, seed=11),
        "faceless": write_faceless(folder / "faceless.mp4", seconds=1.5, seed=12),
        "broken": write_random_bytes(folder / "broken.mp4", n=50_000, seed=13),
    }
