"""What a stage needs from its process: database, storage, pipeline settings and models.

A worker process builds one `StageContext` after the fork and keeps it; tests build one
directly. Models are loaded once per process and cached by version.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.pipeline import PipelineConfig
from core.storage import ArtifactStore

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from core.bundle import ModelBundle
    from core.faces import FaceDetector


@dataclass
class StageContext:
    session_factory: sessionmaker
    store: ArtifactStore
    config: PipelineConfig
    # version -> bundle; the loader reads the version's location from the database.
    load_bundle: Callable[[str], ModelBundle]
    active_version: Callable[[], str]
    # Retries and redeliveries together; past this the video is failed, not looped.
    max_deliveries: int = 6
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
