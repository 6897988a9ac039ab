"""Frozen backbone features, computed once per clip and kept next to the extracted clips.

A frozen backbone gives every crop the same features in every epoch, so training with
`--face-backbone` runs the backbone once per clip, before the first epoch, and trains the
projection, the flow CNN and the fusion model on the stored features. They live in the data
set's store, so later runs with the same backbone reuse them:

    <prefix>/features/<backbone>-<12 hex>/<clip id>.npz   features float32 [T, D], crops_sha256

The folder's hex is the installed backbones' model hashes, so a reinstalled or different
backbone never reads stale features; each file records the SHA-256 of the crops it was
computed from, so a clip extracted again (`extract --force`) is computed again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.training.data import ClipRef, fill_missing_crops
from core.training.extraction import DatasetLayout, ExtractionConfig, check_clip_arrays

FEATURES_PREFIX = "features"


@dataclass
class FeatureCounts:
    """What `FeatureCache.ensure` did: backbone calls (one per clip computed) and reuses."""

    computed: int = 0
    reused: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"computed": self.computed, "reused": self.reused, "seconds": round(self.seconds, 1)}


def cache_name(backbone: str, model_hashes: Mapping[str, str | None]) -> str:
    """`<backbone>-<12 hex>` over the installed model files of its parts."""
    digest = hashlib.sha256()
    for part in sorted(model_hashes):
        digest.update(f"{part}:{model_hashes[part]}".encode())
    return f"{backbone.replace('+', '_')}-{digest.hexdigest()[:12]}"


def crops_digest(crops: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(crops).tobytes()).hexdigest()


class FeatureCache:
    """The stored backbone features of one data set for one installed backbone."""

    def __init__(self, layout: DatasetLayout, name: str) -> None:
        self.layout, self.name = layout, name

    def key(self, clip_id: str) -> str:
        relative = self.layout.clip_key(clip_id).removeprefix(self.layout.clips_prefix() + "/")
        return self.layout.key(f"{FEATURES_PREFIX}/{self.name}/{relative}")

    def read(self, ref: ClipRef) -> np.ndarray:
        """The features [T, D] of a clip (`ensure` first)."""
        store = self.layout.store
        return np.asarray(store.get_arrays(store.uri(self.key(ref.clip_id)))["features"])

    def _fresh(self, ref: ClipRef, digest: str) -> bool:
        store = self.layout.store
        uri = store.uri(self.key(ref.clip_id))
        return store.exists(uri) and str(store.get_arrays(uri)["crops_sha256"]) == digest

    def ensure(
        self,
        refs: Sequence[ClipRef],
        config: ExtractionConfig,
        encode: Callable[[np.ndarray], Any],
        on_clip: Callable[[int], None] | None = None,
    ) -> FeatureCounts:
        """Compute and store the features of every clip not stored yet: one `encode` call each.

        `encode` takes one clip's crops [T, S, S, 3] float32 0..255 (frames without a face
        filled from the nearest frame with one, as training feeds them) and returns [T, D].
        """
        counts = FeatureCounts()
        start = time.perf_counter()
        store = self.layout.store
        for index, ref in enumerate(refs):
            arrays = store.get_arrays(store.uri(ref.key))
            check_clip_arrays(arrays, config)
            digest = crops_digest(arrays["crops"])
            if self._fresh(ref, digest):
                counts.reused += 1
            else:
                crops = fill_missing_crops(arrays["crops"], arrays["mask"].astype(bool))
                features = np.asarray(encode(crops.astype(np.float32)), np.float32)
                store.put_arrays(
                    self.key(ref.clip_id), features=features, crops_sha256=np.array(digest)
                )
                counts.computed += 1
            if on_clip is not None:
                on_clip(index + 1)
        counts.seconds = time.perf_counter() - start
        return counts

    def face_features(self, refs: Sequence[ClipRef]) -> np.ndarray:
        """The features of the frames with a face in ``refs``, stacked [frames, D]."""
        store = self.layout.store
        rows = []
        for ref in refs:
            mask = store.get_arrays(store.uri(ref.key))["mask"].astype(bool)
            rows.append(self.read(ref)[mask])
        return np.concatenate(rows)
