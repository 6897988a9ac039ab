"""Checkpoints, resume and early stopping in one callback, so a resumed run stops the same way.

Keras's `EarlyStopping` keeps its patience counter in memory and `BackupAndRestore` saves no
best weights; a run resumed after a crash would forget how long validation has not improved.
Here the counter, the best value and both weight files live in the checkpoint folder:

    last.weights.h5   the model and optimizer state after the latest finished epoch
    best.weights.h5   the same at the epoch with the lowest validation loss
    state.json        {"epoch", "best", "best_epoch", "wait", "stopped_early"}

Files are written under a temporary name and renamed, so an interrupted save leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import keras

LAST = "last.weights.h5"
BEST = "best.weights.h5"
STATE = "state.json"


class TrainingCheckpoint(keras.callbacks.Callback):
    """Saves every epoch, keeps the best by `monitor`, stops after `patience` flat epochs."""

    def __init__(
        self,
        directory: str | Path,
        patience: int,
        monitor: str = "val_loss",
        min_delta: float = 1e-5,
    ) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.patience, self.monitor, self.min_delta = patience, monitor, min_delta
        self.state: dict[str, Any] = {
            "epoch": -1,
            "best": None,
            "best_epoch": None,
            "wait": 0,
            "stopped_early": False,
        }

    def exists(self) -> bool:
        return (self.directory / STATE).is_file() and (self.directory / LAST).is_file()

    def restore(self, model: keras.Model) -> int:
        """Load the latest checkpoint into a built, compiled `model`; returns the next epoch."""
        if not self.exists():
            raise FileNotFoundError(f"no checkpoint to resume from in {self.directory}")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(self.directory / LAST)
        self.state.update(json.loads((self.directory / STATE).read_text(encoding="utf-8")))
        return int(self.state["epoch"]) + 1

    @property
    def finished(self) -> bool:
        """Whether the restored run had already stopped early (resuming trains no further)."""
        return bool(self.state["stopped_early"])

    def _save_weights(self, name: str) -> None:
        final = self.directory / name
        partial = self.directory / f"partial-{name}"
        self.model.save_weights(partial, overwrite=True)
        os.replace(partial, final)

    def _save_state(self) -> None:
        partial = self.directory / f"{STATE}.partial"
        partial.write_text(json.dumps(self.state, indent=2), encoding="utf-8")
        os.replace(partial, self.directory / STATE)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            raise ValueError(f"cannot checkpoint on {self.monitor!r}: the epoch logged {logs}")
        self.state["epoch"] = epoch
        best = self.state["best"]
        if best is None or float(value) < best - self.min_delta:
            self.state.update(best=float(value), best_epoch=epoch, wait=0)
            self._save_weights(BEST)
        else:
            self.state["wait"] += 1
        self._save_weights(LAST)
        if self.state["wait"] >= self.patience:
            self.state["stopped_early"] = True
            self.model.stop_training = True
        self._save_state()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if (self.directory / BEST).is_file():
            self.model.load_weights(self.directory / BEST)
