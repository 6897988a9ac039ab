"""An inference pool whose active bundle fails its integrity check still starts and serves.

A real `oceanstream worker --queues inference` process on PostgreSQL and its own Redis: the
active version's bundle was changed after it was registered. The process says so in one
line, serves the segments of videos pinned to a healthy version, and fails those pinned to
the tampered one at once with the integrity message (and their videos with them). Before,
the process exited at start, and had it run, those segments would have gone back to the
queue on every delivery until the cap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundles.bundle import build_default_bundle
from tests.support.bundles import write_trained_bundle
from tests.support.cluster import Cluster
from tests.support.pool import (
    log_text,
    make_feature_segments,
    register_version,
    send_from_producers,
    start_pool_worker,
    wait_finished,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

T = 8  # the cluster's OCEANSTREAM_NUM_FRAMES


@pytest.fixture
def cluster(isolated_cluster: Cluster) -> Cluster:
    return isolated_cluster


def test_pool_starts_with_a_tampered_active_bundle_and_serves_healthy_versions(
    cluster: Cluster, tmp_path: Path
) -> None:
    folder = write_trained_bundle(tmp_path / "bundle")
    registered = cluster.cli("models", "register", str(folder), "--activate")
    assert registered.returncode == 0, registered.stderr
    bad = registered.stdout.strip()
    metadata = json.loads((folder / "bundle.json").read_text())
    metadata["metrics"] = {"val_mae": 0.01}  # changed after it was registered
    (folder / "bundle.json").write_text(json.dumps(metadata))

    healthy = build_default_bundle(num_frames=T).metadata
    register_version(cluster.database_url, healthy)
    storage = cluster.env["OCEANSTREAM_STORAGE_URL"]
    served = make_feature_segments(
        cluster.database_url, storage, healthy.version, 3, prefix="healthy", num_frames=T
    )
    refused = make_feature_segments(
        cluster.database_url, storage, bad, 2, prefix="tampered", num_frames=T, seed=1
    )

    worker = start_pool_worker(cluster)  # raised here before: the process exited at start
    send_from_producers(cluster.broker_url, [*served, *refused], producers=1)
    wait_finished(cluster.database_url, "healthy", 3, timeout=60)
    wait_finished(cluster.database_url, "tampered", 2, timeout=60)

    rows = cluster.query(
        "SELECT s.id, s.status, s.error, s.deliveries, v.id, v.status, v.error "
        "FROM segments s JOIN videos v ON v.id = s.video_id"
    )
    found = {row[0]: row[1:] for row in rows}
    assert all(found[s][0] == "done" and found[s][4] == "done" for s in served), found
    for segment_id in refused:
        status, error, deliveries, _, video_status, video_error = found[segment_id]
        assert status == "failed"
        assert error.startswith(f"model version {bad} failed its integrity check: "), error
        assert "a file was changed after saving" in error
        assert deliveries["inference"] == 1  # at once, not after the delivery cap
        assert video_status == "failed" and video_error.endswith(f" s): {error}"), video_error
    versions = dict(cluster.query("SELECT video_id, model_version FROM predictions"))
    assert versions == {found[s][3]: healthy.version for s in served}

    assert worker.poll() is None
    # One line at start (the batches' lines name each failed video, at INFO).
    text = log_text(worker)
    lines = [line for line in text.splitlines() if "ERROR" in line and "integrity" in line]
    assert len(lines) == 1 and f"model version {bad} failed its integrity check" in lines[0]
    assert "serves videos pinned to other versions" in lines[0]
    assert "Traceback" not in text
