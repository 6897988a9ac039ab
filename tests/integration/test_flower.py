"""`oceanstream flower` shows the workers and the four queues with their lengths."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, Cluster, free_port, wait_for
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


def test_flower_lists_workers_and_queue_lengths(cluster: Cluster, tmp_path: Path) -> None:
    cluster.extra_env.update(
        {"OCEANSTREAM_FLOWER_USER": "ops", "OCEANSTREAM_FLOWER_PASSWORD": "s3cret"}
    )
    cluster.start_worker("faces,flow")
    port = free_port()
    flower = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "flower", "--port", str(port)],
        env=cluster.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    auth = ("ops", "s3cret")
    try:
        wait_for(lambda: get(f"{base}/healthcheck", None)[0] == 200, 60, "flower to start")
        assert get(f"{base}/api/workers", None)[0] == 401

        # Queue some work for a queue no worker serves, so its length is visible.
        done = cluster.cli("submit", str(tmp_path / "missing.mp4"))
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
