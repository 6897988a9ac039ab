"""Model bundles: metadata, the seeded default, save/load round trips and every load failure."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.bundles.bundle import (
    METADATA_FILE,
    WEIGHT_FILES,
    BundleMetadata,
    ModelBundle,
    build_default_bundle,
    content_version,
    load_bundle,
    save_bundle,
)
from core.bundles.checks import MAX_DIMENSIONS
from core.errors import ModelBundleError
from core.traits import TRAITS

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 4


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    return build_default_bundle(num_frames=FRAMES, seed=1234)


@pytest.fixture(scope="module")
def saved(bundle: ModelBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_bundle(bundle, tmp_path_factory.mktemp("bundles") / "default")


def _tokens(batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    static = rng.normal(size=(batch, FRAMES, 512)).astype(np.float32)
    dynamic = rng.normal(size=(batch, FRAMES, 256)).astype(np.float32)
    mask = np.ones((batch, FRAMES), bool)
    mask[0, -1] = False
    return static, dynamic, mask, np.ones((batch, FRAMES), bool)


def _copy(saved: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    target.mkdir()
    for path in saved.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def _edit_metadata(directory: Path, **changes) -> None:
    path = directory / METADATA_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# --- metadata ---------------------------------------------------------------------------


def test_metadata_round_trips_and_defaults_optional_keys():
    metadata = BundleMetadata(version="v-0", trained=True, num_frames=8, metrics={"mae": 0.1})
    assert BundleMetadata.from_dict(metadata.to_dict()) == metadata
    minimal = BundleMetadata.from_dict({"version": "x", "trained": False, "num_frames": 16})
    assert minimal.traits == list(TRAITS) and minimal.format_version == 1
    assert (minimal.crop_size, minimal.flow_size, minimal.fusion_dim) == (112, 112, 128)
    assert minimal.flow_method == "dis" and minimal.metrics == {} and minimal.dataset is None


def test_metadata_rejects_unknown_and_missing_keys():
    with pytest.raises(ModelBundleError, match=r"unknown bundle metadata keys.*colour"):
        BundleMetadata.from_dict({"version": "x", "trained": False, "num_frames": 4, "colour": 1})
    with pytest.raises(ModelBundleError, match=r"lacks required keys.*num_frames"):
        BundleMetadata.from_dict({"version": "x", "trained": False})
    with pytest.raises(ModelBundleError, match="JSON object"):
        BundleMetadata.from_dict(["not", "a", "dict"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": 2}, "format_version 2"),
        ({"traits": list(reversed(TRAITS))}, "trait order"),
        ({"static_dim": 0}, "static_dim must be a positive integer"),
        ({"fusion_dim": 130}, "divisible by num_heads"),
        ({"trained": "yes"}, "true or false"),
        ({"num_frames": 10**6}, "num_frames is 1000000, over the limit of 256"),
        ({"static_dim": 10**9}, "static_dim is 1000000000, over the limit of 4096"),
        ({"crop_size": 10**5}, "crop_size is 100000, over the limit of 512"),
        ({"num_heads": 128, "fusion_dim": 256}, "num_heads is 128, over the limit of 64"),
        ({"dropout_rate": 1.5}, r"dropout_rate must be in \[0, 1\)"),
    ],
)
def test_metadata_validation_says_what_is_wrong(change, message):
    metadata = BundleMetadata(version="x", trained=False, num_frames=4)
    for key, value in change.items():
        setattr(metadata, key, value)
    with pytest.raises(ModelBundleError, match=message):
        metadata.validate()


# --- the default bundle -----------------------------------------------------------------


def test_default_bundle_is_untrained_and_versioned_by_its_weights(bundle: ModelBundle):
    assert bundle.metadata.trained is False
    assert re.fullmatch(r"untrained-[0-9a-f]{12}", bundle.metadata.version)
    assert bundle.metadata.version == content_version(bundle)
    assert bundle.metadata.num_frames == FRAMES and bundle.metadata.seed == 1234
    assert build_default_bundle(FRAMES, seed=1234).metadata.version == bundle.metadata.version
    assert build_default_bundle(FRAMES, seed=99).metadata.version != bundle.metadata.version


_VERSION_SCRIPT = """
import hashlib, keras
from core.bundles.bundle import build_default_bundle
bundle = build_default_bundle(num_frames=4, seed=1234)
digest = hashlib.sha256()
for model in (bundle.face_encoder, bundle.flow_encoder, bundle.fusion_model):
    for weight in model.weights:
        digest.update(keras.ops.convert_to_numpy(weight).tobytes())
print(bundle.metadata.version, digest.hexdigest())
"""


def test_default_bundle_is_bit_identical_across_processes(bundle: ModelBundle):
    env_script = [sys.executable, "-c", _VERSION_SCRIPT]
    runs = [
        subprocess.Popen(
            env_script, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=120)[0].strip().splitlines()[-1] for run in runs]
    assert outputs[0] == outputs[1]
    assert outputs[0].split()[0] == bundle.metadata.version


# --- inference --------------------------------------------------------------------------


def test_encoders_return_tokens_for_each_frame(bundle: ModelBundle):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (FRAMES, 112, 112, 3), dtype=np.uint8)
    flow = rng.uniform(-1, 1, (FRAMES, 112, 112, 2)).astype(np.float32)
    faces, motion = bundle.encode_faces(crops), bundle.encode_flow(flow)
    assert faces.shape == (FRAMES, 512) and faces.dtype == np.float32
    assert motion.shape == (FRAMES, 256) and motion.dtype == np.float32
    assert bundle.encode_faces(crops[:0]).shape == (0, 512)
    with pytest.raises(ValueError, match=r"face input \[T, 112, 112, 3\]"):
        bundle.encode_faces(crops[:, :64])


def test_predict_returns_scores_and_attention(bundle: ModelBundle):
    static, dynamic, static_mask, dynamic_mask = _tokens()
    scores, attention = bundle.predict(static, dynamic, static_mask, dynamic_mask)
    assert scores.shape == (2, len(TRAITS)) and np.all((scores >= 0) & (scores <= 1))
    assert attention.shape == (2, 2, 4, FRAMES, FRAMES)
    assert np.all(attention[0, 1, :, :, -1] == 0)  # the faceless frame is never attended to
    assert attention[1].std(axis=-1).mean() > 1e-3  # even untrained, attention follows content
    unmasked, _ = bundle.predict(static, dynamic)
    assert unmasked.shape == (2, 5)
    with pytest.raises(ValueError, match="mask of shape"):
        bundle.predict(static, dynamic, static_mask[:, :2])
    with pytest.raises(ValueError, match=r"static \[B, T, 512\]"):
        bundle.predict(static[..., :100], dynamic)


# --- save and load ----------------------------------------------------------------------


def test_save_writes_metadata_and_one_weights_file_per_model(saved: Path, bundle: ModelBundle):
    assert sorted(p.name for p in saved.iterdir()) == sorted(
        [METADATA_FILE, *WEIGHT_FILES.values()]
    )
    stored = json.loads((saved / METADATA_FILE).read_text())
    assert stored["version"] == bundle.metadata.version and stored["trained"] is False


def test_loaded_bundle_predicts_exactly_like_the_saved_one(saved: Path, bundle: ModelBundle):
    loaded = load_bundle(saved)
    assert loaded.metadata == bundle.metadata
    inputs = _tokens(3, seed=4)
    for got, expected in zip(loaded.predict(*inputs), bundle.predict(*inputs), strict=True):
        np.testing.assert_array_equal(got, expected)
    crops = np.random.default_rng(2).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    np.testing.assert_array_equal(loaded.encode_faces(crops), bundle.encode_faces(crops))
    assert load_bundle(saved / METADATA_FILE).metadata.version == bundle.metadata.version


def test_trained_bundle_version_covers_weights_and_metadata(saved: Path, tmp_path: Path):
    trained = load_bundle(saved)
    trained.metadata.trained = True
    trained.metadata.metrics = {"val_mae": 0.12}
    directory = save_bundle(trained, tmp_path / "trained")
    version = trained.metadata.version
    assert re.fullmatch(r"v-[0-9a-f]{12}", version)
    assert load_bundle(directory).metadata.version == version
    trained.metadata.metrics = {"val_mae": 0.11}
    assert content_version(trained) != version
    trained.metadata.metrics = {"val_mae": 0.12}
    trained.metadata.created_at = "2000-01-01T00:00:00+00:00"  # when is not what
    assert content_version(trained) == version


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / METADATA_FILE).unlink(), "lacks bundle.json"),
        (lambda d: (d / WEIGHT_FILES["flow_encoder"]).unlink(), "lacks flow_encoder"),
        (lambda d: (d / METADATA_FILE).write_text("{not json"), "cannot read bundle metadata"),
        (
            lambda d: (d / WEIGHT_FILES["fusion_model"]).write_bytes(b"corrupted" * 100),
            "cannot load fusion_model weights",
        ),
        (lambda d: _edit_metadata(d, fusion_dim=64), "cannot load fusion_model weights"),
        (lambda d: _edit_metadata(d, static_dim=256), "cannot load face_encoder weights"),
        (lambda d: _edit_metadata(d, format_version=9), "format_version 9"),
        (lambda d: _edit_metadata(d, traits=["openness"]), "trait order"),
        (lambda d: _edit_metadata(d, extra=True), "unknown bundle metadata keys"),
        (lambda d: _edit_metadata(d, version="untrained-000000000000"), "changed after saving"),
    ],
    ids=[
        "no-metadata",
        "no-weights",
        "bad-json",
        "corrupt-weights",
        "fusion-shape",
        "encoder-shape",
        "format",
        "traits",
        "unknown-key",
        "tampered",
    ],
)
def test_damaged_bundles_raise_model_bundle_error(saved: Path, tmp_path: Path, damage, message):
    directory = _copy(saved, tmp_path)
    damage(directory)
    with pytest.raises(ModelBundleError, match=message):
        load_bundle(directory)


def test_missing_directory_raises_model_bundle_error(tmp_path: Path):
    with pytest.raises(ModelBundleError, match="not an existing directory"):
        load_bundle(tmp_path / "nowhere")


def test_bounds_admit_the_defaults_and_the_bounds_themselves():
    BundleMetadata(version="x", trained=False, num_frames=16).validate()
    BundleMetadata(version="x", trained=False, **MAX_DIMENSIONS).validate()


@pytest.mark.parametrize("dimension", ["num_frames", "static_dim", "fusion_dim"])
def test_absurd_dimensions_are_refused_before_building(saved: Path, tmp_path: Path, dimension: str):
    # Before: num_frames=10**6 or a 10**9-wide layer ended in ResourceExhaustedError (or a
    # machine out of memory) while building; now load refuses the metadata at once.
    directory = _copy(saved, tmp_path)
    _edit_metadata(directory, **{dimension: 10**9})
    with pytest.raises(ModelBundleError, match=f"{dimension} is 1000000000, over the limit"):
        load_bundle(directory)


@pytest.mark.parametrize("filename", [METADATA_FILE, WEIGHT_FILES["face_encoder"]])
def test_links_leading_out_of_the_bundle_are_refused(saved: Path, tmp_path: Path, filename: str):
    directory = _copy(saved, tmp_path)
    outside = tmp_path / "elsewhere" / filename
    outside.parent.mkdir()
    (directory / filename).rename(outside)
    (directory / filename).symlink_to(outside)
    with pytest.raises(
        ModelBundleError, match=rf"{re.escape(filename)} is a link to .*elsewhere.*outside"
    ):
        load_bundle(directory)


def test_links_inside_the_bundle_and_a_linked_folder_are_fine(saved: Path, tmp_path: Path):
    directory = _copy(saved, tmp_path)
    weights = directory / WEIGHT_FILES["flow_encoder"]
    weights.rename(directory / "flow.h5")
    weights.symlink_to("flow.h5")
    (tmp_path / "link").symlink_to(directory)
    assert load_bundle(tmp_path / "link").metadata.version == load_bundle(saved).metadata.version
