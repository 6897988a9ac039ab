"""Per-process state for workers: built lazily, once per process, after any fork.

Celery's prefork pool forks children from the main worker process; a database engine or a
TensorFlow runtime created before the fork must not be shared with them. So nothing is
built in the parent, and `worker_process_init` clears whatever a child inherited.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.bundle import ModelBundle
    from tasks.context import StageContext
    from workers.settings import Settings

_lock = threading.Lock()
_context: StageContext | None = None
_settings: Settings | None = None
_threads = 0


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
    from core.storage import ArtifactStore
    from db.engine import make_engine, make_session_factory
    from tasks.context import StageContext
    from workers.services.models import active_or_default_version
    from workers.settings import Settings

    settings = _settings or Settings()
    prepare_home(settings)
    session_factory = make_session_factory(make_engine(settings.effective_database_url))

    def active_version(session: Session | None = None) -> str:
        if session is not None:
            return active_or_default_version(session=session, settings=settings)
        with session_factory.begin() as own:
            return active_or_default_version(session=own, settings=settings)

    def load(version: str) -> ModelBundle:
        return _bundle_for(settings.effective_database_url, version)

    return StageContext(
        session_factory=session_factory,
        store=ArtifactStore(settings.effective_storage_url, settings.storage_mode),
        config=replace(settings.pipeline_config(), decode_threads=_threads),
        load_bundle=load,
        active_version=active_version,
    )


@lru_cache(maxsize=4)
def _bundle_for(database_url: str, version: str) -> ModelBundle:
    from workers.services.models import load_registered_bundle

    return load_registered_bundle(get_context().session_factory, version)
