"""What a stage needs from its process: database, storage, pipeline settings and models.

A worker process builds one `StageContext` after the fork and keeps it; tests build one
directly. Models are loaded once per process and cached by version.

A callback that reads the database takes the caller's session: on SQLite every transaction
takes the write lock, so a second session opened while one is held, in the same thread,
would wait on itself until the busy timeout ran out.

`is_outage` tells a stage, its task and the reconciler which errors trying again can get past.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from core.pipeline import PipelineConfig
from core.storage.artifacts import LAYOUT, ArtifactLayout
from core.storage.store import ArtifactStore

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.orm import Session, sessionmaker

    from core.bundles.bundle import ModelBundle
    from core.persons.faces import FaceDetector
    from core.persons.person_links import PersonLinker


class VersionSource(Protocol):
    """The active model version: read (and registered) in the caller's `session` when one
    is given, else in a transaction of its own."""

    def __call__(self, session: Session | None = None) -> str: ...


def _continuity() -> PersonLinker:
    from core.persons.person_links import ContinuityLinker

    return ContinuityLinker()


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
    # Starts of one stage that did not finish (its worker died, timed out or hit a bug);
    # past this the video is failed, not looped. A start that met an outage is not counted.
    max_deliveries: int = 6
    layout: ArtifactLayout = LAYOUT
    # Links a video's persons across its segments (`core.persons.person_links.linker_for`).
    linker: PersonLinker = field(default_factory=_continuity)
    # A face-identity network (`core.persons.identity.Embedder`), when a backbone is installed.
    embed: Callable[[np.ndarray], np.ndarray] | None = None
    # Told the bytes a stage read from the store (stage name, bytes): a metrics counter.
    on_read: Callable[[str, int], None] = field(default=lambda stage, count: None)
    _detectors: dict[int, FaceDetector] = field(default_factory=dict)

    def detector(self, crop_size: int) -> FaceDetector:
        from core.persons.faces import FaceDetector

        if crop_size not in self._detectors:
            self._detectors[crop_size] = FaceDetector(
                detect_width=self.config.detect_width,
                min_confidence=self.config.min_face_confidence,
                crop_size=crop_size,
            )
        return self._detectors[crop_size]


# SQLite reports a schema mistake as an OperationalError; those are programming errors.
_SQLITE_SCHEMA_ERRORS = ("no such table", "no such column", "has no column", "syntax error")


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is an outage that trying again later can get past.

    Storage (`RetryableError`), a database that cannot be reached or dropped the connection
    (the driver's OperationalError and InterfaceError, a pool timeout), a broker that cannot
    be reached. Not a programming error (bad SQL, a broken constraint, a TypeError) nor an
    input error: those fail the same way every time.
    """
    from kombu.exceptions import OperationalError as BrokerError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from sqlalchemy import exc as sa_exc

    from core.errors import RetryableError

    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        if not isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError):
            return False
        message = str(exc.orig).lower()
        return not any(text in message for text in _SQLITE_SCHEMA_ERRORS)
    return isinstance(
        exc,
        (
            RetryableError,
            sa_exc.DisconnectionError,
            sa_exc.TimeoutError,
            RedisConnectionError,
            RedisTimeoutError,
            BrokerError,
            ConnectionError,
            TimeoutError,
            *_driver_outages(),
        ),
    )


def _driver_outages() -> tuple[type[Exception], ...]:
    """psycopg's own connection errors (raised unwrapped by a raw connection)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a SQLite-only install
        return ()
    return (psycopg.OperationalError, psycopg.InterfaceError)
