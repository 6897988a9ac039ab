"""`oceanstream flower` shows the workers and the four queues with their lengths."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.cluster import Cluster
from tests.support.pool import log_text, make_feature_videos, register_version, start_pool_worker
from tests.support.services import ROOT, free_port, wait_for
from workers.celery_app import create_app
from workers.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def get(url: str, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:  # not listening yet
        return 0, b""


def test_worker_configuration_shown_by_inspect_carries_no_secrets() -> None:
    """Flower's worker Config tab shows `inspect().conf()`: no password may be in it."""
    from types import SimpleNamespace

    from celery.worker.control import conf

    settings = Settings(
        broker_url="redis://:brokerpw@127.0.0.1:6379/0",
        database_url="postgresql://user:dbpw@db/oceanstream",
        flower_password="flowerpw",
    )
    shown = json.dumps(conf(SimpleNamespace(app=create_app(settings))), default=repr)
    for secret in ("brokerpw", "dbpw", "flowerpw"):
        assert secret not in shown


AUTH = ("ops", "s3cret")


def start_flower(cluster: Cluster) -> tuple[subprocess.Popen[bytes], str]:
    """`oceanstream flower` on a free port, with AUTH; returns it and its base URL."""
    cluster.extra_env.update(
        {"OCEANSTREAM_FLOWER_USER": AUTH[0], "OCEANSTREAM_FLOWER_PASSWORD": AUTH[1]}
    )
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "flower", "--port", str(port)],
        env=cluster.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: get(f"{base}/healthcheck", None)[0] == 200, 60, "flower to start")
    return flower, base


def api(url: str) -> dict:
    status, body = get(url, AUTH)
    assert status == 200, (url, status)
    return json.loads(body)


def test_flower_lists_workers_and_queue_lengths(cluster: Cluster, tmp_path: Path) -> None:
    cluster.start_worker("faces,flow")
    flower, base = start_flower(cluster)
    auth = AUTH
    try:
        assert get(f"{base}/api/workers", None)[0] == 401

        # Queue some work for a queue no worker serves, so its length is visible.
        broken = tmp_path / "broken.mp4"
        broken.write_bytes(b"not a video")  # stored and queued for ingest, which no worker serves
        done = cluster.cli("submit", str(broken))
        assert done.returncode == 0, done.stderr
        from celery import Celery

        sender = Celery(broker=cluster.broker_url, set_as_current=False)
        for _ in range(3):
            sender.send_task("oceanstream.inference", args=["no-such-video"], queue="inference")

        def workers_seen() -> bool:
            status, body = get(f"{base}/api/workers?refresh=1", auth)
            return status == 200 and any("faces-flow" in name for name in json.loads(body))

        wait_for(workers_seen, 60, "flower to see the worker", every=1.0)
        status, body = get(f"{base}/api/queues/length", auth)
        assert status == 200
        lengths = {q["name"]: q["messages"] for q in json.loads(body)["active_queues"]}
        assert set(lengths) >= {"ingest", "faces", "flow", "inference"}
        assert lengths["inference"] == 3
    finally:
        flower.terminate()
        flower.wait(10)


def test_flower_shows_the_inference_pool_and_its_tasks(cluster: Cluster) -> None:
    from core.bundles.bundle import build_default_bundle

    bundle = build_default_bundle(num_frames=8)
    register_version(cluster.database_url, bundle.metadata)
    ids = make_feature_videos(
        cluster.database_url,
        cluster.env["OCEANSTREAM_STORAGE_URL"],
        bundle.metadata.version,
        6,
        prefix="flower",
        num_frames=8,
    )
    flower, base = start_flower(cluster)
    try:
        pool = start_pool_worker(cluster)

        def pool_names() -> list[str]:
            return [n for n in api(f"{base}/api/workers?status=1") if "inference-pool" in n]

        wait_for(lambda: bool(pool_names()), 30, "flower to see the pool", every=0.5)
        (name,) = pool_names()
        assert name == f"inference-pool-{pool.pid}@{socket.gethostname()}"
        assert api(f"{base}/api/workers?status=1")[name] is True
        listed = {w["hostname"]: w for w in api(f"{base}/workers?json=1")["data"]}
        assert listed[name]["sw_ident"] == "oceanstream-inference-pool"

        sender = create_app(Settings(broker_url=cluster.broker_url))
        sent = {
            sender.send_task("oceanstream.inference", args=[v], queue="inference").id: v
            for v in ids[:5]
        }
        sent[sender.send_task("oceanstream.inference", args=[ids[0]], queue="inference").id] = ids[
            0
        ]  # a duplicate: nothing left to do

        def finished() -> dict:
            tasks = api(f"{base}/api/tasks?limit=100")
            return {u: t for u, t in tasks.items() if u in sent and t["state"] == "SUCCESS"}

        try:
            wait_for(lambda: len(finished()) == len(sent), 60, "flower to list the pool's tasks")
        except TimeoutError:
            print(api(f"{base}/api/tasks?limit=100"), log_text(pool)[-3000:])
            raise
        tasks = finished()
        assert {t["name"] for t in tasks.values()} == {"oceanstream.inference"}
        assert {t["worker"] for t in tasks.values()} == {name}
        assert sorted(t["result"] for t in tasks.values()) == ["'done'"] * 5 + ["'skipped'"]
        assert all(t["received"] and t["started"] for t in tasks.values())

        pool.send_signal(signal.SIGTERM)
        assert pool.wait(60) == 0
        wait_for(
            lambda: api(f"{base}/api/workers?status=1")[name] is False,
            20,
            "flower to see the pool go offline",
        )
    finally:
        flower.terminate()
        flower.wait(10)
