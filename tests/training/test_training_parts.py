"""The parts of a training run: metrics, checkpoints and resume, event files, precision."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from core.event_log import ScalarEventLog
from core.training.checkpoints import BEST, LAST, STATE, TrainingCheckpoint
from core.training.evaluation import metrics_table, pearson_r, trait_metrics
from core.training.loop import TrainingConfig, accelerator_available, use_mixed_precision


def test_accuracy_baseline_and_pearson_by_hand() -> None:
    labels = np.array([[0.2] * 5, [0.4] * 5, [0.9] * 5])
    predictions = np.array([[0.3] * 5, [0.4] * 5, [0.7] * 5])
    metrics = trait_metrics(labels, predictions, baseline=np.full(5, 0.5))
    openness = metrics["traits"]["openness"]
    assert openness["accuracy"] == pytest.approx(1 - (0.1 + 0.0 + 0.2) / 3, abs=1e-4)
    assert openness["baseline"] == pytest.approx(1 - (0.3 + 0.1 + 0.4) / 3, abs=1e-4)
    assert openness["pearson_r"] == pytest.approx(
        np.corrcoef(labels[:, 0], predictions[:, 0])[0, 1], abs=1e-4
    )
    assert metrics["clips"] == 3 and metrics["mean"]["accuracy"] == openness["accuracy"]
    assert pearson_r(labels[:, 0], np.full(3, 0.5)) is None
    rows = metrics_table(metrics)
    assert rows[0][0] == "openness" and rows[-1][0] == "mean" and rows[0][3].startswith("+")


def tiny_model(learning_rate: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(learning_rate), "mse")
    return model


def data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    return x, x.sum(axis=1, keepdims=True)


def test_checkpoint_stops_after_patience_and_keeps_state(tmp_path: Path) -> None:
    x, y = data()
    model = tiny_model(learning_rate=0.0)  # nothing improves after the first epoch
    checkpoint = TrainingCheckpoint(tmp_path, patience=2)
    history = model.fit(x, y, validation_data=(x, y), epochs=20, callbacks=[checkpoint], verbose=0)
    assert len(history.history["loss"]) == 3
    state = json.loads((tmp_path / STATE).read_text())
    assert state == {**state, "epoch": 2, "best_epoch": 0, "wait": 2, "stopped_early": True}
    assert (tmp_path / BEST).is_file() and (tmp_path / LAST).is_file()
    resumed = TrainingCheckpoint(tmp_path, patience=2)
    assert resumed.restore(tiny_model(0.0)) == 3 and resumed.finished


def test_resume_continues_from_the_last_epoch_with_optimizer_state(tmp_path: Path) -> None:
    x, y = data()
    model = tiny_model(learning_rate=0.01)
    model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0,
              callbacks=[TrainingCheckpoint(tmp_path, patience=5)])  # fmt: skip
    last_weights = [w.copy() for w in model.get_weights()]
    iterations = int(model.optimizer.iterations.numpy())
    fresh = tiny_model(learning_rate=0.01)
    checkpoint = TrainingCheckpoint(tmp_path, patience=5)
    assert checkpoint.restore(fresh) == 3
    assert int(fresh.optimizer.iterations.numpy()) == iterations == 3
    best_weights = fresh.get_weights()  # restore loads the last epoch, not the best
    for got, want in zip(best_weights, last_weights, strict=True):
        np.testing.assert_array_equal(got, want)
    history = fresh.fit(
        x, y, validation_data=(x, y), epochs=5, initial_epoch=3, callbacks=[checkpoint], verbose=0
    )
    assert len(history.history["loss"]) == 2
    assert json.loads((tmp_path / STATE).read_text())["epoch"] == 4


def test_event_files_hold_each_epoch_for_tensorboard(tmp_path: Path) -> None:
    import tensorflow as tf

    x, y = data()
    model = tiny_model(learning_rate=0.01)
    model.fit(x, y, validation_data=(x, y), epochs=3, verbose=0,
              callbacks=[ScalarEventLog(tmp_path)])  # fmt: skip
    seen: dict[str, dict[str, list[int]]] = {}
    for split in ("train", "validation"):
        (events,) = (tmp_path / split).glob("events.out.tfevents.*")
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars"
                seen.setdefault(split, {}).setdefault(value.tag, []).append(event.step)
    assert seen["train"]["epoch_loss"] == [0, 1, 2]
    assert seen["train"]["epoch_learning_rate"] == [0, 1, 2]
    assert seen["validation"]["epoch_loss"] == [0, 1, 2]


def test_mixed_precision_only_with_an_accelerator() -> None:
    if accelerator_available():
        assert use_mixed_precision("auto") is True
    else:
        assert use_mixed_precision("auto") is False
        with pytest.raises(ValueError, match="no GPU or TPU"):
            use_mixed_precision("on")
    assert use_mixed_precision("off") is False


def test_training_config_validates_and_round_trips() -> None:
    config = TrainingConfig(epochs=3, batch_size=4)
    assert TrainingConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainingConfig(mixed_precision="sometimes")
    with pytest.raises(ValueError, match="epochs"):
        TrainingConfig(epochs=0)
