"""The migrations build exactly the schema the models describe, and can be undone."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Column, Integer, MetaData, inspect
from sqlalchemy.pool import NullPool

from db.engine import make_engine
from db.migrate import (
    MIGRATIONS_DIR,
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from db.models import Base

TABLES = {"model_versions", "jobs", "videos", "job_videos", "predictions", "attention_maps"}


def schema_drift(url: URL, metadata: MetaData = Base.metadata) -> list[object]:
    """What `alembic revision --autogenerate` would put in a new migration."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def table_names(url: URL) -> set[str]:
    engine = make_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_reaches_head(empty_database_url: URL) -> None:
    assert current_revision(empty_database_url) is None
    upgrade_database(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()
    assert table_names(empty_database_url) == TABLES


def test_migrated_schema_matches_the_models(empty_database_url: URL) -> None:
    upgrade_database(empty_database_url)
    assert schema_drift(empty_database_url) == []


def test_drift_check_notices_a_difference(empty_database_url: URL) -> None:
    upgrade_database(empty_database_url)
    changed = MetaData(naming_convention=dict(Base.metadata.naming_convention))
    for table in Base.metadata.sorted_tables:
        table.to_metadata(changed)
    changed.tables["videos"].append_column(Column("extra", Integer, nullable=True))
    diffs = schema_drift(empty_database_url, changed)
    assert [diff[0] for diff in diffs] == ["add_column"]  # type: ignore[index]


def test_downgrade_to_base_and_up_again(empty_database_url: URL) -> None:
    upgrade_database(empty_database_url)
    downgrade_database(empty_database_url, "base")
    assert current_revision(empty_database_url) is None
    assert table_names(empty_database_url) == set()
    upgrade_database(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()
    assert schema_drift(empty_database_url) == []


def test_upgrade_is_idempotent(empty_database_url: URL) -> None:
    upgrade_database(empty_database_url)
    upgrade_database(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()


def _upgrade_in_child(url: URL, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait(30)
        upgrade_database(url)
    except BaseException as exc:  # reported to the parent
        errors.put(repr(exc))


def test_concurrent_upgrades_from_several_processes_do_not_collide(
    empty_database_url: URL,
) -> None:
    context = multiprocessing.get_context("fork")
    barrier, errors = context.Barrier(3), context.Queue()
    children = [
        context.Process(target=_upgrade_in_child, args=(empty_database_url, barrier, errors))
        for _ in range(3)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0, 0]
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert reported == []
    assert current_revision(empty_database_url) == head_revision()


def test_concurrent_upgrades_from_threads_of_one_process(empty_database_url: URL) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def upgrade() -> None:
        try:
            barrier.wait(10)
            upgrade_database(empty_database_url)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=upgrade) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert current_revision(empty_database_url) == head_revision()


def test_migrations_are_found_from_any_working_directory(
    empty_database_url: URL, tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # type: ignore[arg-type]
    assert MIGRATIONS_DIR.is_absolute()
    assert (MIGRATIONS_DIR / "env.py").is_file()
    upgrade_database(empty_database_url)
    assert current_revision(empty_database_url) == head_revision()


def test_job_entries_keep_their_rows_across_0002(empty_database_url: URL) -> None:
    """0002 keys job entries by position: two paths with the same bytes are two entries."""
    from sqlalchemy import text

    upgrade_database(empty_database_url, "0001")
    engine = make_engine(empty_database_url, poolclass=NullPool)
    now = "2026-01-01 00:00:00+00:00"
    try:
        with engine.begin() as connection:
            connection.execute(
                text("INSERT INTO jobs VALUES ('j', 'submit', :now, '{}')"), {"now": now}
            )
            connection.execute(
                text(
                    "INSERT INTO videos (id, content_hash, name, source_path, size_bytes, status,"
                    " timings, deliveries, created_at, updated_at) VALUES ('v', 'h', 'a.mp4',"
                    " '/a.mp4', 1, 'done', '{}', '{}', :now, :now)"
                ),
                {"now": now},
            )
            connection.execute(text("INSERT INTO job_videos VALUES ('j', 'v', 'a.mp4', 0)"))
        upgrade_database(empty_database_url, "0002")
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO job_videos VALUES ('j', 'v', 'b.mp4', 1)"))
            rows = connection.execute(text("SELECT name FROM job_videos ORDER BY position"))
            assert [name for (name,) in rows] == ["a.mp4", "b.mp4"]
        assert schema_drift(empty_database_url) == []
        downgrade_database(empty_database_url, "0001")  # keeps each video's first entry
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT name FROM job_videos"))
            assert [name for (name,) in rows] == ["a.mp4"]
    finally:
        engine.dispose()
