"""An S3-compatible server on localhost for tests: moto's standalone server, in a subprocess.

Nothing is mocked in the test process: s3fs (and everything above it) talks HTTP to a real
server, as it would to a bucket, with the endpoint and credentials taken from the standard
environment variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, ...).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import pytest


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server; `env` points the AWS clients at it."""

    port: int
    process: subprocess.Popen[bytes]
    buckets: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "oceanstream-test",
            "AWS_SECRET_ACCESS_KEY": "oceanstream-test-secret",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def filesystem(self):  # type: ignore[no-untyped-def]
        """An s3fs filesystem on this server, not cached (each test sees the bucket as it is)."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.env["AWS_ACCESS_KEY_ID"],
            secret=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
        )

    def new_bucket(self) -> str:
        name = f"oceanstream-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        self.buckets.append(name)
        return name

    def list_bucket(self, bucket: str) -> list[str]:
        """Every object key in `bucket`."""
        return sorted(self.filesystem().find(bucket))

    @contextmanager
    def environment(self) -> Iterator[None]:
        """The AWS variables of this server set in this process (for in-process stores).

        fsspec keeps one S3 filesystem per set of arguments, whatever the environment: the
        cache is cleared on the way in and out, so stores made inside use this server."""
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        try:
            with mock.patch.dict(os.environ, self.env):
                yield
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


@contextmanager
def running_s3_server(log_dir: Path) -> Iterator[S3Server]:
    """`python -m moto.server` on a free port, until the block ends."""
    port = _free_port()
    log = open(log_dir / f"moto-{port}.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = S3Server(port, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto server exited: {Path(log.name).read_text()[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("moto server did not start in 60 s")
            time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """An S3-compatible server (moto's standalone server) on localhost, for the session."""
    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server):
    """A new, empty bucket on the session's S3 server; the AWS variables point at it."""
    bucket = s3_server.new_bucket()
    with s3_server.environment():
        yield bucket
