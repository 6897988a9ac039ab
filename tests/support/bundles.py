"""Model bundles for the tests: the default (untrained) bundle, and trained bundles saved as
`oceanstream train` saves them."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from core.bundles.bundle import ModelBundle

#: Frames per window of the default bundle, and of the clusters' settings.
T = 8


def write_trained_bundle(
    folder: Path, seed: int = 77, dataset: str = "rollout", accuracy: float | None = None
) -> Path:
    """A bundle saved as `oceanstream train` saves one (trained flag, data set, and metrics when
    `accuracy` is given), for T=8 like the clusters' settings."""
    import keras

    # Keras and the bundle code load on first use, not when the plugin is imported.
    from core.bundles.bundle import BundleMetadata, ModelBundle, build_models, save_bundle

    keras.utils.set_random_seed(seed)
    meta = BundleMetadata(version="", trained=True, num_frames=T, seed=seed, dataset=dataset)
    if accuracy is not None:
        meta.metrics = {
            "test": {"mean": {"accuracy": accuracy, "baseline": 0.85, "pearson_r": 0.5}}
        }
    return save_bundle(ModelBundle(meta, *build_models(meta)), folder)


@pytest.fixture(scope="session")
def default_bundle() -> ModelBundle:
    """The default bundle for T=8 frames, built once per session (no test changes it)."""
    from core.bundles.bundle import build_default_bundle

    return build_default_bundle(num_frames=T)
