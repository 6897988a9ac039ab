"""Alembic migrations for the OceanStream schema (run them with `db.migrate`)."""
