"""Transfer learning: `oceanstream train --face-backbone` end to end, on the real backbones.

The session installs FaceRes and emotion once with the real command (npm and PyPI are
reached, as in CI: `tests.backbone_graph.installed_backbones`). A tiny synthetic set (12
one-second clips of 6 persons) is extracted once; a frozen-FaceRes run and a fine-tuned
emotion run train on it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from core.backbones import emotion, faceres, load_backbone
from core.backbones.transfer import (
    FEATURES,
    architecture_file,
    build_backbone_features,
    embedding_model,
    fine_tunable_layers,
)
from core.bundles.bundle import load_bundle
from core.errors import ModelBundleError
from core.storage.store import ArtifactStore
from core.training.backbone import prepare_backbone
from core.training.data import ClipRef
from core.training.extraction import DatasetLayout, ExtractionConfig
from core.training.features import FeatureCache, cache_name
from core.training.loop import TrainingConfig
from tests.backbone_graph import installed_backbones
from tests.synthetic import write_synthetic_set
from tests.training.cli import oceanstream, said

pytestmark = pytest.mark.slow

CLIPS = 12


@pytest.fixture(scope="module")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_backbones(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def extracted(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("transfer")
    home = root / "home"
    labels = write_synthetic_set(root / "synthetic", clips=CLIPS, persons=6, seconds=1.0)
    done = oceanstream(home, "extract", str(labels), "--name", "synthetic", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "home": home, "labels": labels}


@pytest.fixture(scope="module")
def frozen(extracted: dict, backbones: Path) -> dict:
    """FaceRes frozen, two epochs, registered."""
    run_dir = extracted["root"] / "faceres-run"
    done = oceanstream(
        extracted["home"], "train", "synthetic", "--output", str(run_dir), "--epochs", "2",
        "--batch-size", "4", "--face-backbone", "faceres", "--register", "--json",
        backbones=backbones,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return {"report": json.loads(done.stdout), "stderr": said(done), "run_dir": run_dir}


def layout_of(extracted: dict) -> DatasetLayout:
    store = ArtifactStore(f"file://{extracted['home'] / 'storage'}")
    return DatasetLayout(store, "datasets/synthetic")


def clip_refs(layout: DatasetLayout) -> list[ClipRef]:
    manifest = layout.read_manifest()
    assert manifest is not None
    return [ClipRef(c["id"], c["key"], tuple(c["labels"]), c["group"]) for c in manifest["clips"]]


def test_a_frozen_backbone_bundle_names_it_and_carries_it(frozen: dict) -> None:
    report = frozen["report"]
    bundle_dir = Path(report["bundle"])
    assert (bundle_dir / architecture_file("faceres")).is_file()
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    backbone = meta["backbone"]
    assert backbone["name"] == "faceres" and backbone["fine_tune_layers"] == 0
    (part,) = backbone["parts"]
    assert part["package"] == "@vladmandic/human" and part["version"] == "3.3.6"
    assert part["licence"].startswith("MIT") and len(part["model_sha256"]) == 64
    assert meta["training"]["settings"]["face_backbone"] == "faceres"
    card = report["card"]["backbone"]
    assert card["name"] == "faceres" and card["licence"].startswith("faceres: MIT")
    assert "VGGFace2" in card["training_data"]
    # The backbone's weights are in the bundle: about 13 MB of FaceRes in the face encoder.
    assert (bundle_dir / "face_encoder.weights.h5").stat().st_size > 10_000_000


def test_the_backbone_runs_once_per_clip_not_per_epoch(
    frozen: dict, extracted: dict, backbones: Path
) -> None:
    training = frozen["report"]["training"]
    assert training["epochs_run"] == 2
    # Every clip of every split, once: 12 backbone calls for two epochs of training.
    assert training["backbone_features"]["computed"] == CLIPS
    assert training["backbone_features"]["reused"] == 0
    assert f"features of {CLIPS} clips computed" in frozen["stderr"]
    # The stored features are found again: a second preparation runs the backbone on none.
    layout = layout_of(extracted)
    refs = clip_refs(layout)
    config = ExtractionConfig.from_dict(layout.read_manifest()["config"])
    _, cache, counts = prepare_backbone(
        layout, refs, refs[:4], config, TrainingConfig(face_backbone="faceres"), backbones,
        log=lambda line: None,
    )  # fmt: skip
    assert (counts.computed, counts.reused) == (0, CLIPS)
    calls: list[int] = []
    model = load_backbone("faceres", backbones)
    features = build_backbone_features({"faceres": embedding_model("faceres", model)}, 112)

    def counting(crops: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        return np.asarray(features(crops, training=False))

    fresh = FeatureCache(layout, "counted")
    assert fresh.ensure(refs, config, counting).computed == CLIPS
    assert fresh.ensure(refs, config, counting).reused == CLIPS
    assert calls == [config.num_frames] * CLIPS  # one call per clip, all of its frames
    np.testing.assert_allclose(fresh.read(refs[0]), cache.read(refs[0]), atol=1e-4)


def test_the_bundle_serves_in_a_fresh_process_without_the_backbone_installed(
    frozen: dict, extracted: dict, tmp_path: Path
) -> None:
    report = frozen["report"]
    clip = extracted["labels"].parent / "person00.seg0.mp4"
    done = oceanstream(
        tmp_path, "analyze", str(clip), "--model", report["bundle"], "--json",
        backbones=tmp_path / "no-backbones",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout)
    assert row["status"] == "done" and row["model_version"] == report["version"]
    # Serving runs the bundle's own backbone: on a clip's stored crops it gives the features
    # training used, and the projection of them is what encode_faces returns.
    bundle = load_bundle(report["bundle"])
    assert bundle.metadata.backbone is not None
    (part,) = bundle.metadata.backbone["parts"]
    layout = layout_of(extracted)
    ref = next(r for r in clip_refs(layout) if r.clip_id == "person00.seg0.mp4")
    arrays = layout.store.get_arrays(layout.store.uri(ref.key))
    crops = arrays["crops"][arrays["mask"]]
    served = bundle.face_encoder.get_layer(FEATURES)(crops.astype(np.float32))
    trained_on = FeatureCache(layout, cache_name("faceres", {"faceres": part["model_sha256"]}))
    cached = trained_on.read(ref)[arrays["mask"]]
    np.testing.assert_allclose(np.asarray(served), cached, rtol=1e-4, atol=1e-4)
    projection = bundle.face_encoder.get_layer("face_projection")
    np.testing.assert_allclose(
        bundle.encode_faces(crops), np.asarray(projection(cached)), rtol=1e-4, atol=1e-4
    )


def test_models_show_names_the_backbone_and_its_licence(frozen: dict, extracted: dict) -> None:
    shown = oceanstream(extracted["home"], "models", "show", frozen["report"]["version"])
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())
    assert "backbone: faceres; trained on: faceres: HSE FaceRes" in text
    assert "@vladmandic/human@3.3.6; licence MIT" in text


def test_a_bundle_without_its_backbone_file_is_refused(frozen: dict, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(frozen["report"]["bundle"], copy)
    (copy / architecture_file("faceres")).unlink()
    with pytest.raises(ModelBundleError, match=r"lacks backbone-faceres\.json, the architecture"):
        load_bundle(copy)


def test_a_missing_backbone_is_one_line_naming_the_install_command(
    extracted: dict, tmp_path: Path
) -> None:
    done = oceanstream(
        extracted["home"], "train", "synthetic", "--output", str(tmp_path / "run"),
        "--face-backbone", "faceres+emotion", backbones=tmp_path / "empty",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "backbone 'faceres' is not installed" in said(done)
    assert "run `oceanstream backbones install faceres`" in said(done)
    assert not (tmp_path / "run").exists()


def test_backbone_options_are_checked() -> None:
    with pytest.raises(ValueError, match="needs a pretrained --face-backbone"):
        TrainingConfig(fine_tune_layers=2)
    with pytest.raises(ValueError, match=r"face_backbone must be one of .*faceres\+emotion"):
        TrainingConfig(face_backbone="vgg")
    with pytest.raises(ValueError, match="0 or more"):
        TrainingConfig(face_backbone="emotion", fine_tune_layers=-1)
    config = TrainingConfig(face_backbone="faceres+emotion", fine_tune_layers=3)
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert TrainingConfig.from_dict({"epochs": 2}).face_backbone == "scratch"  # older runs


def test_fine_tuning_trains_only_the_last_layers(
    extracted: dict, backbones: Path, tmp_path: Path
) -> None:
    done = oceanstream(
        extracted["home"], "train", "synthetic", "--output", str(tmp_path / "run"),
        "--epochs", "1", "--batch-size", "4", "--face-backbone", "emotion",
        "--fine-tune-layers", "2", "--json", backbones=backbones,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["card"]["backbone"]["fine_tune_layers"] == 2
    trained = load_bundle(report["bundle"]).face_encoder.get_layer(FEATURES).get_layer("emotion")
    installed = embedding_model("emotion", load_backbone("emotion", backbones))
    layers = [layer.name for layer in fine_tunable_layers(installed)]
    changed = [
        name
        for name in layers
        if any(
            not np.array_equal(a, b)
            for a, b in zip(
                trained.get_layer(name).get_weights(),
                installed.get_layer(name).get_weights(),
                strict=True,
            )
        )
    ]
    assert changed == layers[-2:]
    for layer in installed.layers:  # batch norm statistics never move
        if isinstance(layer, keras.layers.BatchNormalization):
            for a, b in zip(
                trained.get_layer(layer.name).get_weights(), layer.get_weights(), strict=True
            ):
                np.testing.assert_array_equal(a, b)


def test_backbone_inputs_are_prepared_as_each_backbone_expects(backbones: Path) -> None:
    """In-graph preprocessing equals the backbones' own (`faceres.embed`, `prepare_faces`)."""
    from skimage import data

    face = cv2.resize(data.astronaut()[30:230, 120:320], (224, 224), interpolation=cv2.INTER_AREA)
    model = load_backbone("faceres", backbones)
    features = build_backbone_features({"faceres": embedding_model("faceres", model)}, 224)
    got = np.asarray(features(face[None].astype(np.float32)))
    want = faceres.embed(model, face[None])
    np.testing.assert_allclose(got / np.linalg.norm(got), want, atol=1e-5)
    small = cv2.resize(face, (64, 64), interpolation=cv2.INTER_AREA)
    model = load_backbone("emotion", backbones)
    features = build_backbone_features({"emotion": embedding_model("emotion", model)}, 64)
    got = np.asarray(features(small[None].astype(np.float32)))
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    want, _ = emotion.embed(model, grey[None])
    np.testing.assert_allclose(got / np.linalg.norm(got), want, atol=2e-2)


def test_cache_names_follow_the_installed_models() -> None:
    a = cache_name("faceres+emotion", {"faceres": "1" * 64, "emotion": "2" * 64})
    b = cache_name("faceres+emotion", {"faceres": "1" * 64, "emotion": "3" * 64})
    assert a.startswith("faceres_emotion-") and a != b
