"""Feeding extracted clips to training: arrays per clip, batches per step.

A clip is its face crops [T,S,S,3] uint8, face mask [T] and flow [T,S,S,2] float16 as
`core.training.extraction` stored them. Small sets are read into memory once; large ones (First
Impressions is about 14 GB at T=16) are read from the store batch by batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from core.training.extraction import DatasetLayout, ExtractionConfig, check_clip_arrays


@dataclass(frozen=True)
class ClipRef:
    """A clip in the store with its labels."""

    clip_id: str
    key: str
    labels: tuple[float, ...]
    group: str


def fill_missing_crops(crops: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Replace each frame without a face by the crop of the nearest frame with one.

    Frames without a face are masked out of attention and pooling either way, but they still
    pass through the face CNN in a batch; a black crop there would skew its batch
    statistics. Serving never encodes them at all.
    """
    valid = np.flatnonzero(mask)
    if len(valid) == 0 or len(valid) == len(mask):
        return crops
    nearest = valid[np.abs(np.arange(len(mask))[:, None] - valid[None, :]).argmin(axis=1)]
    return crops[nearest]


FaceFeatures = Callable[[ClipRef], np.ndarray]


def read_clip(
    layout: DatasetLayout,
    ref: ClipRef,
    config: ExtractionConfig,
    features: FaceFeatures | None = None,
) -> dict[str, Any]:
    """One stored clip as model inputs (crops filled, flow float32) after a shape check.

    With `features` (a frozen backbone's stored features, `core.training.features`), the
    clip carries them [T, D] in place of its crops.
    """
    arrays = layout.store.get_arrays(layout.store.uri(ref.key))
    check_clip_arrays(arrays, config)
    mask = arrays["mask"].astype(bool)
    face: dict[str, np.ndarray] = (
        {"crops": fill_missing_crops(arrays["crops"], mask)}
        if features is None
        else {"features": np.asarray(features(ref), np.float32)}
    )
    return {**face, "mask": mask, "flow": arrays["flow"].astype(np.float32)}


def clip_bytes(config: ExtractionConfig) -> int:
    """Memory one clip takes once loaded (uint8 crops, bool mask, float16 flow as stored)."""
    t, c, f = config.num_frames, config.crop_size, config.flow_size
    return t * (c * c * 3 + 1 + f * f * 2 * 2)


class ClipBatches(keras.utils.PyDataset):
    """Batches `({"crops", "mask", "flow"}, labels)` of clips, reshuffled every epoch.

    With `cache=True` every clip is read once and kept (flow as float16); otherwise each
    batch is read from the store when it is asked for. With `features`, batches carry a
    frozen backbone's features `"features"` [B, T, D] instead of `"crops"`.
    """

    def __init__(
        self,
        layout: DatasetLayout,
        refs: Sequence[ClipRef],
        config: ExtractionConfig,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        cache: bool = True,
        on_read: Callable[[int], None] | None = None,
        features: FaceFeatures | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not refs:
            raise ValueError("no clips to make batches of")
        self.layout, self.refs, self.config = layout, list(refs), config
        self.batch_size, self.shuffle = batch_size, shuffle
        self.features = features
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(len(self.refs))
        self.labels = np.asarray([r.labels for r in self.refs], np.float32)
        self._cache: list[dict[str, Any]] | None = None
        if cache:
            self._cache = []
            for index, ref in enumerate(self.refs):
                clip = read_clip(layout, ref, config, features)
                clip["flow"] = clip["flow"].astype(np.float16)
                self._cache.append(clip)
                if on_read is not None:
                    on_read(index + 1)
        if shuffle:
            self._rng.shuffle(self._order)

    @property
    def num_batches(self) -> int:
        return math.ceil(len(self.refs) / self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def _clip(self, index: int) -> dict[str, Any]:
        if self._cache is not None:
            return self._cache[index]
        return read_clip(self.layout, self.refs[index], self.config, self.features)

    def batch_at(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """The stacked inputs of the clips at `indices` (in the given order)."""
        clips = [self._clip(int(i)) for i in indices]
        face = "crops" if self.features is None else "features"
        return {
            face: np.stack([c[face] for c in clips]),
            "mask": np.stack([c["mask"] for c in clips]),
            "flow": np.stack([c["flow"] for c in clips]).astype(np.float32),
        }

    def __getitem__(self, index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        chosen = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        return self.batch_at(chosen.tolist()), self.labels[chosen]

    def on_epoch_end(self) -> None:
        if self.shuffle:
            self._rng.shuffle(self._order)
