"""Poison messages on the queues, with real worker processes: each is moved aside, once.

One cluster for the module (a private redis-server, PostgreSQL, a Celery worker for ingest,
faces and flow, and the inference pool): bytes that are not UTF-8, text that is not JSON,
JSON without an envelope, an envelope whose body does not decode, JSON nested 5000 deep (bare
and as a body), Celery's built-in `celery.accumulate` and task messages no task can run are
pushed onto `ingest` and `inference` between the messages of a real job. The
workers must stay up, the job must finish, every poison payload must be in its queue's
dead-letter list exactly once (logged once), and `oceanstream dead-letters replay` must put
them back on their queue (where the workers dead-letter them again).
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.clips import write_talking_head
from tests.support.cluster import Cluster
from tests.support.pool import log_text, start_pool_worker
from tests.support.postgres import POSTGRES_URL, open_postgres
from tests.support.redis import RedisServer
from tests.support.services import wait_for
from workers.celery_app import create_app
from workers.services.dead_letters import MAX_PAYLOAD_BYTES, dead_letter_key, parse_record
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Workers for every queue, started once for the module, killed at its end."""
    base = tmp_path_factory.mktemp("poison")
    databases = open_postgres(POSTGRES_URL)
    try:
        database_url = databases.create("poison").render_as_string(hide_password=False)
        with RedisServer(base) as server:
            home = base / "home"
            home.mkdir()
            nodes = Cluster(home=home, database_url=database_url, broker_url=server.url)
            migrated = nodes.cli("db", "upgrade")
            assert migrated.returncode == 0, migrated.stderr
            try:
                nodes.start_worker("ingest,faces,flow")
                start_pool_worker(nodes)
                yield nodes
            finally:
                nodes.stop_workers(signal.SIGKILL)
    finally:
        databases.drop_all()


def task_envelope(broker_url: str, queue: str, task: str, args: list[object]) -> bytes:
    """A task message as Celery stores it, made on another database (no worker takes it)."""
    scratch = broker_url.rsplit("/", 1)[0] + "/1"
    app = create_app(Settings(broker_url=scratch))
    app.send_task(task, args=args, queue=queue)
    client = redis.Redis.from_url(scratch)
    try:
        payload = client.rpop(queue)
        assert payload is not None
        return payload
    finally:
        client.close()


def with_body(envelope: bytes, body: bytes) -> bytes:
    payload = json.loads(envelope)
    payload["body"] = base64.b64encode(body).decode()
    return json.dumps(payload).encode()


def poison_for(broker_url: str, queue: str) -> list[bytes]:
    task = f"oceanstream.{queue}"
    valid = task_envelope(broker_url, queue, task, ["some-id"])  # a video's or a segment's
    return [
        b"\xff\xfe\x00 not UTF-8 " + queue.encode(),
        b"not JSON [red]at all[/red] " + queue.encode(),
        json.dumps({"no": "envelope", "queue": queue}).encode(),
        with_body(valid, b"not JSON either"),
        task_envelope(broker_url, queue, task, ["a", "b"]),  # one argument too many
        task_envelope(broker_url, queue, task, [12345]),  # not an id
        b"[" * 5000,  # a RecursionError in any JSON decoder written in Python
        with_body(valid, b"[" * 5000),
    ]


def dead(client: redis.Redis, queue: str) -> Counter[bytes]:
    records = client.lrange(dead_letter_key(queue), 0, -1)
    return Counter(parse_record(r).payload for r in records)


def same(payload: bytes) -> object:
    """A payload compared by meaning: envelopes the Celery consumer re-serializes."""
    try:
        return json.dumps(json.loads(payload), sort_keys=True)
    except (ValueError, RecursionError):
        return payload


def test_poison_is_dead_lettered_once_the_workers_go_on_and_replay_puts_it_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(cluster.broker_url)
    poison = {q: poison_for(cluster.broker_url, q) for q in ("ingest", "inference")}
    poison["ingest"].append(task_envelope(cluster.broker_url, "ingest", "oceanstream.nosuch", []))
    # Celery's built-in tasks are registered on every app, but not the pipeline's to run.
    poison["ingest"].append(
        task_envelope(cluster.broker_url, "ingest", "celery.accumulate", [1, 2])
    )
    clips = []
    for index in range(2):
        clips.append(tmp_path / f"talking_{index}.mp4")
        write_talking_head(clips[-1], seconds=1.0, seed=300 + index)

    half = {q: len(p) // 2 for q, p in poison.items()}
    for queue, payloads in poison.items():
        client.lpush(queue, *payloads[: half[queue]])
    first = cluster.cli("submit", str(clips[0]))
    assert first.returncode == 0, first.stderr
    for queue, payloads in poison.items():
        client.lpush(queue, *payloads[half[queue] :])
    second = cluster.cli("submit", str(clips[1]))
    assert second.returncode == 0, second.stderr

    for output in (first, second):
        assert cluster.wait_job(output.stdout.strip().splitlines()[-1]) == {"done": 1}
    for queue, payloads in poison.items():
        wait_for(
            lambda q=queue, n=len(payloads): sum(dead(client, q).values()) >= n,
            30,
            f"{queue}'s poison dead-lettered",
        )
        found = dead(client, queue)
        assert sorted(map(str, map(same, found.elements()))) == sorted(
            map(str, map(same, payloads))
        ), f"{queue}: each poison payload exactly once"
    workers = list(cluster.workers)
    assert all(worker.poll() is None for worker in workers), "a worker died"
    logs = "".join(log_text(worker) for worker in workers)
    for queue, payloads in poison.items():
        assert logs.count(f"dead-lettered a message on {queue}:") == len(payloads)
    assert "Unrecoverable error" not in logs and "Traceback" not in logs

    # Replay: back on the queue, taken again, dead-lettered again (once each).
    listed = cluster.cli("dead-letters", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    counts = {q: v["count"] for q, v in json.loads(listed.stdout).items()}
    assert counts == {"ingest": 10, "faces": 0, "flow": 0, "inference": 8}
    for queue, payloads in poison.items():
        replayed = cluster.cli("dead-letters", "replay", "--queue", queue)
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout.strip() == f"replayed {len(payloads)} messages onto {queue}"
    for queue, payloads in poison.items():
        wait_for(
            lambda q=queue, n=len(payloads): sum(dead(client, q).values()) >= n,
            30,
            f"{queue}'s replayed poison dead-lettered again",
        )
        assert sum(dead(client, queue).values()) == len(payloads)
    assert all(worker.poll() is None for worker in workers), "a worker died"
    purged = cluster.cli("dead-letters", "purge", "--queue", "ingest")
    assert purged.stdout.strip() == "purged 10 dead letters of ingest"
    assert client.llen(dead_letter_key("ingest")) == 0

    # A huge argument: refused before any task runs, its record and log line kept short.
    huge = "x" * (1024 * 1024)
    client.lpush(
        "ingest", task_envelope(cluster.broker_url, "ingest", "oceanstream.ingest", [huge])
    )
    client.lpush(
        "inference",
        task_envelope(cluster.broker_url, "inference", "oceanstream.inference", [huge]),
    )
    for queue, before in (("ingest", 0), ("inference", len(poison["inference"]))):
        wait_for(
            lambda q=queue, n=before: client.llen(dead_letter_key(q)) > n,
            30,
            f"{queue}'s huge argument dead-lettered",
        )
        newest = parse_record(client.lindex(dead_letter_key(queue), 0))
        assert newest.truncated and "characters" in newest.reason, newest.reason
        assert len(client.lindex(dead_letter_key(queue), 0)) < 3 * MAX_PAYLOAD_BYTES
    logs = "".join(log_text(worker) for worker in workers)
    assert max(map(len, logs.splitlines())) < 2000, "a log line carries the argument"
    assert all(worker.poll() is None for worker in workers), "a worker died"


def test_celery_inspect_finds_the_workers_through_the_documented_app(
    cluster: Cluster, tmp_path: Path
) -> None:
    """`celery -A workers.celery_app inspect ...`, as docs/reliability.md tells operators."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "inspect", "active_queues"],
        env=cluster.env,
        cwd=tmp_path,  # the app is found as an installed module, not from the checkout
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 node online" in done.stdout and "'name': 'flow'" in done.stdout, done.stdout
