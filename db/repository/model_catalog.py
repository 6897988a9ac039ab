"""Listing model versions, newest first, for `oceanstream models list`."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import ModelVersion


def list_model_versions(*, session: Session) -> list[ModelVersion]:
    """Every registered model version, the newest first (ties broken by version id)."""
    stmt = select(ModelVersion).order_by(ModelVersion.created_at.desc(), ModelVersion.version.asc())
    return list(session.execute(stmt).scalars())
