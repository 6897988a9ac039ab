"""The migrations build exactly the schema the models describe, and can be undone."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Column, Engine, Integer, MetaData, Table, inspect, select, text
from sqlalchemy.pool import NullPool

from core.persons.person_links import ContinuityLinker
from core.traits import TRAITS
from db import repository as repo
from db.attention import encode_attention
from db.engine import make_engine, make_session_factory
from db.migrate import (
    MIGRATIONS_DIR,
    current_revision,
    downgrade_database,
    head_revision,
    upgrade_database,
)
from db.models import Base, Segment, SegmentPerson, SegmentPrediction
from tests.support.rows import attention_map

TABLES = {
    "model_versions",
    "jobs",
    "videos",
    "job_videos",
    "predictions",
    "attention_maps",
    "segments",
    "segment_persons",
    "segment_predictions",
    "persons",
    "tenants",
    "api_keys",
    "callback_attempts",
}
#: The tables as of revision 0003, before tenants.
TABLES_0003 = TABLES - {"tenants", "api_keys", "callback_attempts"}
#: Words in the drift of a revision before 0004 against today's models: what 0004 added,
#: and the columns 0006 added (the storage stamp).
ADDED_IN_0004 = ("tenant", "idempotency_key", "callback", "content_hash", "storage_stamp")
#: Columns 0007 added (shots), left out of comparisons with older revisions too.
ADDED_IN_0007 = ("'shots'", "opens_segment", "closes_segment")
#: The tables as of revision 0002, before segments and persons.
TABLES_0002 = {"model_versions", "jobs", "videos", "job_videos", "predictions", "attention_maps"}


def metadata_of(tables: set[str]) -> MetaData:
    """The models' metadata restricted to `tables`, to compare an older revision against."""
    subset = MetaData(naming_convention=dict(Base.metadata.naming_convention))
    for table in Base.metadata.sorted_tables:
        if table.name in tables:
            table.to_metadata(subset)
    return subset


def schema_drift(url: URL, metadata: MetaData = Base.metadata) -> list[object]:
    """What `alembic revision --autogenerate` would put in a new migration."""
    engine = make_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def drift_before_0004(url: URL, tables: set[str] = TABLES_0003) -> list[object]:
    """`schema_drift` of a database at 0003 or earlier, less what 0004 changed."""
    diffs = schema_drift(url, metadata_of(tables | {"tenants"}))  # jobs and videos refer to it
    added = ADDED_IN_0004 + ADDED_IN_0007
    return [diff for diff in diffs if not any(word in repr(diff) for word in added)]


def before_0004(table: Table) -> Table:
    """`table` less the columns 0004 added, to write rows at an earlier revision."""
    added = {"tenant_id", "idempotency_key", "callback_url", "callback_state"}
    added |= {"shots", "opens_segment", "closes_segment"}
    if not added & set(table.columns.keys()):
        return table
    columns = [column._copy() for column in table.columns if column.name not in added]
    return Table(table.name, MetaData(), *columns)


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
        assert drift_before_0004(empty_database_url, TABLES_0002) == []
        downgrade_database(empty_database_url, "0001")  # keeps each video's first entry
        with engine.begin() as connection:
            rows = connection.execute(text("SELECT name FROM job_videos"))
            assert [name for (name,) in rows] == ["a.mp4"]
    finally:
        engine.dispose()


def _populate_0002(engine: Engine, attention: np.ndarray) -> None:
    """Videos done (scored by two model versions, one with attention), no_face, failed."""
    tables = {name: before_0004(table) for name, table in Base.metadata.tables.items()}
    now = datetime(2026, 1, 1, tzinfo=UTC)
    video = {
        "source_path": "/v.mp4",
        "error": None,
        "size_bytes": 1,
        "fps": 25.0,
        "width": 64,
        "height": 64,
        "timings": {"sample": 1.0},
        "deliveries": {"ingest": 1},
        "attempts": 1,
        "created_at": now,
        "updated_at": now,
    }
    data, shape, dtype = encode_attention(attention)
    with engine.begin() as connection:
        connection.execute(
            tables["model_versions"].insert(),
            [
                {"version": m, "trained": t, "metadata": {}, "active": False, "created_at": now}
                for m, t in (("m-untrained", False), ("m-trained", True))
            ],
        )
        connection.execute(
            tables["videos"].insert(),
            [
                {
                    **video,
                    "id": "vd",
                    "content_hash": "hd",
                    "name": "d.mp4",
                    "status": "done",
                    "duration_s": 15.0,
                    "frames": 16,
                    "faces_found": 12,
                    "faces_ready": True,
                    "flow_ready": True,
                },
                {
                    **video,
                    "id": "vn",
                    "content_hash": "hn",
                    "name": "n.mp4",
                    "status": "no_face",
                    "duration_s": 9.5,
                    "frames": 16,
                    "faces_found": 0,
                    "faces_ready": False,
                    "flow_ready": True,
                },
                {
                    **video,
                    "id": "vf",
                    "content_hash": "hf",
                    "name": "f.mp4",
                    "status": "failed",
                    "error": "cannot decode",
                    "duration_s": None,
                    "frames": None,
                    "faces_found": None,
                    "faces_ready": False,
                    "flow_ready": False,
                },
            ],
        )
        connection.execute(
            tables["predictions"].insert(),
            [
                {
                    "id": 1,
                    "video_id": "vd",
                    "model_version": "m-untrained",
                    "model_trained": False,
                    "created_at": now,
                    **dict(zip(TRAITS, SCORES_A, strict=True)),
                },
                {
                    "id": 2,
                    "video_id": "vd",
                    "model_version": "m-trained",
                    "model_trained": True,
                    "created_at": now,
                    **dict(zip(TRAITS, SCORES_B, strict=True)),
                },
            ],
        )
        connection.execute(
            tables["attention_maps"].insert(),
            {"prediction_id": 1, "shape": shape, "dtype": dtype, "data": data},
        )


SCORES_A = (0.1, 0.2, 0.3, 0.4, 0.5)
SCORES_B = (0.9, 0.8, 0.7, 0.6, 0.5)


def test_existing_rows_become_one_segment_and_one_person_across_0003(
    empty_database_url: URL,
) -> None:
    """0003 maps every video to segment 0, every scored video to person 0, and every
    prediction to a segment prediction and an aggregate; down and up again keeps the rest."""
    attention = attention_map(5)
    upgrade_database(empty_database_url, "0002")
    engine = make_engine(empty_database_url, poolclass=NullPool)
    try:
        _populate_0002(engine, attention)
        upgrade_database(empty_database_url, "0003")
        assert drift_before_0004(empty_database_url) == []
        upgrade_database(empty_database_url)  # the models read below are today's
        factory = make_session_factory(engine)
        with factory() as session:
            segments = {s.video_id: s for s in session.scalars(select(Segment))}
            assert sorted(segments) == ["vd", "vf", "vn"]
            assert len({s.id for s in segments.values()}) == 3
            assert all(len(s.id) == 32 and int(s.id, 16) >= 0 for s in segments.values())
            assert [
                (s.index, s.start_s, s.end_s, s.status, s.error, s.frames, s.faces_found)
                for s in (segments["vd"], segments["vn"], segments["vf"])
            ] == [
                (0, 0.0, 15.0, "done", None, 16, 12),
                (0, 0.0, 9.5, "no_face", None, 16, 0),
                (0, 0.0, 0.0, "failed", "cannot decode", None, None),
            ]
            assert (segments["vd"].faces_ready, segments["vd"].flow_ready) == (True, True)
            assert (segments["vn"].faces_ready, segments["vn"].flow_ready) == (False, True)
            assert (segments["vd"].deliveries, segments["vd"].timings) == ({}, {"sample": 1.0})

            (person,) = session.scalars(select(SegmentPerson)).all()
            assert (person.segment_id, person.index, person.person, person.face_frames) == (
                segments["vd"].id,
                0,
                0,
                12,
            )
            timeline = {
                model: repo.video_timeline(session=session, video_id="vd", model_version=model)
                for model in ("m-untrained", "m-trained")
            }
            assert [r.traits for r in timeline["m-untrained"]] == [
                dict(zip(TRAITS, SCORES_A, strict=True))
            ]
            assert [r.traits for r in timeline["m-trained"]] == [
                dict(zip(TRAITS, SCORES_B, strict=True))
            ]
            with_map, without = (timeline[m][0].prediction_id for m in ("m-untrained", "m-trained"))
            assert with_map is not None and without is not None
            loaded = repo.load_segment_attention(session=session, segment_prediction_id=with_map)
            assert loaded is not None
            np.testing.assert_allclose(loaded, attention, atol=1e-3)
            assert (
                repo.load_segment_attention(session=session, segment_prediction_id=without) is None
            )

            for model, scores, trained in (
                ("m-untrained", SCORES_A, False),
                ("m-trained", SCORES_B, True),
            ):
                (aggregate,) = repo.video_persons(
                    session=session, video_id="vd", model_version=model
                )
                assert aggregate.scores == scores and aggregate.spread == [0.0] * 5
                assert (
                    aggregate.person,
                    aggregate.face_frames,
                    aggregate.segments,
                    aggregate.first_s,
                    aggregate.last_s,
                    aggregate.main,
                    aggregate.model_trained,
                ) == (0, 12, 1, 0.0, 15.0, True, trained)
            assert (
                repo.video_persons(session=session, video_id="vn", model_version="m-trained") == []
            )
            # Final videos are never aggregated again.
            assert (
                repo.aggregate_video(
                    session=session,
                    video_id="vd",
                    model_version="m-trained",
                    linker=ContinuityLinker(),
                )
                is None
            )

        downgrade_database(empty_database_url, "0002")
        assert table_names(empty_database_url) == TABLES_0002
        assert drift_before_0004(empty_database_url, TABLES_0002) == []
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT count(*) FROM predictions")).scalar()
            maps = connection.execute(text("SELECT count(*) FROM attention_maps")).scalar()
            assert (kept, maps) == (2, 1)
        upgrade_database(empty_database_url)
        assert schema_drift(empty_database_url) == []
        with factory() as session:
            assert len(session.scalars(select(Segment)).all()) == 3
            assert len(session.scalars(select(SegmentPrediction)).all()) == 2
    finally:
        engine.dispose()


def test_0007_adds_shots_and_the_persons_cut_flags(empty_database_url: URL) -> None:
    """0007 adds the segments' shots and the persons' flags (true by default: persons stored
    before are linked by continuity as before); down drops the three columns."""
    upgrade_database(empty_database_url, "0006")
    engine = make_engine(empty_database_url, poolclass=NullPool)
    try:
        upgrade_database(empty_database_url, "0007")
        columns = {c["name"]: c for c in inspect(engine).get_columns("segment_persons")}
        assert {"opens_segment", "closes_segment"} <= set(columns)
        assert not columns["opens_segment"]["nullable"]
        assert "shots" in {c["name"] for c in inspect(engine).get_columns("segments")}
        downgrade_database(empty_database_url, "0006")
        columns = {c["name"]: c for c in inspect(engine).get_columns("segment_persons")}
        assert not {"opens_segment", "closes_segment"} & set(columns)
    finally:
        engine.dispose()
