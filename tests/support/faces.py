"""The face detector, built once per session (it loads TensorFlow and the MTCNN networks)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def face_detector():
    """One MTCNN-backed detector for the session (building one takes seconds)."""
    from core.persons.faces import FaceDetector

    return FaceDetector()
