"""What a training run will do before it starts: its settings and its split.

A new run takes the options given over `TrainingConfig`'s defaults and makes its split; a
resumed run reuses the settings and split stored in its run folder, with only the options
given on this call changed (a longer `epochs`, say). Both raise `DatasetError` or
`ValueError` with a message meant for the user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from core.training.labels import DatasetError
from core.training.loop import TrainingConfig
from core.training.run import SPLIT_FILE, ExtractedClips, choose_split, read_run
from core.training.splits import DataSplit


@dataclass(frozen=True)
class RunOptions:
    """The options of one call; None means "the default, or what the resumed run used"."""

    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    patience: int | None = None
    seed: int | None = None
    mixed_precision: str = "auto"
    split_method: str = "grouped"
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    face_backbone: str | None = None
    fine_tune_layers: int | None = None

    def overrides(self) -> dict[str, Any]:
        """The training settings given explicitly, by `TrainingConfig` field name."""
        given = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "seed": self.seed,
            "face_backbone": self.face_backbone,
            "fine_tune_layers": self.fine_tune_layers,
        }
        return {name: value for name, value in given.items() if value is not None}

    @property
    def fractions(self) -> tuple[float, float, float]:
        """Train, validation and test shares of the clips."""
        train = 1 - self.validation_fraction - self.test_fraction
        return (train, self.validation_fraction, self.test_fraction)


@dataclass(frozen=True)
class RunPlan:
    config: TrainingConfig
    split: DataSplit
    shared_groups: list[str] = field(default_factory=list)  # groups in more than one split


def plan_new_run(clips: ExtractedClips, options: RunOptions, group_rule: str) -> RunPlan:
    """Settings from the options over the defaults, and a fresh split of `clips`."""
    config = TrainingConfig.from_dict(
        {**options.overrides(), "mixed_precision": options.mixed_precision}
    )
    split, shared = choose_split(
        clips, options.split_method, options.fractions, config.seed, group_rule
    )
    return RunPlan(config, split, shared)


def plan_resumed_run(run_dir: Path, options: RunOptions) -> RunPlan:
    """The settings and split of the run in `run_dir`, with this call's options applied."""
    earlier = read_run(run_dir)
    config = TrainingConfig.from_dict({**earlier["config"], **options.overrides()})
    split_path = run_dir / SPLIT_FILE
    if not split_path.is_file():
        raise DatasetError(f"{run_dir} holds no split to resume with ({SPLIT_FILE} missing)")
    split = DataSplit.from_dict(json.loads(split_path.read_text(encoding="utf-8")))
    return RunPlan(config, split)


def default_run_dir(runs_root: Path, dataset: str, now: datetime | None = None) -> Path:
    """`<runs_root>/<dataset>-<YYYYmmdd-HHMMSS>`: a new folder per run."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return runs_root / f"{dataset}-{stamp}"
