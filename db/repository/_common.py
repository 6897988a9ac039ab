"""Helpers shared by the repository modules."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

#: ORM-enabled UPDATEs report the rows they changed with RETURNING and refresh exactly those
#: objects in the session; Python-side "evaluate" could misjudge a guard on a stale object.
FETCH = {"synchronize_session": "fetch"}


class NotFoundError(LookupError):
    """A row the caller named (a video, a job, a model version) does not exist."""


def dialect_insert(session: Session, entity: Any) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that supports ON CONFLICT for the session's backend.

    Upserts are how the repository stays correct when two processes insert the same row at
    once: the database decides, instead of a select-then-insert race.
    """
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(entity)
    if name == "sqlite":
        return sqlite.insert(entity)
    raise NotImplementedError(
        f"database backend {name!r} is not supported; use sqlite or postgresql"
    )
