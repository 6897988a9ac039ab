"""Model versions: which bundle produced a prediction, and which one is in use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from db.models import ModelVersion
from db.repository._common import FETCH, NotFoundError, dialect_insert
from db.types import utcnow


def ensure_model_version(
    *,
    session: Session,
    version: str,
    trained: bool,
    metadata: Mapping[str, Any],
    uri: str | None = None,
    relocate: bool = False,
) -> ModelVersion:
    """The row for `version`, created on first use; safe to call from every worker start.

    A version id is derived from the bundle's content, so an existing row keeps its metadata.
    The first location recorded for a version is kept: every worker loads the version from
    there, so another copy of the same bundle (an `analyze --model` run, a second register
    from another folder) must not move it silently. `relocate=True` replaces it (the bundle
    was moved on purpose); callers compare the returned row's `uri` with theirs to tell the
    user which location stands. A `trained` flag that disagrees with the stored one is
    refused: results must never claim trained weights they did not have.
    """
    stmt = (
        dialect_insert(session, ModelVersion)
        .values(
            version=version,
            trained=bool(trained),
            meta=dict(metadata),
            uri=uri,
            active=False,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[ModelVersion.version])
    )
    session.execute(stmt)
    row = session.execute(select(ModelVersion).where(ModelVersion.version == version)).scalar_one()
    if row.trained != bool(trained):
        raise ValueError(
            f"model version {version!r} is stored with trained={row.trained}, "
            f"got trained={bool(trained)}"
        )
    if uri is not None and row.uri != uri and (row.uri is None or relocate):
        row.uri = uri
        session.flush()
    return row


def get_model_version(*, session: Session, version: str) -> ModelVersion | None:
    """The row for `version`, or None."""
    return session.get(ModelVersion, version)


def activate_model_version(*, session: Session, version: str) -> ModelVersion:
    """Make `version` the one active model version (and no other).

    Every row is locked first (PostgreSQL `FOR UPDATE`; SQLite's write lock), so two
    concurrent activations run one after the other and the last one wins; a partial unique
    index guarantees at most one active row whatever happens.
    """
    session.execute(select(ModelVersion.version).with_for_update()).all()
    if session.get(ModelVersion, version) is None:
        raise NotFoundError(f"no model version {version!r}; call ensure_model_version first")
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.active, ModelVersion.version != version)
        .values(active=False),
        execution_options=FETCH,
    )
    session.execute(
        update(ModelVersion).where(ModelVersion.version == version).values(active=True),
        execution_options=FETCH,
    )
    row = session.get(ModelVersion, version)
    assert row is not None
    return row


def get_active_model_version(*, session: Session) -> ModelVersion | None:
    """The active model version, or None when none was activated."""
    return session.execute(select(ModelVersion).where(ModelVersion.active)).scalar_one_or_none()
