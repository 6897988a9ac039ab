"""Fixtures for the live-source tests: databases of each backend (from tests/db)."""

from tests.db.conftest import postgres_databases  # noqa: F401  (a fixture)
