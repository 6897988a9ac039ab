"""The API while its PostgreSQL is stopped: 503 with Retry-After, naming no service.

A real `oceanstream serve` on a private PostgreSQL server and a private redis-server. With the
server stopped, `GET /v1/jobs` and `POST /v1/jobs` (the key check reads the database) answer
503 problem details with `Retry-After`, and neither the body nor a traceback in the log says
what failed; started again, the same key is served again. The time each 503 took and the
time to the first 200 after the restart are printed (docs/reliability.md quotes them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.api import ApiServer, create_key
from tests.support.cluster import Cluster
from tests.support.private_postgres import PrivatePostgres
from tests.support.redis import RedisServer
from tests.support.services import wait_for
from workers.api.auth import KEY_CACHE_S

pytestmark = [pytest.mark.chaos, pytest.mark.integration]


@pytest.fixture
def outage_api(tmp_path: Path) -> Iterator[tuple[ApiServer, PrivatePostgres, str]]:
    with PrivatePostgres(tmp_path / "pg") as postgres, RedisServer(tmp_path) as broker:
        home = tmp_path / "home"
        home.mkdir()
        nodes = Cluster(home=home, database_url=postgres.url, broker_url=broker.url)
        migrated = nodes.cli("db", "upgrade")
        assert migrated.returncode == 0, migrated.stderr
        key = create_key(nodes, "alpha")
        api = ApiServer(nodes)
        api.start()
        try:
            yield api, postgres, key
        finally:
            api.stop()


def test_the_api_answers_503_with_retry_after_while_the_database_is_down(
    outage_api: tuple[ApiServer, PrivatePostgres, str], capsys: pytest.CaptureFixture[str]
) -> None:
    api, postgres, key = outage_api
    with api.client(key) as client:
        assert client.get("/v1/jobs").status_code == 200
        postgres.stop()
        time.sleep(KEY_CACHE_S + 0.5)  # the key's last check has expired
        answers, seconds = [], []
        for send in (
            lambda: client.get("/v1/jobs"),
            lambda: client.post("/v1/jobs", files={"files": ("a.mp4", b"not a video")}),
            lambda: client.get("/v1/jobs"),  # the key check is not cached as a refusal
        ):
            began = time.perf_counter()
            answers.append(send())
            seconds.append(time.perf_counter() - began)
        for answer in answers:
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["Retry-After"]) > 0
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["detail"] == (
                "a service the API needs cannot be reached; try again later"
            )
            assert "postgres" not in answer.text.lower() and str(postgres.port) not in answer.text

        postgres.start()
        restarted = time.perf_counter()
        wait_for(lambda: client.get("/v1/jobs").status_code == 200, 30, "the API to recover")
        recovery = time.perf_counter() - restarted
    log = api.log_path.read_text()
    assert "Traceback" not in log and "service unavailable" in log
    with capsys.disabled():
        print(
            f"\n503 answers in {', '.join(f'{s * 1000:.0f} ms' for s in seconds)}; "
            f"200 again {recovery:.1f} s after PostgreSQL started",
            flush=True,
        )
