"""Rolling out a bundle: a running worker scores the next videos (their segments' persons and
their headlines) with the newly activated version, without a restart, and earlier predictions
keep the version that made them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundles.bundle import BundleMetadata, ModelBundle, build_models, save_bundle
from tests.clips import write_talking_head
from tests.integration.harness import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cluster(isolated_cluster: Cluster) -> Cluster:
    return isolated_cluster


def write_trained_bundle(folder: Path) -> Path:
    """A bundle saved as `oceanstream train` saves one, for T=8 like the cluster's settings."""
    import keras

    keras.utils.set_random_seed(77)
    meta = BundleMetadata(version="", trained=True, num_frames=8, seed=77, dataset="rollout")
    return save_bundle(ModelBundle(meta, *build_models(meta)), folder)


def submit(cluster: Cluster, path: Path) -> str:
    done = cluster.cli("submit", str(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def predictions(cluster: Cluster) -> dict[str, list[tuple[str, bool]]]:
    rows = cluster.query(
        "SELECT v.name, p.model_version, p.model_trained FROM predictions p "
        "JOIN videos v ON v.id = p.video_id ORDER BY v.name"
    )
    found: dict[str, list[tuple[str, bool]]] = {}
    for name, version, trained in rows:
        found.setdefault(name, []).append((version, bool(trained)))
    return found


def test_running_worker_picks_up_an_activated_bundle(cluster: Cluster, tmp_path: Path) -> None:
    worker = cluster.start_worker("ingest,faces,flow,inference")
    before = write_talking_head(tmp_path / "before.mp4", seconds=1.5, seed=11)
    assert cluster.wait_job(submit(cluster, before)) == {"done": 1}
    [(old_version, old_trained)] = predictions(cluster)["before.mp4"]
    assert old_version.startswith("untrained-") and old_trained is False

    bundle_dir = write_trained_bundle(tmp_path / "bundle")
    registered = cluster.cli("models", "register", str(bundle_dir), "--activate")
    assert registered.returncode == 0, registered.stderr
    new_version = registered.stdout.strip()
    assert new_version.startswith("v-")

    after = write_talking_head(tmp_path / "after.mp4", seconds=1.5, seed=12)
    assert cluster.wait_job(submit(cluster, after)) == {"done": 1}
    assert worker.poll() is None  # the same worker process, never restarted
    found = predictions(cluster)
    assert found["after.mp4"] == [(new_version, True)]
    assert found["before.mp4"] == [(old_version, False)]  # old results keep their version
    # Each segment's person was scored by its video's pinned version, as was the headline.
    scored = cluster.query(
        "SELECT v.name, sp.model_version FROM segment_predictions sp "
        "JOIN segment_persons p ON p.id = sp.segment_person_id "
        "JOIN segments s ON s.id = p.segment_id JOIN videos v ON v.id = s.video_id"
    )
    assert sorted(scored) == [("after.mp4", new_version), ("before.mp4", old_version)]

    rows = json.loads(cluster.cli("results", "--format", "json").stdout)
    versions = {Path(r["video"]).name: (r["model_version"], r["model_trained"]) for r in rows}
    assert versions == {"before.mp4": (old_version, False), "after.mp4": (new_version, True)}
    listed = json.loads(cluster.cli("models", "list", "--format", "json").stdout)
    assert {row["version"]: row["active"] for row in listed} == {
        old_version: False,
        new_version: True,
    }
