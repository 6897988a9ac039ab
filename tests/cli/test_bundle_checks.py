"""`oceanstream models register` refuses unsafe bundles in one line, and never moves a version.

Each case runs the real command in a subprocess on a SQLite home of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.bundles.bundle import METADATA_FILE, WEIGHT_FILES, build_default_bundle, save_bundle
from tests.cli.helpers import assert_one_line_error, oceanstream
from tests.clips import write_faceless

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_bundle(build_default_bundle(num_frames=4), tmp_path_factory.mktemp("b") / "b")


def copy_of(saved: Path, folder: Path) -> Path:
    shutil.copytree(saved, folder)
    return folder


def stored_uri(home: Path) -> dict[str, str]:
    done = oceanstream(home, "models", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    return {row["version"]: row["uri"] for row in json.loads(done.stdout)}


def test_a_folder_that_is_no_bundle_is_one_line_named_as_given(tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.keras").write_text("junk")
    clip = write_faceless(tmp_path / "c.mp4", seconds=1.0, seed=3)
    for args in (["analyze", clip.name, "--model", "bad"], ["models", "register", "bad"]):
        done = oceanstream(tmp_path / "home", *args, cwd=tmp_path)
        assert_one_line_error(done, 2, "model bundle 'bad' lacks bundle.json")
        assert str(tmp_path) not in done.stderr


def test_absurd_dimension_is_a_one_line_usage_error(saved: Path, tmp_path: Path) -> None:
    folder = copy_of(saved, tmp_path / "huge")
    meta = json.loads((folder / METADATA_FILE).read_text())
    meta["static_dim"] = 10**9  # before: ResourceExhaustedError while building the encoder
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    done = oceanstream(tmp_path, "models", "register", str(folder))
    assert_one_line_error(done, 2, "static_dim is 1000000000, over the limit of 4096")
    assert "Traceback" not in done.stderr + done.stdout


def test_weights_linked_from_outside_are_a_one_line_usage_error(
    saved: Path, tmp_path: Path
) -> None:
    folder = copy_of(saved, tmp_path / "linked")
    weights = folder / WEIGHT_FILES["fusion_model"]
    outside = tmp_path / "elsewhere.weights.h5"
    weights.rename(outside)
    weights.symlink_to(outside)
    done = oceanstream(tmp_path, "models", "register", str(folder))
    assert_one_line_error(done, 2, WEIGHT_FILES["fusion_model"], str(outside), "outside")
    assert stored_uri(tmp_path) == {}


def test_a_second_location_does_not_move_a_registered_version(saved: Path, tmp_path: Path) -> None:
    first = copy_of(saved, tmp_path / "first")
    second = copy_of(saved, tmp_path / "second")
    version = oceanstream(tmp_path, "models", "register", str(first)).stdout.strip()
    again = oceanstream(tmp_path, "models", "register", str(second))
    assert_one_line_error(again, 1, f"already registered at {first}", "--move")
    assert stored_uri(tmp_path) == {version: str(first)}
    moved = oceanstream(tmp_path, "models", "register", str(second), "--move")
    assert moved.returncode == 0 and moved.stdout.strip() == version, moved.stderr
    assert stored_uri(tmp_path) == {version: str(second)}
