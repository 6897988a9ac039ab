"""The per-frame CNNs and the compiled inference wrapper that runs them."""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest

from core.model.encoders import build_face_encoder, build_flow_encoder
from core.model.runtime import compile_inference


@pytest.fixture(scope="module")
def face_encoder() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_face_encoder()


@pytest.fixture(scope="module")
def flow_encoder() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_flow_encoder()


def _crops(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, 112, 112, 3)).astype(np.float32)


def _flow(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (count, 112, 112, 2)).astype(np.float32)


def test_face_encoder_maps_crops_to_512_features(face_encoder):
    assert face_encoder.input_shape == (None, 112, 112, 3)
    assert face_encoder.output_shape == (None, 512)
    features = compile_inference(face_encoder)(_crops(3))
    assert features.shape == (3, 512) and features.dtype == np.float32
    assert np.all(np.isfinite(features))
    assert np.abs(features[0] - features[1]).max() > 1e-4  # different faces, different tokens


def test_flow_encoder_maps_flow_to_256_features(flow_encoder):
    assert flow_encoder.input_shape == (None, 112, 112, 2)
    features = compile_inference(flow_encoder)(_flow(2))
    assert features.shape == (2, 256) and np.all(np.isfinite(features))
    assert np.abs(features[0] - features[1]).max() > 1e-4


def test_encoders_take_their_size_and_width_from_arguments():
    face = build_face_encoder(embed_dim=64, crop_size=64)
    flow = build_flow_encoder(embed_dim=32, size=48)
    assert face.output_shape == (None, 64) and face.input_shape == (None, 64, 64, 3)
    assert flow.output_shape == (None, 32) and flow.input_shape == (None, 48, 48, 2)


def test_inference_is_per_frame_whatever_the_batch(face_encoder):
    run = compile_inference(face_encoder)
    crops = _crops(4, seed=1)
    together = run(crops)
    alone = np.concatenate([run(crops[i : i + 1]) for i in range(4)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-4)
    eager = keras.ops.convert_to_numpy(face_encoder(crops, training=False))
    np.testing.assert_allclose(together, eager, rtol=1e-5, atol=1e-5)


def test_encoders_are_small_and_cheap(face_encoder, flow_encoder):
    assert face_encoder.count_params() < 250_000
    assert flow_encoder.count_params() < 100_000
    run = compile_inference(face_encoder)
    crops = _crops(16)
    run(crops)  # trace once
    start = time.perf_counter()
    for _ in range(5):
        run(crops)
    per_clip = (time.perf_counter() - start) / 5
    # A few ms here when idle; the bound only catches an accidentally heavy network.
    assert per_clip < 0.25


def test_compile_inference_wraps_plain_functions():
    run = compile_inference(lambda x, scale: keras.ops.sum(x, axis=-1) * scale, scale=2.0)
    np.testing.assert_allclose(run(np.ones((2, 3), np.float32)), [6.0, 6.0])
