"""Model cards: written by training, shown by `oceanstream models show`, derived for old bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundles.bundle import (
    METADATA_FILE,
    BundleMetadata,
    ModelBundle,
    build_default_bundle,
    build_models,
    load_bundle,
    save_bundle,
)
from core.bundles.model_card import INTENDED_USE, LIMITS, UNTRAINED_LIMIT, limits_markdown
from core.traits import TRAITS
from tests.synthetic import write_synthetic_set
from tests.training.cli import oceanstream, said

pytestmark = pytest.mark.slow


def old_bundle(folder: Path, seed: int, dataset: str = "demo") -> Path:
    """A trained bundle as written before cards: no `card` key, held-out means only."""
    import keras

    keras.utils.set_random_seed(seed)
    meta = BundleMetadata(version="", trained=True, num_frames=8, seed=seed, dataset=dataset)
    meta.metrics = {"test": {"mean": {"accuracy": 0.9, "baseline": 0.85, "pearson_r": 0.5}}}
    save_bundle(ModelBundle(meta, *build_models(meta)), folder)
    saved = json.loads((folder / METADATA_FILE).read_text())
    del saved["card"]
    (folder / METADATA_FILE).write_text(json.dumps(saved))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny run: 12 one-second clips of 6 persons, two epochs."""
    root = tmp_path_factory.mktemp("card")
    home = root / "home"
    labels = write_synthetic_set(root / "synthetic", clips=12, persons=6, seconds=1.0)
    extracted = oceanstream(home, "extract", str(labels), "--name", "synthetic", "--json")
    assert extracted.returncode == 0, extracted.stderr[-3000:]
    done = oceanstream(
        home, "train", "synthetic", "--output", str(root / "run"), "--epochs", "2",
        "--batch-size", "4", "--register", "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {"home": home, "report": json.loads(done.stdout)}


def test_training_writes_a_card_with_the_evaluated_figures(trained: dict) -> None:
    report = trained["report"]
    card = load_bundle(report["bundle"]).metadata.card
    assert card is not None and card == report["card"] and card["trained"] is True
    test = report["metrics"]["test"]
    evaluation = card["evaluation"]
    assert evaluation["split"] == "test" and evaluation["clips"] == test["clips"]
    for trait in TRAITS:
        assert evaluation["traits"][trait] == {
            "accuracy": test["traits"][trait]["accuracy"],
            "baseline": test["traits"][trait]["baseline"],
        }
    assert evaluation["mean"]["baseline"] == test["mean"]["baseline"]
    data = card["training_data"]
    assert (data["name"], data["clips"], data["persons"]) == ("synthetic", 12, 6)
    assert card["split"]["method"] == "grouped" and card["split"]["person_disjoint"] is True
    assert sum(card["split"]["clips"].values()) == 12
    assert card["backbone"]["name"] == "scratch"
    assert card["intended_use"] == INTENDED_USE and card["limits"] == list(LIMITS)


def test_models_show_prints_the_card_and_json_round_trips(trained: dict) -> None:
    home, report = trained["home"], trained["report"]
    prefix = report["version"][:6]
    shown = oceanstream(home, "models", "show", prefix)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert report["version"] in text and "trained yes" in text and "person-disjoint: yes" in text
    rows = [line.strip("│ ") for line in text.splitlines() if line.startswith("│")]
    assert [row.split()[0] for row in rows] == [*TRAITS, "mean"]  # O, C, E, A, N
    for trait, figures in report["card"]["evaluation"]["traits"].items():
        row = next(row for row in rows if row.startswith(trait))
        assert f"{figures['accuracy']:.4f}" in row and f"{figures['baseline']:.4f}" in row
    for limit in LIMITS:
        assert limit in text
    as_json = oceanstream(home, "models", "show", report["version"], "--json")
    assert as_json.returncode == 0, as_json.stderr
    view = json.loads(as_json.stdout)
    assert view["card"] == report["card"] and view["version"] == report["version"]
    assert view["trained"] is True and view["uri"] == report["bundle"]


def test_the_built_in_bundle_is_carded_untrained(tmp_path: Path) -> None:
    card = build_default_bundle(num_frames=8).metadata.card
    assert card is not None and card["trained"] is False
    assert card["evaluation"] is None and card["training_data"] is None
    assert card["limits"] == [UNTRAINED_LIMIT, *LIMITS]
    shown = oceanstream(tmp_path, "models", "show", "untrained", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["card"] == card
    text = oceanstream(tmp_path, "models", "show", "untrained").stdout
    assert "trained no" in text and UNTRAINED_LIMIT in text and "accuracy: none" in text


def test_a_bundle_saved_before_cards_loads_and_shows_unknowns(tmp_path: Path) -> None:
    folder = old_bundle(tmp_path / "old", seed=5)
    saved = json.loads((folder / METADATA_FILE).read_text())
    assert "card" not in saved
    bundle = load_bundle(folder)  # the version it was saved with still matches its content
    assert bundle.metadata.version == saved["version"] and bundle.metadata.card is None
    assert oceanstream(tmp_path, "models", "register", str(folder)).returncode == 0
    shown = oceanstream(tmp_path, "models", "show", saved["version"])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert "training data: demo from unknown" in text and "split: unknown" in text
    assert "backbone: unknown" in text and "0.9000" in text and LIMITS[1] in text
    done = oceanstream(tmp_path, "models", "show", saved["version"], "--json")
    card = json.loads(done.stdout)["card"]
    assert card["evaluation"]["traits"]["openness"] == {"accuracy": None, "baseline": None}
    assert card["evaluation"]["mean"] == {"accuracy": 0.9, "baseline": 0.85}


def test_markup_in_metadata_is_printed_literally(tmp_path: Path) -> None:
    folder = old_bundle(tmp_path / "marked", seed=6, dataset="[bold]x[/]")
    version = load_bundle(folder).metadata.version
    assert oceanstream(tmp_path, "models", "register", str(folder)).returncode == 0
    shown = oceanstream(tmp_path, "models", "show", version[:8])
    assert shown.returncode == 0 and "training data: [bold]x[/] from unknown" in shown.stdout


def test_an_unknown_version_is_a_one_line_usage_error(tmp_path: Path) -> None:
    done = oceanstream(tmp_path, "models", "show", "v-000000000000")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no model version" in said(done)


def test_docs_quote_the_cards_fixed_texts() -> None:
    root = Path(__file__).resolve().parents[2]
    assert limits_markdown() in (root / "docs" / "training.md").read_text(encoding="utf-8")
    readme = " ".join((root / "README.md").read_text(encoding="utf-8").replace(">", "").split())
    assert "oceanstream models show VERSION" in readme and "not an assessment" in readme
