"""The API on the embedded default: the SQLite file in OCEANSTREAM_HOME, local storage.

A new user analyses a clip in process (`oceanstream analyze`), makes a key and reads the
result over HTTP: reads go through the thread pool there (no PostgreSQL connection of the
API's own), are kept and checked like on PostgreSQL, revalidate with their ETag (304) in one
process and in `serve --workers 2`, and erasure is seen on the next read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clips import write_talking_head
from tests.support.api import ApiServer, create_key, result_reads
from tests.support.cluster import Cluster
from tests.support.redis import machine_redis_database

pytestmark = pytest.mark.integration


def in_files(paths: list[Path], needle: bytes) -> int:
    return sum(path.read_bytes().count(needle) for path in paths if path.exists())


@pytest.fixture
def default_cluster(tmp_path: Path) -> Iterator[Cluster]:
    home = tmp_path / "home"
    home.mkdir()
    with machine_redis_database() as broker:
        # An empty database URL is the default: <home>/oceanstream.db.
        yield Cluster(home=home, database_url="", broker_url=broker)


def test_a_result_analysed_on_sqlite_is_read_kept_and_erased_through_the_api(
    default_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = default_cluster
    clip = write_talking_head(tmp_path / "talk.mp4", seconds=1.5, seed=5)
    analysed = cluster.cli("analyze", str(clip), "--json")
    assert analysed.returncode == 0, analysed.stderr
    expected = json.loads(analysed.stdout)
    expected = expected[0] if isinstance(expected, list) else expected
    assert (cluster.home / "oceanstream.db").is_file()
    mine, theirs = create_key(cluster, "default"), create_key(cluster, "someone-else")

    api = ApiServer(cluster)
    api.start()
    try:
        path = f"/v1/videos/{expected['video_id']}"
        with api.client(mine) as client, api.client(theirs) as other:
            first, second = client.get(path), client.get(path)
            assert first.status_code == second.status_code == 200, first.text
            assert first.json() == second.json()
            assert first.json()["traits"] == expected["traits"]
            assert first.json()["model_trained"] is False
            assert result_reads(client) == {"cache": 1.0, "database": 1.0}
            assert other.get(path).status_code == 404
            etag = first.headers["etag"]
            assert second.headers["etag"] == etag and etag.startswith('"')
            assert first.headers["cache-control"] == "private, no-cache"
            unchanged = client.get(path, headers={"If-None-Match": etag})
            assert unchanged.status_code == 304 and unchanged.content == b""
            assert unchanged.headers["etag"] == etag
            stale = client.get(path, headers={"If-None-Match": '"an-older-result"'})
            assert stale.status_code == 200 and stale.json() == first.json()
            # Another tenant learns nothing from a valid ETag either.
            assert other.get(path, headers={"If-None-Match": etag}).status_code == 404
    finally:
        api.stop()

    # Two API processes (uvicorn's workers) on one port give the same ETag: the stamp's.
    workers = ApiServer(cluster, workers=2)
    workers.start()
    try:
        assert len(workers.children()) >= 2
        with workers.client(mine) as client:
            answers = [client.get(path, headers={"If-None-Match": etag}) for _ in range(6)]
            assert {answer.status_code for answer in answers} == {304}

            database = [cluster.home / "oceanstream.db", cluster.home / "oceanstream.db-wal"]
            needles = {
                "video id": expected["video_id"].encode(),
                "openness": struct.pack(">d", expected["traits"]["openness"]),
            }
            assert all(in_files(database, needle) for needle in needles.values())
            assert client.delete(path).status_code == 204
            # Gone from the database files, not only from the rows, when the 204 arrives.
            found = {what: in_files(database, needle) for what, needle in needles.items()}
            assert not any(found.values()), found
            assert client.get(path, headers={"If-None-Match": etag}).status_code == 404
            assert client.get(path).status_code == 404
    finally:
        workers.stop()
    for log in (api.log_path, workers.log_path):
        assert "Traceback" not in log.read_text()


def test_serve_refuses_a_bad_worker_count_or_read_switch_with_one_line(
    default_cluster: Cluster,
) -> None:
    refused = default_cluster.cli("serve", "--workers", "0")
    assert refused.returncode == 2
    assert "--workers" in refused.stderr and "Traceback" not in refused.stderr
    default_cluster.extra_env["OCEANSTREAM_API_READ_PATH_OFF"] = '["flights"]'
    unknown = default_cluster.cli("serve")
    assert unknown.returncode == 2
    assert "OCEANSTREAM_API_READ_PATH_OFF" in unknown.stderr
    assert "Traceback" not in unknown.stderr
