"""Choosing the model bundle a process serves with, and recording it in the database."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.bundle import ModelBundle

UNTRAINED_WARNING = (
    "warning: model {version} is untrained (seeded weights); its scores are not a "
    "personality assessment until a trained bundle is loaded (--model or OCEANSTREAM_MODEL)."
)


@lru_cache(maxsize=4)
def _load(path: str | None, num_frames: int) -> ModelBundle:
    from core.bundle import build_default_bundle, load_bundle

    if path is None:
        return build_default_bundle(num_frames=num_frames)
    return load_bundle(Path(path).expanduser())


def resolve_bundle(path: str | Path | None, num_frames: int = 16) -> ModelBundle:
    """The bundle at `path`, or the built-in untrained one; loaded once per process."""
    return _load(None if path is None else str(path), num_frames)


def register_bundle(session_factory: object, bundle: ModelBundle, uri: str | None = None) -> None:
    """Make sure the bundle's version has a row, so predictions can reference it."""
    from db import repository as repo

    meta = bundle.metadata
    with session_factory.begin() as session:  # type: ignore[attr-defined]
        repo.ensure_model_version(
            session=session,
            version=meta.version,
            trained=meta.trained,
            metadata=meta.to_dict(),
            uri=uri,
        )
