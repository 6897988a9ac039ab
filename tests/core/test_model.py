"""The fusion model: shapes, masking, information flow through attention, serialisation."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest

from core.model import (
    CompletePersonalityModel,
    CrossAttention,
    FeatureFusion,
    PersonalityPredictionHead,
    get_attention_weights,
    masked_attention,
    plot_attention_map,
    sinusoidal_positions,
)
from core.model.runtime import compile_inference

# Small dimensions keep the tests fast; one test uses the production defaults.
SMALL = {"static_dim": 12, "dynamic_dim": 8, "fusion_dim": 16, "num_heads": 2}


def _inputs(batch: int = 2, frames: int = 4, seed: int = 0, static_dim=12, dynamic_dim=8):
    rng = np.random.default_rng(seed)
    static = rng.normal(size=(batch, frames, static_dim)).astype(np.float32)
    dynamic = rng.normal(size=(batch, frames, dynamic_dim)).astype(np.float32)
    return static, dynamic


def _small_model(dropout_rate: float = 0.0, seed: int = 0) -> CompletePersonalityModel:
    keras.utils.set_random_seed(seed)
    return CompletePersonalityModel(**SMALL, dropout_rate=dropout_rate)


def _scores(model, *inputs) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(tuple(inputs), training=False))


def test_default_model_scores_sequences_and_single_vectors():
    model = CompletePersonalityModel()
    static, dynamic = _inputs(2, 3, static_dim=512, dynamic_dim=256)
    for inputs in ((static, dynamic), (static[:, 0], dynamic[:, 0])):
        scores = _scores(model, *inputs)
        assert scores.shape == (2, 5)
        assert np.all((scores >= 0) & (scores <= 1))
    assert model.cross_attention.num_heads == 4
    assert isinstance(model.fusion, FeatureFusion)
    assert isinstance(model.head, PersonalityPredictionHead)


def test_attention_weights_shape_rows_sum_to_one_and_not_uniform():
    model = _small_model()
    static, dynamic = _inputs(2, 5)
    weights = get_attention_weights(model.cross_attention, static, dynamic)
    assert weights.shape == (2, 2, 2, 5, 5)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, atol=1e-5)
    # Random content must produce content-dependent weights, not 1/T everywhere.
    assert weights.std(axis=-1).mean() > 0.02
    assert np.abs(weights - 1 / 5).max() > 0.1


@pytest.mark.parametrize("stream", [0, 1])
def test_each_stream_changes_the_output(stream):
    model = _small_model()
    inputs = list(_inputs(2, 4))
    before = _scores(model, *inputs)
    inputs[stream] = inputs[stream] + np.random.default_rng(9).normal(size=inputs[stream].shape)
    after = _scores(model, *inputs)
    assert np.abs(after - before).max() > 1e-4


def test_masked_frames_get_zero_weight_and_do_not_change_scores():
    model = _small_model()
    static, dynamic = _inputs(2, 4)
    static_mask = np.array([[True, True, False, False], [True, True, True, True]])
    dynamic_mask = np.ones((2, 4), bool)
    weights = get_attention_weights(model, static, dynamic, static_mask, dynamic_mask)
    assert np.all(weights[0, 1, :, :, 2:] == 0)  # flow queries never look at faceless frames
    assert np.all(weights[0, 0, :, 2:, :] == 0)  # faceless frames ask nothing
    np.testing.assert_allclose(weights[0, 0, :, :2].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(weights[0, 1].sum(-1), 1.0, atol=1e-5)

    scores = _scores(model, static, dynamic, static_mask, dynamic_mask)
    changed = static.copy()
    changed[0, 2:] += 100.0
    rescored = _scores(model, changed, dynamic, static_mask, dynamic_mask)
    np.testing.assert_allclose(rescored, scores, atol=1e-6)


def test_all_masked_rows_are_zero_and_outputs_finite():
    model = _small_model()
    static, dynamic = _inputs(2, 3)
    no_faces = np.zeros((2, 3), bool)
    weights = get_attention_weights(model, static, dynamic, no_faces, None)
    assert np.all(weights == 0)
    assert np.all(np.isfinite(_scores(model, static, dynamic, no_faces, np.ones((2, 3), bool))))


def _numpy_masked_attention(query, key, value, mask):
    """Reference: [B,H,T,d] heads, boolean [B,1,Tq,Tk] mask, zero rows where all keys masked."""
    logits = query @ np.swapaxes(key, -1, -2) / math.sqrt(query.shape[-1])
    logits = np.where(mask, logits, -np.inf)
    peak = np.max(logits, axis=-1, keepdims=True)
    scores = np.where(mask, np.exp(logits - np.where(np.isfinite(peak), peak, 0.0)), 0.0)
    total = scores.sum(-1, keepdims=True)
    weights = np.divide(scores, total, out=np.zeros_like(scores), where=total > 0)
    return weights @ value, weights


def test_masked_attention_matches_numpy_reference():
    rng = np.random.default_rng(3)
    query, key, value = (rng.normal(size=(2, 3, 4, 5)).astype(np.float32) for _ in range(3))
    mask = rng.random((2, 1, 4, 4)) > 0.4
    mask[0, 0, 1] = False  # one query row with every key masked
    out, weights = masked_attention(query, key, value, mask)
    ref_out, ref_weights = _numpy_masked_attention(query, key, value, mask)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weights), ref_weights, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-5)


def _numpy_positions(length: int, dim: int) -> np.ndarray:
    half = dim // 2
    angles = np.arange(length)[:, None] * np.exp(np.arange(half) * -math.log(10000.0) / half)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1)


def _numpy_heads(tokens, dense, heads):
    projected = tokens @ keras.ops.convert_to_numpy(dense.kernel) + keras.ops.convert_to_numpy(
        dense.bias
    )
    batch, length, width = projected.shape
    return projected.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)


def test_cross_attention_weights_match_numpy_from_the_layer_parameters():
    layer = CrossAttention(**SMALL)
    static, dynamic = _inputs(2, 4, seed=5)
    static_mask = np.array([[True, False, True, True], [True, True, True, True]])
    dynamic_mask = np.array([[True, True, True, True], [False, True, True, False]])
    weights = get_attention_weights(layer, static, dynamic, static_mask, dynamic_mask)

    positions = _numpy_positions(4, SMALL["fusion_dim"])
    tokens = {
        name: x @ keras.ops.convert_to_numpy(proj.kernel)
        + keras.ops.convert_to_numpy(proj.bias)
        + positions
        for name, x, proj in (
            ("static", static, layer.static_projection),
            ("dynamic", dynamic, layer.dynamic_projection),
        )
    }
    masks = {"static": static_mask, "dynamic": dynamic_mask}
    for index, (query, key, block) in enumerate(
        (
            ("static", "dynamic", layer.static_to_dynamic),
            ("dynamic", "static", layer.dynamic_to_static),
        )
    ):
        pair = masks[query][:, None, :, None] & masks[key][:, None, None, :]
        _, reference = _numpy_masked_attention(
            _numpy_heads(tokens[query], block.query_dense, 2),
            _numpy_heads(tokens[key], block.key_dense, 2),
            _numpy_heads(tokens[key], block.value_dense, 2),
            pair,
        )
        np.testing.assert_allclose(weights[:, index], reference, atol=1e-5)


def test_sinusoidal_positions_have_no_weights_and_differ_by_frame():
    codes = keras.ops.convert_to_numpy(sinusoidal_positions(7, 16))
    np.testing.assert_allclose(codes, _numpy_positions(7, 16), atol=1e-5)
    assert len({tuple(np.round(row, 5)) for row in codes}) == 7


def test_wrong_feature_size_is_rejected():
    with pytest.raises(ValueError, match="static features of size 12"):
        _small_model()(_inputs(1, 2, static_dim=10))


@pytest.mark.parametrize(
    "layer",
    [
        CrossAttention(**SMALL, dropout_rate=0.1),
        FeatureFusion(16, 0.2),
        PersonalityPredictionHead(32, 0.25),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_configs_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config


def test_model_config_and_keras_file_round_trip(tmp_path: Path):
    model = _small_model(dropout_rate=0.3)
    static, dynamic = _inputs(3, 4)
    mask = np.array([[True] * 4, [True, False, True, False], [False] * 4])
    expected = _scores(model, static, dynamic, mask, np.ones((3, 4), bool))

    clone = CompletePersonalityModel.from_config(model.get_config())
    clone.build(((None, 4, 12), (None, 4, 8)))
    clone.set_weights(model.get_weights())
    assert clone.get_config() == model.get_config()
    np.testing.assert_array_equal(
        _scores(clone, static, dynamic, mask, np.ones((3, 4), bool)), expected
    )

    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, CompletePersonalityModel)
    np.testing.assert_array_equal(
        _scores(loaded, static, dynamic, mask, np.ones((3, 4), bool)), expected
    )


@pytest.mark.parametrize("with_masks", [False, True], ids=["no-masks", "masks"])
def test_fit_learns_a_synthetic_target(with_masks):
    model = _small_model(dropout_rate=0.1)
    rng = np.random.default_rng(1)
    static, dynamic = _inputs(64, 3, seed=1)
    direction = rng.normal(size=(12, 5))
    target = 1 / (1 + np.exp(-(static.mean(axis=1) @ direction)))  # learnable from the input
    inputs: tuple[np.ndarray, ...] = (static, dynamic)
    if with_masks:
        static_mask = rng.random((64, 3)) > 0.2
        inputs = (static, dynamic, static_mask, np.ones((64, 3), bool))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse", metrics=["mae", "mse"])
    history = model.fit(inputs, target.astype(np.float32), epochs=12, batch_size=16, verbose=0)
    losses = history.history["loss"]
    assert {"loss", "mae", "mse"} <= set(history.history)
    assert losses[-1] < 0.6 * losses[0]


def test_compiled_inference_matches_eager_call_for_any_batch():
    model = _small_model()
    run = compile_inference(model, return_attention_scores=True)
    for batch in (1, 3, 2):
        static, dynamic = _inputs(batch, 4, seed=batch)
        mask = np.ones((batch, 4), bool)
        scores, attention = run((static, dynamic, mask, mask))
        eager_scores, eager_attention = model(
            (static, dynamic, mask, mask), training=False, return_attention_scores=True
        )
        np.testing.assert_allclose(scores, keras.ops.convert_to_numpy(eager_scores), atol=1e-6)
        np.testing.assert_allclose(
            attention, keras.ops.convert_to_numpy(eager_attention), atol=1e-6
        )
        assert attention.shape == (batch, 2, 2, 4, 4)


PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_attention_map_writes_save_path_with_both_directions(tmp_path: Path):
    import matplotlib

    backend = matplotlib.get_backend()
    weights = np.random.default_rng(0).dirichlet(np.ones(4), size=(2, 3, 4))
    target = tmp_path / "maps" / "clip.png"
    paths = plot_attention_map(weights, target, title="clip")
    assert paths == [target]
    assert target.read_bytes()[:8] == PNG
    assert sorted(p.name for p in target.parent.iterdir()) == ["clip.png"]
    single = plot_attention_map(weights[0], tmp_path / "one.png")
    assert single == [tmp_path / "one.png"]
    assert single[0].read_bytes()[:8] == PNG
    assert matplotlib.get_backend() == backend
    with pytest.raises(ValueError, match=r"\[2, H, T, T\]"):
        plot_attention_map(weights[0, 0], tmp_path / "bad.png")


def test_an_untrained_models_warning_is_drawn_on_the_figure_in_red(tmp_path: Path):
    from PIL import Image

    weights = np.random.default_rng(1).dirichlet(np.ones(4), size=(2, 2, 4))

    def red_pixels(path: Path) -> int:
        rgb = np.asarray(Image.open(path).convert("RGB")).astype(int)
        red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        return int(((red > 150) & (green < 90) & (blue < 90)).sum())

    [plain] = plot_attention_map(weights, tmp_path / "plain.png", title="clip")
    [marked] = plot_attention_map(
        weights, tmp_path / "marked.png", title="clip", warning="untrained model"
    )
    assert red_pixels(plain) == 0 and red_pixels(marked) > 50


def test_plot_attention_map_draws_a_batch_from_the_model(tmp_path: Path):
    model = _small_model()
    static, dynamic = _inputs(batch=4, frames=16)
    weights = get_attention_weights(model.cross_attention, static, dynamic)
    assert weights.shape == (4, 2, 2, 16, 16)
    paths = plot_attention_map(weights, save_path=tmp_path / "batch.png")
    assert paths == [tmp_path / f"batch_{index}.png" for index in range(4)]
    assert all(path.read_bytes()[:8] == PNG for path in paths)
    one = plot_attention_map(weights[:1], save_path=tmp_path / "first.png")
    assert one == [tmp_path / "first.png"] and one[0].exists()


def test_attention_plot_imports_neither_tensorflow_nor_keras():
    import subprocess
    import sys

    code = (
        "import sys, core.plots.attention\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_agreed_import_path_names_the_model_and_batching_loads_no_keras():
    import subprocess
    import sys

    import core.model
    import core.model.personality

    assert core.model.CompletePersonalityModel is core.model.personality.CompletePersonalityModel
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = core.model.nothing_here  # type: ignore[attr-defined]
    code = (
        "import sys, core.model.batching\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
