"""Shared fixtures: the real services the tests talk to.

A test that needs a service fails in CI (`CI` set) when the service is missing; on a
developer machine it is skipped with the reason.
"""

from __future__ import annotations

import os
import socket

import pytest

POSTGRES_URL = os.environ.get(
    "OCEANSTREAM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("OCEANSTREAM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_missing(what: str) -> None:
    """Fail in CI, skip elsewhere."""
    message = f"{what} is not reachable"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)")
    pytest.skip(message)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def face_detector():
    """One MTCNN-backed detector for the session (building one takes seconds)."""
    from core.faces import FaceDetector

    return FaceDetector()
