"""What `oceanstream extract` and `train` say when their input cannot be used."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.training.cli import oceanstream, said
from tests.training.labels_files import RunsCommand

pytestmark = pytest.mark.slow


def test_extract_refuses_a_malicious_pickle(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    labels = tmp_path / "labels"
    labels.mkdir()
    evil = {"openness": {"x.001.mp4": RunsCommand(f"touch {marker}")}}
    (labels / "annotation_training.pkl").write_bytes(pickle.dumps(evil, protocol=2))
    done = oceanstream(tmp_path / "home", "extract", str(labels))
    assert done.returncode == 2
    assert "refused to load" in said(done) and "system" in said(done)
    assert not marker.exists()


def test_train_before_extract_is_a_usage_error(tmp_path: Path) -> None:
    done = oceanstream(tmp_path / "home", "train", "never-extracted")
    assert done.returncode == 2
    assert "run oceanstream extract first" in said(done)
