"""Run the schema migrations from a program (`oceanstream db upgrade`, tests, worker start-up).

The migrations ship inside the package (`db/migrations`), located from this file, so this works
from a checkout and from an installed wheel alike, whatever the working directory.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import URL
from sqlalchemy.pool import NullPool

from db.engine import make_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Alembic keeps the running migration in module globals (`alembic.context`, `alembic.op`), so
# two threads of one process must not migrate at once. Processes are kept apart by the database.
_ALEMBIC_LOCK = threading.Lock()


def alembic_config(url: str | URL | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and at `url` if given).

    It reads no ini file, so it leaves the caller's logging configuration alone.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        rendered = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        # ConfigParser treats % as interpolation; passwords may contain it.
        config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    return config


def upgrade_database(
    url: str | URL, revision: str = "head", *, sqlite_busy_timeout_ms: int = 30_000
) -> None:
    """Migrate the database at `url` up to `revision` (default: the latest).

    Safe to run from several processes at once: on PostgreSQL an advisory lock lets one migrate
    while the others wait and then find nothing left to do; SQLite serializes on its write lock
    (waited for up to `sqlite_busy_timeout_ms`).
    """
    _run(
        url,
        lambda config: command.upgrade(config, revision),
        sqlite_busy_timeout_ms=sqlite_busy_timeout_ms,
    )


def downgrade_database(url: str | URL, revision: str) -> None:
    """Migrate the database at `url` down to `revision` (`"base"` drops every table)."""
    _run(url, lambda config: command.downgrade(config, revision))


def current_revision(url: str | URL) -> str | None:
    """The revision the database at `url` is at, or None for an empty database."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def head_revision() -> str:
    """The latest revision the packaged migrations define."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise RuntimeError(f"no migrations found in {MIGRATIONS_DIR}")
    return head


def _run(
    url: str | URL, action: Callable[[Config], None], *, sqlite_busy_timeout_ms: int = 30_000
) -> None:
    config = alembic_config(url)
    engine = make_engine(url, poolclass=NullPool, sqlite_busy_timeout_ms=sqlite_busy_timeout_ms)
    try:
        with _ALEMBIC_LOCK, engine.connect() as connection:
            config.attributes["connection"] = connection
            action(config)
    finally:
        engine.dispose()
