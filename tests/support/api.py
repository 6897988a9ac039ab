"""A real API process (`oceanstream serve` under uvicorn) and a local callback receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from tests.support.cluster import Cluster
from tests.support.services import ROOT, free_port, wait_for


@dataclass
class ApiServer:
    """One `oceanstream serve` process on a free port, with the cluster's environment."""

    cluster: Cluster
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    workers: int = 1
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.cluster.home / f"api-{self.port}.log"

    def start(self) -> None:
        log = open(self.log_path, "wb")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "serve", "--port", str(self.port)]
            + (["--workers", str(self.workers)] if self.workers > 1 else []),
            env={**self.cluster.env, **self.extra_env},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def up() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"serve exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "the API to answer /healthz")
        if self.workers > 1:
            wait_for(
                lambda: (
                    self.log_path.read_text().count("Application startup complete") >= self.workers
                ),
                60,
                f"{self.workers} API processes to start",
            )

    def children(self) -> list[int]:
        """The ids of the processes `serve` started (uvicorn's workers; Linux)."""
        assert self.process is not None
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[1]) == self.process.pid:
                found.append(int(stat.parent.name))
        return found

    def cpu_seconds(self) -> float:
        """User and system CPU seconds of the API's processes so far (its process group:
        uvicorn's supervisor and its workers; Linux)."""
        assert self.process is not None
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            if int(fields[2]) == self.process.pid:  # the process group
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def client(self, key: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None


def create_key(cluster: Cluster, tenant: str, *, admin: bool = False) -> str:
    """A new key of `tenant` (an admin key with `admin`), made by `oceanstream keys create`."""
    made = cluster.cli("keys", "create", "--tenant", tenant, *(["--admin"] if admin else []))
    assert made.returncode == 0, made.stderr
    return made.stdout.strip().splitlines()[-1]


def key_id(cluster: Cluster, tenant: str) -> str:
    listed = cluster.cli("keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return next(k["id"] for k in json.loads(listed.stdout) if k["tenant"] == tenant)


def result_reads(client: httpx.Client) -> dict[str, float]:
    """The API process's `oceanstream_api_result_reads_total` by source."""
    counts = {"cache": 0.0, "database": 0.0}
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("oceanstream_api_result_reads_total{"):
            name, value = line.rsplit(" ", 1)
            counts[name.split('source="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def stored_files(cluster: Cluster) -> list[str]:
    """Every file in the cluster's storage, relative to its root, sorted."""
    root = cluster.home / "storage"
    if not root.exists():
        return []
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class CallbackReceiver:
    """An HTTP server on 127.0.0.1 that records each POST and answers the next status given."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(Received({k: v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def __enter__(self) -> CallbackReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def sse_events(client: httpx.Client, path: str, timeout: float) -> Iterator[tuple[str, str]]:
    """(event, data) pairs of a server-sent event stream, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with client.stream("GET", path, timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data = "message", ""
        for line in response.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} sent no final event within {timeout:.0f} s")
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data = line.partition(":")[2].strip()
            elif line == "" and data:
                yield event, data
                event, data = "message", ""


def start_callback_worker(cluster: Cluster) -> subprocess.Popen[bytes]:
    """`oceanstream callback-worker`, registered with the cluster's workers (stopped with them)."""
    log = cluster.home / "callback-worker.log"
    handle = open(log, "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "callback-worker", "--concurrency", "2"],
        env=cluster.env,
        cwd=ROOT,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    cluster.workers.append(process)
    wait_for(
        lambda: b" ready." in log.read_bytes() or process.poll() is not None,
        90,
        "the callback worker to start",
    )
    if process.poll() is not None:
        raise RuntimeError(f"callback-worker exited:\n{log.read_text()[-3000:]}")
    return process


#: Small limits so the tests can pass them with small bodies.
MAX_FILE_BYTES = 2_000_000
MAX_REQUEST_BYTES = 3_000_000
MAX_FILES = 4


@dataclass
class Keys:
    alpha: str  # tenant "alpha"
    beta: str  # tenant "beta"
    revoked: str  # a revoked key of tenant "alpha"
