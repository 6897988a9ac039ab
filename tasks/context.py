"""What a stage needs from its process: database, storage, pipeline settings and models.

A worker process builds one `StageContext` after the fork and keeps it; tests build one
directly. Models are loaded once per process and cached by version.

A callback that reads the database takes the caller's session: on SQLite every transaction
takes the write lock, so a second session opened while one is held, in the same thread,
would wait on itself until the busy timeout ran out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from core.artifacts import LAYOUT, ArtifactLayout
from core.pipeline import PipelineConfig
from core.storage import ArtifactStore

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from core.bundle import ModelBundle
    from core.faces import FaceDetector


class VersionSource(Protocol):
    """The active model version: read (and registered) in the caller's `session` when one
    is given, else in a transaction of its own."""

    def __call__(self, session: Session | None = None) -> str: ...


@dataclass
class StageContext:
    session_factory: sessionmaker
    store: ArtifactStore
    config: PipelineConfig
    # version -> bundle; the loader reads the version's location from the database in a
    # session of its own, so it is called outside any transaction.
    load_bundle: Callable[[str], ModelBundle]
    # The version new videos are pinned to (see `VersionSource`).
    active_version: VersionSource
    # Retries and redeliveries together; past this the video is failed, not looped.
    max_deliveries: int = 6
    layout: ArtifactLayout = LAYOUT
    _detectors: dict[int, FaceDetector] = field(default_factory=dict)

    def detector(self, crop_size: int) -> FaceDetector:
        from core.faces import FaceDetector

        if crop_size not in self._detectors:
            self._detectors[crop_size] = FaceDetector(
                detect_width=self.config.detect_width,
                min_confidence=self.config.min_face_confidence,
                crop_size=crop_size,
            )
        return self._detectors[crop_size]
