"""Application steps of `oceanstream extract` and `oceanstream train`, without the CLI.

Where a data set is stored, and recording (and activating) a freshly trained bundle.
The pure parts (run settings, splits, resuming) are in `core.training.plan`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from core.storage.store import ArtifactStore
from core.training.datasets import dataset_name
from core.training.extraction import DatasetLayout
from workers.services.models import activate_version, register_bundle_dir

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

DATASETS_PREFIX = "datasets"


def dataset_layout(settings: Settings, name: str, folder: Path | None) -> DatasetLayout:
    """`datasets/<name>` in the configured storage, or the root of `folder` (created)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        url = f"file://{folder.expanduser().absolute()}"
        return DatasetLayout(ArtifactStore(url, settings.storage_mode))
    store = ArtifactStore(settings.effective_storage_url, settings.storage_mode)
    return DatasetLayout(store, f"{DATASETS_PREFIX}/{name}")


def extracted_dataset(settings: Settings, dataset: str | None, data: Path | None) -> DatasetLayout:
    """The data set to train on: the folder `data`, or `dataset` by name (or by its labels).

    Raises ValueError when neither names one.
    """
    if data is not None:
        if not data.is_dir():
            raise ValueError(f"--data {data} is not a folder")
        return dataset_layout(settings, "", data)
    if not dataset:
        raise ValueError("name a data set (as given to oceanstream extract) or pass --data DIR")
    name = dataset_name(dataset) if Path(dataset).exists() else dataset
    return dataset_layout(settings, name, None)


def runs_root(settings: Settings) -> Path:
    """Where training runs go when no run folder is given."""
    return settings.home_dir / "runs"


def register_trained_bundle(
    session_factory: sessionmaker, bundle_dir: Path, *, activate: bool = False
) -> str:
    """Record the bundle in `bundle_dir` (loading it checks it); activate it if asked.

    Returns its version. Registering the same bundle again changes nothing.
    """
    version, _ = register_bundle_dir(session_factory, bundle_dir)
    if activate:
        activate_version(session_factory, version)
    return version
