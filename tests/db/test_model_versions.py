"""Model versions: registered idempotently, exactly one active at a time."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.models import ModelVersion
from tests.support.rows import run_together

Factory = sessionmaker[Session]


def ensure(
    session: Session, version: str, trained: bool = False, uri: str | None = None
) -> ModelVersion:
    return repo.ensure_model_version(
        session=session, version=version, trained=trained, metadata={"T": 16}, uri=uri
    )


def active_versions(factory: Factory) -> list[str]:
    with factory() as session:
        return list(
            session.execute(select(ModelVersion.version).where(ModelVersion.active)).scalars()
        )


def test_ensure_is_idempotent_and_keeps_the_first_metadata(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        row = ensure(session, "untrained-1a2b3c4d5e6f")
        assert (row.trained, row.meta, row.uri, row.active) == (False, {"T": 16}, None, False)
    with session_factory.begin() as session:
        again = repo.ensure_model_version(
            session=session, version="untrained-1a2b3c4d5e6f", trained=False, metadata={"T": 8}
        )
        assert again.meta == {"T": 16}
    with session_factory() as session:
        assert session.execute(select(func.count()).select_from(ModelVersion)).scalar_one() == 1


def test_ensure_keeps_the_first_location_unless_relocated(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        ensure(session, "v1", uri="/bundles/v1")
    with session_factory.begin() as session:
        assert ensure(session, "v1").uri == "/bundles/v1"
        # Another copy of the same version does not move where workers load it from.
        assert ensure(session, "v1", uri="/tmp/copy/v1").uri == "/bundles/v1"
    with session_factory.begin() as session:
        moved = repo.ensure_model_version(
            session=session, version="v1", trained=False, metadata={}, uri="s3://v1", relocate=True
        )
        assert moved.uri == "s3://v1"
    with session_factory() as session:
        assert repo.get_model_version(session=session, version="v1").uri == "s3://v1"  # type: ignore[union-attr]


def test_ensure_records_a_location_for_a_version_that_had_none(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        ensure(session, "untrained-1")  # the built-in bundle: no location
    with session_factory.begin() as session:
        assert ensure(session, "untrained-1", uri="/bundles/untrained-1").uri == (
            "/bundles/untrained-1"
        )


def test_ensure_refuses_a_contradicting_trained_flag(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        ensure(session, "v1", trained=False)
    with pytest.raises(ValueError, match="trained"), session_factory.begin() as session:
        ensure(session, "v1", trained=True)


def test_concurrent_ensure_creates_one_row(session_factory: Factory) -> None:
    def register(_: int) -> str:
        with session_factory.begin() as session:
            return ensure(session, "shared").version

    assert set(run_together(6, register)) == {"shared"}


def test_activation_switches_the_single_active_version(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        ensure(session, "v1")
        ensure(session, "v2", trained=True)
        assert repo.get_active_model_version(session=session) is None
        assert repo.activate_model_version(session=session, version="v1").active
    assert active_versions(session_factory) == ["v1"]
    with session_factory.begin() as session:
        repo.activate_model_version(session=session, version="v2")
        repo.activate_model_version(session=session, version="v2")
        active = repo.get_active_model_version(session=session)
        assert active is not None and active.version == "v2" and active.trained
    assert active_versions(session_factory) == ["v2"]


def test_activating_an_unknown_version_raises(session_factory: Factory) -> None:
    with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
        repo.activate_model_version(session=session, version="nope")


def test_concurrent_activations_leave_exactly_one_active(session_factory: Factory) -> None:
    versions = [f"v{n}" for n in range(6)]
    with session_factory.begin() as session:
        for version in versions:
            ensure(session, version)

    def activate(index: int) -> None:
        with session_factory.begin() as session:
            repo.activate_model_version(session=session, version=versions[index])

    run_together(len(versions), activate)
    assert len(active_versions(session_factory)) == 1


def test_database_allows_at_most_one_active_row(session_factory: Factory) -> None:
    with session_factory.begin() as session:
        ensure(session, "v1")
        ensure(session, "v2")
        repo.activate_model_version(session=session, version="v1")
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        session.execute(
            ModelVersion.__table__.update().where(ModelVersion.version == "v2").values(active=True)
        )
