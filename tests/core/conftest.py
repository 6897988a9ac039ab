"""Session-wide clips and the shared face detector for the core tests.

Clips are written once per session to a temporary folder and decoded by OpenCV like real
uploads. The MTCNN detector is built once: construction loads TensorFlow and the networks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from core.persons.faces import FaceDetector
from tests import clips


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def talking_head(clip_dir: Path) -> Path:
    """2 s, 15 fps, 320x240 mp4v: 30 frames of a moving, re-lit face."""
    return clips.write_talking_head(clip_dir / "talking_head.mp4")


@pytest.fixture(scope="session")
def talking_head_avi(clip_dir: Path) -> Path:
    """The same talking head as MJPG in AVI, whose header declares the frame count up front."""
    return clips.write_talking_head(clip_dir / "talking_head.avi", fourcc="MJPG")


@pytest.fixture(scope="session")
def talking_head_h264(clip_dir: Path) -> Path:
    """The same talking head as a faststart H.264 mp4 (the usual upload)."""
    return clips.write_h264(clip_dir / "talking_head_h264.mp4")


@pytest.fixture(scope="session")
def faceless(clip_dir: Path) -> Path:
    return clips.write_faceless(clip_dir / "faceless.mp4")


@pytest.fixture(scope="session")
def detector() -> FaceDetector:
    return FaceDetector()
