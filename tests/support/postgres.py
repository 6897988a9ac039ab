"""The PostgreSQL server the tests use: uniquely named databases on it, dropped at the end."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from db.engine import make_engine, normalize_url
from tests.support.services import service_unavailable

POSTGRES_URL = os.environ.get(
    "OCEANSTREAM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


class PostgresDatabases:
    """Creates uniquely named databases on the test server and drops them all at the end."""

    def __init__(self, maintenance_url: URL) -> None:
        self.maintenance_url = maintenance_url
        self.engine = make_engine(
            maintenance_url,
            poolclass=NullPool,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 5},
        )
        self.created: list[str] = []

    def create(self, purpose: str = "test") -> URL:
        name = f"oceanstream_{purpose}_{uuid.uuid4().hex[:12]}"
        with self.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        return self.maintenance_url.set(database=name)

    def drop_all(self) -> None:
        with self.engine.connect() as connection:
            for name in self.created:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.engine.dispose()


def open_postgres(maintenance_url: str | URL) -> PostgresDatabases:
    """Connect to the server's maintenance database, or fail (CI) / skip (elsewhere)."""
    url = normalize_url(maintenance_url)
    databases = PostgresDatabases(url)
    try:
        with databases.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        databases.engine.dispose()
        safe = url.render_as_string(hide_password=True)
        service_unavailable(f"PostgreSQL at {safe} is not reachable ({exc.__class__.__name__})")
    return databases


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    """Databases on the test server for the session, all dropped at its end."""
    databases = open_postgres(POSTGRES_URL)
    try:
        yield databases
    finally:
        databases.drop_all()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test, dropped afterwards."""
    databases = open_postgres(POSTGRES_URL)
    try:
        yield databases.create("it").render_as_string(hide_password=False)
    finally:
        databases.drop_all()
