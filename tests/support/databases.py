"""Database fixtures: every repository test runs on SQLite (a temp file) and on PostgreSQL.

The schema is always built by the migrations (`upgrade_database`), never by `create_all`, so
the migrations are what is tested. PostgreSQL cases get a fresh, uniquely named database for
the test session, created through the maintenance database and dropped at the end.

PostgreSQL unreachable: the test fails when `CI` is set, and is skipped with the reason
otherwise. `pytest -m "not postgres"` runs the SQLite half alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import URL, Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from db.engine import make_engine, make_session_factory, normalize_url
from db.migrate import upgrade_database
from db.models import Base
from tests.support.postgres import PostgresDatabases

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def new_database_url(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> URL:
    """An empty database of `backend`, removed at the end of the test session."""
    if backend == "sqlite":
        path = tmp_path_factory.mktemp("sqlite") / "oceanstream.db"
        return normalize_url(f"sqlite:///{path}")
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return databases.create()


@pytest.fixture(scope="session", params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> URL:
    """A database of each backend, migrated to head once per test session."""
    url = new_database_url(request.param, request, tmp_path_factory)
    upgrade_database(url)
    return url


@pytest.fixture(scope="session")
def engine(database_url: URL) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=10, max_overflow=10)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """A session factory on an emptied database (rows from earlier tests are deleted)."""
    factory = make_session_factory(engine)
    with factory.begin() as session:
        for table in reversed(Base.metadata.sorted_tables):
            session.execute(delete(table))
    yield factory


@pytest.fixture
def backend(database_url: URL) -> str:
    return database_url.get_backend_name()


@pytest.fixture(params=BACKENDS)
def empty_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> URL:
    """A database with no schema at all, of each backend, for migration tests."""
    return new_database_url(request.param, request, tmp_path_factory)
