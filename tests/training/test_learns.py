"""Proof that training learns: `oceanstream extract` + `train` on the synthetic set, end to end.

The synthetic labels are known functions of what each stream can see (`tests.synthetic`):
openness follows the face's brightness, neuroticism the head's motion amplitude. A model
that beats the mean-prediction baseline on both held-out traits, and loses that edge when
the matching stream's tokens are shuffled across clips, uses both streams.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from core.bundles.bundle import load_bundle
from tests.synthetic import DYNAMIC_TRAIT, STATIC_TRAIT, write_synthetic_set
from tests.training.cli import oceanstream

pytestmark = pytest.mark.slow

MARGIN = 0.03  # accuracy (1 - MAE) above the mean-prediction baseline, on held-out persons


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("learns")
    home = root / "home"
    labels = write_synthetic_set(root / "synthetic", clips=64, persons=16)
    extracted = oceanstream(home, "extract", str(labels), "--name", "synthetic", "--json")
    assert extracted.returncode == 0, extracted.stderr
    run_dir = root / "run"
    done = oceanstream(home, "train", "synthetic", "--output", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return {
        "home": home,
        "labels": labels,
        "extract": json.loads(extracted.stdout),
        "report": json.loads(done.stdout),
        "stderr": done.stderr,
        "run_dir": run_dir,
    }


def test_every_clip_is_extracted(trained: dict) -> None:
    summary = trained["extract"]
    assert (summary["clips"], summary["extracted"], summary["failed"]) == (64, 64, 0)


def test_held_out_accuracy_beats_the_baseline_on_each_stream(trained: dict) -> None:
    test = trained["report"]["metrics"]["test"]
    assert test["clips"] >= 10
    for trait in (STATIC_TRAIT, DYNAMIC_TRAIT):
        figures = test["traits"][trait]
        assert figures["accuracy"] >= figures["baseline"] + MARGIN, (trait, figures)
        assert figures["pearson_r"] >= 0.6, (trait, figures)
    assert test["mean"]["accuracy"] >= test["mean"]["baseline"] + MARGIN
    # Each trait depends on its own stream: shuffling that stream's tokens costs accuracy.
    static, dynamic = test["traits"][STATIC_TRAIT], test["traits"][DYNAMIC_TRAIT]
    assert test["static_shuffled"][STATIC_TRAIT] <= static["accuracy"] - 0.02
    assert test["dynamic_shuffled"][DYNAMIC_TRAIT] <= dynamic["accuracy"] - 0.02
    said = " ".join(trained["stderr"].split())
    assert "split: grouped by the clip id before its first '.'" in said


def test_bundle_is_trained_and_describes_its_training(trained: dict) -> None:
    report = trained["report"]
    bundle = load_bundle(report["bundle"])
    meta = bundle.metadata
    assert meta.trained is True and meta.version == report["version"]
    assert meta.version.startswith("v-") and meta.num_frames == 8
    assert meta.dataset == "synthetic"
    assert meta.metrics["test"] == report["metrics"]["test"]
    split = meta.training["split"]
    assert split["method"] == "grouped" and sum(split["clips"].values()) == 64
    assert sum(split["groups"].values()) == 16  # each person in exactly one split
    settings = meta.training["settings"]
    assert settings["seed"] == 1234 and settings["clipnorm"] > 0
    assert meta.training["mixed_precision"] is False  # never on a CPU
    assert meta.training["dataset"]["extraction"]["num_frames"] == 8


def test_run_folder_has_logs_checkpoints_and_history(trained: dict) -> None:
    run_dir = trained["run_dir"]
    assert list((run_dir / "logs" / "train").glob("events.out.tfevents.*"))
    assert list((run_dir / "logs" / "validation").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "best.weights.h5").is_file()
    with (run_dir / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == trained["report"]["training"]["epochs_run"]
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_trained_bundle_serves_through_analyze(trained: dict) -> None:
    folder = trained["labels"].parent
    clip = folder / "person00.seg0.mp4"
    done = oceanstream(
        trained["home"], "analyze", str(clip), "--model", trained["report"]["bundle"], "--json"
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["model_trained"] is True and row["model_version"] == trained["report"]["version"]
    assert "untrained" not in done.stderr


def test_resume_continues_a_stopped_run(trained: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    home = trained["home"]
    first = oceanstream(home, "train", "synthetic", "--output", str(run_dir), "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    more = oceanstream(
        home, "train", "synthetic", "--output", str(run_dir), "--resume", "--epochs", "4"
    )
    assert more.returncode == 0, more.stderr[-3000:]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["training"]["epochs_run"] == 4
    assert report["training"]["settings"]["epochs"] == 4
    with (run_dir / "history.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0", "1", "2", "3"]
