"""The voice in the fusion model: shapes, masks, serialisation, and a planted-signal test.

The planted signal: trait labels that depend only on the pitch of an espeak-ng voice, with
face and flow tokens that are pure noise. A voice model learns them (held-out error well under
the mean baseline); the two-stream model cannot, and shuffling the held-out clips' audio
tokens takes the voice model's gain away.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from core.audio.voice import AUDIO_TOKEN_DIM
from core.model.personality import (
    AudioEncoder,
    CompletePersonalityModel,
    VoiceAttention,
    get_attention_weights,
    plot_attention_map,
)
from core.model.runtime import compile_inference
from tests.support.voices import CLIPS, EPOCHS, FRAMES, HELD_OUT, SMALL, planted_voice_data

AUDIO = 10


def _inputs(batch: int, frames: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.normal(size=(batch, frames, dim)).astype(np.float32) for dim in (12, 8, AUDIO))


def _voice_model(seed: int = 0, dropout_rate: float = 0.0) -> CompletePersonalityModel:
    keras.utils.set_random_seed(seed)
    return CompletePersonalityModel(**SMALL, dropout_rate=dropout_rate, audio_dim=AUDIO)


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def test_two_stream_model_is_unchanged_by_the_option() -> None:
    """Same variables in the same order, and a config saved before the option still loads."""
    keras.utils.set_random_seed(0)
    plain = CompletePersonalityModel(**SMALL)
    plain.build(((None, 4, 12), (None, 4, 8)))
    voice = _voice_model()
    voice.build(((None, 4, 12), (None, 4, 8), (None, 4, AUDIO)))
    assert plain.voice is None and plain.get_config()["audio_dim"] is None
    shapes = [tuple(w.shape) for w in plain.weights]
    head = [i for i, w in enumerate(plain.weights) if "head" in w.path]
    voice_shapes = [tuple(w.shape) for w in voice.weights]
    # Only the head's input grows (3 pooled streams, not 2); the voice's weights come after.
    assert voice_shapes[: head[0]] == shapes[: head[0]]
    assert len(voice.weights) > len(plain.weights)
    old_config = {k: v for k, v in plain.get_config().items() if k != "audio_dim"}
    assert CompletePersonalityModel.from_config(old_config).voice is None


def test_voice_model_returns_three_directions_and_masks_absent_audio() -> None:
    model = _voice_model()
    static, dynamic, audio = _inputs(3, 5)
    ones = np.ones((3, 5), bool)
    audio_mask = np.array([[True] * 5, [True, True, False, False, False], [False] * 5])
    scores, attention = model(
        (static, dynamic, audio, ones, ones, audio_mask),
        training=False,
        return_attention_scores=True,
    )
    attention = _numpy(attention)
    assert _numpy(scores).shape == (3, 5) and attention.shape == (3, 3, 2, 5, 5)
    np.testing.assert_allclose(attention[0, 2].sum(axis=-1), 1.0, atol=1e-5)
    assert not attention[1, 2, :, 2:].any() and not attention[2, 2].any()
    # A clip without audio scores the same whatever its (masked) audio tokens hold.
    other = np.random.default_rng(9).normal(size=audio.shape).astype(np.float32)
    again = model((static, dynamic, other, ones, ones, audio_mask), training=False)
    np.testing.assert_allclose(_numpy(again)[2], _numpy(scores)[2], atol=1e-6)
    assert np.abs(_numpy(again)[0] - _numpy(scores)[0]).max() > 1e-4
    direct = get_attention_weights(
        model, static, dynamic, ones, ones, audio=audio, audio_mask=audio_mask
    )
    np.testing.assert_allclose(direct, attention, atol=1e-6)


def test_compiled_inference_matches_the_eager_call() -> None:
    model = _voice_model()
    run = compile_inference(model, return_attention_scores=True)
    for batch in (1, 3):
        static, dynamic, audio = _inputs(batch, 4, seed=batch)
        ones = np.ones((batch, 4), bool)
        audio_mask = ones.copy()
        audio_mask[0, 2:] = False
        inputs = (static, dynamic, audio, ones, ones, audio_mask)
        scores, attention = run(inputs)
        eager_scores, eager_attention = model(inputs, training=False, return_attention_scores=True)
        np.testing.assert_allclose(scores, _numpy(eager_scores), atol=1e-6)
        np.testing.assert_allclose(attention, _numpy(eager_attention), atol=1e-6)
        assert attention.shape == (batch, 3, 2, 4, 4)


def test_three_directions_are_drawn(tmp_path: Path) -> None:
    model = _voice_model()
    _, attention = model(_inputs(1, 4), training=False, return_attention_scores=True)
    (path,) = plot_attention_map(_numpy(attention), tmp_path / "voice.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="3 directions"):
        plot_attention_map(np.ones((4, 2, 4, 4)), tmp_path / "bad.png")


def test_wrong_number_of_inputs_names_what_was_expected() -> None:
    static, dynamic, _ = _inputs(1, 3)
    with pytest.raises(ValueError, match="static, dynamic, audio"):
        _voice_model()((static, dynamic), training=False)


def test_audio_encoder_matches_a_numpy_reference() -> None:
    keras.utils.set_random_seed(3)
    layer = AudioEncoder(AUDIO, 16, 0.0)
    audio = _inputs(2, 4, seed=3)[2]
    mask = np.array([[True, True, False, True], [True, False, False, True]])
    layer.adapt(audio * 3 + 1, mask)
    out = _numpy(layer(audio, training=False))
    valid = (audio * 3 + 1)[mask]
    np.testing.assert_allclose(_numpy(layer.feature_mean), valid.mean(0), atol=1e-5)
    w1, b1 = (_numpy(w) for w in layer.hidden.weights)
    w2, b2 = (_numpy(w) for w in layer.output_dense.weights)
    standard = (audio - valid.mean(0)) / valid.std(0)
    expected = np.maximum(standard @ w1 + b1, 0) @ w2 + b2
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize(
    "layer",
    [AudioEncoder(AUDIO, 16, 0.1), VoiceAttention(AUDIO, 16, 2, 0.2)],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_configs_round_trip(layer) -> None:
    config = layer.get_config()
    assert type(layer).from_config(config).get_config() == config


def test_voice_model_keras_file_round_trip(tmp_path: Path) -> None:
    model = _voice_model(dropout_rate=0.3)
    inputs = _inputs(2, 4)
    model(inputs, training=False)
    assert model.voice is not None
    model.voice.encoder.adapt(inputs[2] * 2 + 5)  # the standardisation travels with the file
    expected = _numpy(model(inputs, training=False))
    model.save(tmp_path / "voice.keras")
    loaded = keras.models.load_model(tmp_path / "voice.keras")
    assert isinstance(loaded, CompletePersonalityModel) and loaded.audio_dim == AUDIO
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(_numpy(loaded(inputs, training=False)), expected)
    np.testing.assert_allclose(
        _numpy(loaded.voice.encoder.feature_mean), (inputs[2] * 2 + 5).reshape(-1, AUDIO).mean(0)
    )


# --- the planted signal -------------------------------------------------------------------


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    return planted_voice_data(tmp_path_factory.mktemp("voices"))


def _fit_and_score(data: dict[str, np.ndarray], with_audio: bool) -> tuple[float, float, float]:
    """(held-out MSE, mean-baseline MSE, held-out MSE with audio shuffled across clips)."""
    keras.utils.set_random_seed(0)
    model = CompletePersonalityModel(
        **SMALL, dropout_rate=0.1, audio_dim=AUDIO_TOKEN_DIM if with_audio else None
    )
    train, test = slice(0, CLIPS - HELD_OUT), slice(CLIPS - HELD_OUT, CLIPS)
    ones = np.ones((CLIPS, FRAMES), bool)

    def inputs(part: slice, audio: np.ndarray) -> tuple[np.ndarray, ...]:
        if not with_audio:
            return data["static"][part], data["dynamic"][part]
        masks = (ones[part], ones[part], data["audio_mask"][part])
        return (data["static"][part], data["dynamic"][part], audio[part], *masks)

    if model.voice is not None:
        model.voice.encoder.adapt(data["audio"][train], data["audio_mask"][train])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    model.fit(
        inputs(train, data["audio"]),
        data["labels"][train],
        epochs=EPOCHS,
        batch_size=CLIPS,
        verbose=0,
    )
    labels = data["labels"]

    def error(audio: np.ndarray) -> float:
        predicted = _numpy(model(inputs(test, audio), training=False))
        return float(np.mean((predicted - labels[test]) ** 2))

    baseline = float(np.mean((labels[train].mean(axis=0) - labels[test]) ** 2))
    shuffled = data["audio"][np.random.default_rng(2).permutation(CLIPS)]
    return error(data["audio"]), baseline, error(shuffled)


@pytest.mark.slow
def test_labels_planted_in_the_voice_need_the_audio_stream(voices) -> None:
    assert voices["audio_mask"].mean() > 0.9  # the utterances are heard
    with_audio, baseline, shuffled = _fit_and_score(voices, with_audio=True)
    without_audio, _, _ = _fit_and_score(voices, with_audio=False)
    assert with_audio < 0.5 * baseline
    assert without_audio > 0.8 * baseline
    assert shuffled > 0.8 * baseline
