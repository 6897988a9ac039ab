"""Completion callbacks whose messages are lost, and callback addresses that are refused.

Real parts: a SQLite database, a redis-server of the test's own (killed to lose the queued
message), `oceanstream reconcile` and `oceanstream callback-worker` processes, and a local
HTTP receiver.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.engine import make_engine, make_session_factory
from db.models import Job
from db.repository.jobs import callback_attempts, get_job
from tests.support.api import start_callback_worker
from tests.support.cluster import Cluster, running_cluster
from tests.support.redis import RedisServer
from tests.support.services import wait_for
from workers.celery_app import create_app
from workers.services.callbacks import address_problem, deliver, dispatch_due
from workers.settings import Settings

pytestmark = pytest.mark.integration


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps the bodies POSTed to it."""

    def __init__(self) -> None:
        bodies: list[dict] = []
        self.bodies = bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def nodes(tmp_path: Path, redis_server: RedisServer) -> Iterator[Cluster]:
    url = f"sqlite:///{tmp_path / 'home' / 'oceanstream.db'}"
    with running_cluster(tmp_path / "home", url, redis_server.url) as cluster:
        cluster.extra_env["OCEANSTREAM_CALLBACK_ALLOW_PRIVATE"] = "1"
        yield cluster


def settings_of(cluster: Cluster, **overrides: object) -> Settings:
    return Settings(
        database_url=cluster.database_url,
        broker_url=cluster.broker_url,
        home=cluster.home,
        **overrides,  # type: ignore[arg-type]
    )


def add_job(cluster: Cluster, url: str) -> str:
    """A job with a callback and no videos: final at once, so due for its callback."""
    factory = make_session_factory(make_engine(cluster.database_url))
    with factory.begin() as session:
        job = Job(kind="submit", callback_url=url, callback_state="waiting")
        session.add(job)
        session.flush()
        return job.id


def callback_state(cluster: Cluster, job_id: str) -> str:
    [(state,)] = cluster.query("SELECT callback_state FROM jobs WHERE id = :id", id=job_id)
    return str(state)


def test_a_callback_lost_with_the_broker_is_resent_once_and_delivered(
    nodes: Cluster, redis_server: RedisServer, receiver: Receiver
) -> None:
    job_id = add_job(nodes, receiver.url)
    settings = settings_of(nodes)
    factory = make_session_factory(make_engine(nodes.database_url))
    assert dispatch_due(factory, create_app(settings)) == 1
    assert callback_state(nodes, job_id) == "queued"

    redis_server.kill()  # the queued message is lost with the broker's memory
    redis_server.start()
    swept = nodes.cli("reconcile", "--older-than", "0")
    assert swept.returncode == 0, swept.stderr
    assert "resent 1 lost callback" in swept.stderr, swept.stderr
    again = nodes.cli("reconcile", "--older-than", "0")
    assert again.returncode == 0, again.stderr
    assert "lost callback" not in again.stderr, "a message waiting on its queue was resent"

    start_callback_worker(nodes)
    wait_for(lambda: callback_state(nodes, job_id) == "delivered", 120, "the callback")
    assert [body["job"]["id"] for body in receiver.bodies] == [job_id]
    with factory() as session:
        assert [a.attempt for a in callback_attempts(session=session, job_id=job_id)] == [1]


def test_a_callback_not_sent_for_a_broker_down_waits_for_the_next_sweep(
    nodes: Cluster, receiver: Receiver
) -> None:
    job_id = add_job(nodes, receiver.url)
    factory = make_session_factory(make_engine(nodes.database_url))
    down = create_app(Settings(broker_url="redis://127.0.0.1:1/0"))
    with pytest.raises(Exception, match="onnect"):
        dispatch_due(factory, down)
    assert callback_state(nodes, job_id) == "waiting"
    assert dispatch_due(factory, create_app(settings_of(nodes))) == 1
    assert callback_state(nodes, job_id) == "queued"


def test_a_callback_to_a_private_address_is_refused_and_recorded(
    nodes: Cluster, receiver: Receiver
) -> None:
    job_id = add_job(nodes, receiver.url)
    factory = make_session_factory(make_engine(nodes.database_url))
    with factory.begin() as session:
        get_job(session=session, job_id=job_id).callback_state = "queued"  # type: ignore[union-attr]
    refused = deliver(settings_of(nodes), factory, job_id, attempt=1)
    assert refused == "refused"
    assert receiver.bodies == []
    with factory() as session:
        [attempt] = callback_attempts(session=session, job_id=job_id)
    assert attempt.status_code is None
    assert "non-public address (127.0.0.1)" in (attempt.error or "")
    assert deliver(settings_of(nodes, callback_allow_private=True), factory, job_id, 2) == (
        "delivered"
    )
    assert [body["job"]["id"] for body in receiver.bodies] == [job_id]


@pytest.mark.parametrize(
    ("url", "allowed", "problem"),
    [
        ("http://127.0.0.1:8080/hook", False, "non-public address (127.0.0.1)"),
        ("http://10.1.2.3/hook", False, "non-public address (10.1.2.3)"),
        ("http://169.254.169.254/latest", False, "non-public address (169.254.169.254)"),
        ("http://[::1]:9000/", False, "non-public address (::1)"),
        ("http://127.0.0.1:8080/hook", True, None),
        ("http://93.184.216.34/hook", False, None),
        ("ftp://93.184.216.34/hook", False, "http or https"),
        ("https:///nohost", False, "http or https"),
    ],
)
def test_callback_addresses(url: str, allowed: bool, problem: str | None) -> None:
    found = address_problem(url, allow_private=allowed)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found, found
