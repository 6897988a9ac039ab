"""Shared fixtures: the real services the tests talk to.

A test that needs a service fails in CI (`CI` set) when the service is missing; on a
developer machine it is skipped with the reason (`tests.db.postgres.service_unavailable`).
"""

from __future__ import annotations

import os
import socket

import pytest

REDIS_URL = os.environ.get("OCEANSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def face_detector():
    """One MTCNN-backed detector for the session (building one takes seconds)."""
    from core.persons.faces import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """An S3-compatible server (moto's standalone server) on localhost, for the session."""
    from tests.support.s3 import running_s3_server

    with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server):
    """A new, empty bucket on the session's S3 server; the AWS variables point at it."""
    bucket = s3_server.new_bucket()
    with s3_server.environment():
        yield bucket
