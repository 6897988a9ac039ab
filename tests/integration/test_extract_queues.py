"""`oceanstream extract --via-queues`: one message per clip to a real `faces` worker."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.clips import write_talking_head, write_text
from tests.support.cluster import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def cluster(isolated_cluster: Cluster) -> Cluster:
    return isolated_cluster


HEADER = "video,openness,conscientiousness,extraversion,agreeableness,neuroticism\n"


def test_clips_extracted_by_workers_and_bad_ones_reported(cluster: Cluster, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for index in range(3):
        write_talking_head(folder / f"p{index}.seg0.mp4", seconds=1.0, seed=20 + index)
    write_text(folder / "p9.seg0.mp4")
    rows = [f"p{i}.seg0.mp4,0.{i + 1},0.2,0.3,0.4,0.5\n" for i in (0, 1, 2, 9)]
    (folder / "labels.csv").write_text(HEADER + "".join(rows), encoding="utf-8")
    cluster.start_worker("faces")

    done = cluster.cli(
        "extract", str(folder / "labels.csv"), "--name", "q", "--via-queues", "--timeout", "240",
        "--json",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # one clip is not a video
    summary = json.loads(done.stdout)
    assert (summary["extracted"], summary["failed"], summary["skipped"]) == (3, 1, 0)
    [problem] = summary["problems"]
    assert problem["clip"] == "p9.seg0.mp4" and "not a video" in problem["error"]
    clips = cluster.home / "storage" / "datasets" / "q" / "clips"
    with np.load(clips / "p0.seg0.mp4.npz") as arrays:
        assert arrays["crops"].shape == (8, 112, 112, 3) and arrays["mask"].any()

    again = cluster.cli(
        "extract", str(folder / "labels.csv"), "--name", "q", "--via-queues", "--timeout", "240",
        "--json",
    )  # fmt: skip
    summary = json.loads(again.stdout)
    assert (summary["skipped"], summary["failed"], summary["extracted"]) == (3, 1, 0)
