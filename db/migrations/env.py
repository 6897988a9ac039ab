"""Alembic environment for the OceanStream schema.

Used both programmatically (`db.migrate`, which hands over an open connection in
`config.attributes["connection"]`) and from the `alembic` command line with `db/alembic.ini`,
where the URL comes from `-x url=...`, the ini's `sqlalchemy.url`, or `OCEANSTREAM_DATABASE_URL`.
"""

from __future__ import annotations

import os
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from db.engine import make_engine
from db.models import Base
from db.types import UTCDateTime

#: Key of the PostgreSQL advisory lock that lets only one process migrate at a time (workers
#: starting together may all run `db upgrade`).
MIGRATION_LOCK_KEY = 0x0CEA_5EA3

config = context.config
target_metadata = Base.metadata

# Only the command line configures logging; a program calling `db.migrate` keeps its own.
if config.config_file_name is not None and config.file_config.has_section("formatters"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or config.get_main_option("sqlalchemy.url")
        or os.environ.get("OCEANSTREAM_DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "no database URL: pass -x url=..., set sqlalchemy.url, or set OCEANSTREAM_DATABASE_URL"
        )
    return url


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write project types into migrations as plain SQLAlchemy types, so that a migration
    never depends on code that may later change."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        **kwargs,
    )


def _run_on(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    # SQLite does have transactional DDL (Alembic assumes not): one transaction per upgrade
    # means a failed migration leaves the schema as it was.
    _configure(connection=connection, render_as_batch=sqlite, transactional_ddl=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`)."""
    url = _database_url()
    _configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_on(connection)
        return
    engine = make_engine(_database_url(), poolclass=NullPool)
    try:
        with engine.connect() as new_connection:
            _run_on(new_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
