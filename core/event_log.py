"""Per-epoch scalars as TensorBoard event files, without the TensorBoard package.

Keras's `TensorBoard` callback needs the `tensorboard` package for `tf.summary.scalar`. The
event files themselves only need TensorFlow's summary writer: each value is written as a
scalar tensor tagged for TensorBoard's scalars plugin, exactly what `tf.summary.scalar`
writes, so `tensorboard --logdir RUN/logs` shows the curves wherever TensorBoard is installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

TRAIN_DIR, VALIDATION_DIR = "train", "validation"


class ScalarEventLog(keras.callbacks.Callback):
    """Writes each epoch's logs and learning rate under `logs/train` and `logs/validation`."""

    def __init__(self, log_dir: str | Path) -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}

    def _write(self, split: str, tag: str, value: float, step: int) -> None:
        import tensorflow as tf
        from tensorflow.core.framework.summary_pb2 import SummaryMetadata

        if split not in self._writers:
            self._writers[split] = tf.summary.create_file_writer(str(self.log_dir / split))
        metadata = SummaryMetadata()
        metadata.plugin_data.plugin_name = "scalars"
        with self._writers[split].as_default():
            tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=metadata)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for key, value in (logs or {}).items():
            split = VALIDATION_DIR if key.startswith("val_") else TRAIN_DIR
            self._write(split, f"epoch_{key.removeprefix('val_')}", float(value), epoch)
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and "learning_rate" not in (logs or {}):
            rate = keras.ops.convert_to_numpy(optimizer.learning_rate)
            self._write(TRAIN_DIR, "epoch_learning_rate", float(rate), epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
