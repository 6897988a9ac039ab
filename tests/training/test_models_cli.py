"""`oceanstream models register|activate|list` in a subprocess, on a SQLite home."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundles.bundle import BundleMetadata, ModelBundle, build_models, save_bundle
from tests.training.cli import oceanstream, said

pytestmark = pytest.mark.slow


def write_bundle(folder: Path, seed: int, accuracy: float) -> Path:
    """A bundle saved as training saves one (trained flag, data set, metrics)."""
    import keras

    keras.utils.set_random_seed(seed)
    meta = BundleMetadata(version="", trained=True, num_frames=8, seed=seed, dataset="demo")
    meta.metrics = {"test": {"mean": {"accuracy": accuracy, "baseline": 0.85, "pearson_r": 0.5}}}
    return save_bundle(ModelBundle(meta, *build_models(meta)), folder)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("bundles")
    return write_bundle(root / "first", 1, 0.91), write_bundle(root / "second", 2, 0.93)


def listed(home: Path) -> dict[str, dict]:
    done = oceanstream(home, "models", "list", "--format", "json")
    assert done.returncode == 0, done.stderr
    return {row["version"]: row for row in json.loads(done.stdout)}


def test_register_activate_and_list(tmp_path: Path, bundles: tuple[Path, Path]) -> None:
    first, second = bundles
    registered = oceanstream(tmp_path, "models", "register", str(first))
    assert registered.returncode == 0, registered.stderr
    version = registered.stdout.strip()
    assert version.startswith("v-")
    rows = listed(tmp_path)
    assert rows[version]["uri"] == str(first.absolute())
    assert rows[version]["trained"] is True and rows[version]["active"] is False
    assert rows[version]["accuracy"] == 0.91 and rows[version]["dataset"] == "demo"

    assert oceanstream(tmp_path, "models", "activate", version).returncode == 0
    other = oceanstream(tmp_path, "models", "register", str(second), "--activate")
    assert other.returncode == 0, other.stderr
    second_version = other.stdout.strip()
    rows = listed(tmp_path)
    assert [v for v, row in rows.items() if row["active"]] == [second_version]

    table = oceanstream(tmp_path, "models", "list")
    assert table.returncode == 0 and version in table.stdout and "active" in table.stdout


def test_register_is_idempotent_and_refuses_bad_input(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    first, _ = bundles
    one = oceanstream(tmp_path, "models", "register", str(first)).stdout.strip()
    two = oceanstream(tmp_path, "models", "register", str(first)).stdout.strip()
    assert one == two and len(listed(tmp_path)) == 1
    not_bundle = oceanstream(tmp_path, "models", "register", str(tmp_path))
    assert not_bundle.returncode == 2 and "bundle.json" in said(not_bundle)
    unknown = oceanstream(tmp_path, "models", "activate", "v-000000000000")
    assert unknown.returncode == 2 and "not registered" in said(unknown)


def test_activation_refuses_a_bundle_that_moved(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "moving", 3, 0.9)
    version = oceanstream(tmp_path, "models", "register", str(folder)).stdout.strip()
    folder.rename(tmp_path / "moved")
    done = oceanstream(tmp_path, "models", "activate", version)
    assert done.returncode == 1 and "not an existing directory" in said(done)
    assert not listed(tmp_path)[version]["active"]
