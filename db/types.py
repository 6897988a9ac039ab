"""Column types shared by the models.

Timestamps are stored as UTC and always come back timezone-aware. PostgreSQL keeps the offset
(`timestamptz`), but SQLite has no timestamp type and SQLAlchemy stores it as naive text, so
without this type the same query would return aware values on one backend and naive values on
the other, and comparing them raises `TypeError`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (the only kind the database stores)."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Normalize to aware UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that binds UTC and returns aware UTC on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)
