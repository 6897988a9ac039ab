"""Per-process state for workers: built lazily, once per process, after any fork.

Celery's prefork pool forks children from the main worker process; a database engine or a
TensorFlow runtime created before the fork must not be shared with them. So nothing is
built in the parent, and `worker_process_init` clears whatever a child inherited.

Bundles are loaded by version, and sorted when they fail: a version whose bundle is there but
fails its check (changed after it was saved) or that is not registered raises
`ModelIntegrityError`, which fails each video pinned to it at once; a bundle folder out of
reach raises `StorageError`, which is retried. A process whose active version fails its check
still starts: it warms the built-in bundle instead, logs one line, and serves the videos
pinned to every other version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.bundles.bundle import ModelBundle
    from tasks.context import StageContext
    from workers.settings import Settings

log = logging.getLogger("oceanstream.worker")

_lock = threading.Lock()
_context: StageContext | None = None
_settings: Settings | None = None
_threads = 0
# How long a version that failed its check is refused before its bundle is read again (a
# read builds and hashes every model: seconds, in the pool's consumer thread).
BUNDLE_RECHECK_S = 300.0
# Version -> (why its bundle fails its check, monotonic time to read it again).
_failed_bundles: dict[str, tuple[str, float]] = {}
# Active versions this process already said it cannot warm.
_unwarmable: set[str] = set()


def configure(settings: Settings, threads: int = 0) -> None:
    """Set the settings (and per-process thread budget) the context will be built from."""
    global _settings, _context, _threads
    _settings, _context, _threads = settings, None, threads


def reset_after_fork() -> None:
    """Forget any context inherited from the parent process.

    Its database connections belong to the parent: the pool is dropped without closing them
    (`db.engine.dispose_after_fork`), so the parent's sessions are left intact.
    """
    global _context
    if _context is not None:
        from db.engine import dispose_after_fork

        engine = _context.session_factory.kw.get("bind")
        if engine is not None:
            dispose_after_fork(engine)
    _context = None
    _bundle_for.cache_clear()
    _failed_bundles.clear()
    _unwarmable.clear()


def prepare_home(settings: Settings) -> None:
    """Create a SQLite database's folder (0700) and file (0600): readable by the user only.

    Only what is missing is created, so a folder or file an operator set up keeps its mode.
    SQLite gives its journal files the database file's mode. Other databases need nothing.
    """
    url = settings.effective_database_url
    if not url.startswith("sqlite:///"):
        return
    _make_private_dirs(settings.home_dir)
    database = url.removeprefix("sqlite:///").split("?", 1)[0]
    if database in ("", ":memory:"):
        return
    path = Path(database)
    _make_private_dirs(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        path.chmod(0o600)  # whatever the umask


def _make_private_dirs(folder: Path) -> None:
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
            path.chmod(0o700)


def get_context() -> StageContext:
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = _build_context()
    return _context


def _build_context() -> StageContext:
    from core.backbones.registry import backbones_dir
    from core.persons.segment_analysis import POSITION_ONLY, identity_for
    from core.storage.store import ArtifactStore
    from db.engine import make_engine, make_session_factory
    from tasks.context import StageContext
    from workers.metrics import storage_metrics
    from workers.services.models import active_or_default_version
    from workers.settings import Settings

    settings = _settings or Settings()
    prepare_home(settings)
    session_factory = make_session_factory(
        make_engine(
            settings.effective_database_url,
            sqlite_busy_timeout_ms=int(settings.sqlite_busy_timeout_s * 1000),
        )
    )

    def active_version(session: Session | None = None) -> str:
        """In the caller's session, the version new videos are pinned to. Without one (a
        process warming its model), that version when its bundle passes its check, else the
        built-in bundle's (see `_warmable`)."""
        if session is not None:
            return active_or_default_version(session=session, settings=settings)
        with session_factory.begin() as own:
            version = active_or_default_version(session=own, settings=settings)
        return _warmable(version, settings, session_factory)

    def load(version: str) -> ModelBundle:
        return _checked_bundle(settings.effective_database_url, version)

    linker, embed = identity_for(backbones_dir(settings.home_dir, settings.backbones))
    if embed is None:
        log.info(POSITION_ONLY)  # a worker's log; `watch` says it in its summary
    return StageContext(
        session_factory=session_factory,
        store=ArtifactStore(settings.effective_storage_url, settings.storage_mode),
        config=replace(settings.pipeline_config(), decode_threads=_threads),
        load_bundle=load,
        active_version=active_version,
        linker=linker,
        embed=embed,
        on_read=storage_metrics().count_read,
    )


def _checked_bundle(database_url: str, version: str) -> ModelBundle:
    """`version`'s bundle; `ModelIntegrityError` (permanent) or `StorageError` (an outage).

    A version that failed its check is refused from memory for `BUNDLE_RECHECK_S`, so the
    videos pinned to it fail without each one rebuilding and hashing its bundle.
    """
    from core.errors import ModelBundleError, ModelIntegrityError

    failed = _failed_bundles.get(version)
    if failed is not None and time.monotonic() < failed[1]:
        raise ModelIntegrityError(failed[0])
    try:
        return _bundle_for(database_url, version)
    except ModelBundleError as exc:
        error = _sorted_bundle_error(version, exc)
        if isinstance(error, ModelIntegrityError):
            _failed_bundles[version] = (str(error), time.monotonic() + BUNDLE_RECHECK_S)
        raise error from exc


def _sorted_bundle_error(version: str, error: Exception) -> Exception:
    """A bundle's load error as permanent (`ModelIntegrityError`) or an outage (`StorageError`).

    The bundle's folder is where its registration says but fails to load as that version:
    permanent (the files changed). The folder cannot be found: a volume not mounted right now
    is an outage like any storage one, retried (and bounded by the delivery cap).
    """
    from core.errors import ModelIntegrityError, StorageError
    from db import repository as repo

    with get_context().session_factory() as session:
        row = repo.get_model_version(session=session, version=version)
        uri = None if row is None else row.uri
    if row is None:
        return ModelIntegrityError(f"model version {version} is not registered")
    if uri and not Path(uri).expanduser().is_dir():
        return StorageError(f"model version {version}: its bundle cannot be reached: {error}")
    return ModelIntegrityError(f"model version {version} failed its integrity check: {error}")


def _warmable(version: str, settings: Settings, session_factory: object) -> str:
    """`version` when its bundle passes its check, else the built-in bundle's (registered).

    A process warms the active version before it serves. When that one fails its check, the
    process still starts (it says so once): videos pinned to other versions are served, and
    those pinned to the failing one fail with its message.
    """
    from core.errors import ModelIntegrityError
    from workers.services.models import register_bundle, resolve_bundle

    try:
        _checked_bundle(settings.effective_database_url, version)
    except ModelIntegrityError as exc:
        fallback = resolve_bundle(None, settings.num_frames)
        if version not in _unwarmable:
            _unwarmable.add(version)
            log.error(
                "%s; this process serves videos pinned to other versions (warming %s), and "
                "fails those pinned to %s",
                exc,
                fallback.metadata.version,
                version,
            )
            register_bundle(session_factory, fallback)  # so it loads like any version
        return fallback.metadata.version
    return version


@lru_cache(maxsize=4)
def _bundle_for(database_url: str, version: str) -> ModelBundle:
    from workers.services.models import load_registered_bundle

    return load_registered_bundle(get_context().session_factory, version)
