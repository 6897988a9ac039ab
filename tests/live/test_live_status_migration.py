"""Migration 0005 adds the `live` status to videos and segments and keeps every row."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import URL
from sqlalchemy.pool import NullPool

from db.engine import make_engine
from db.migrate import current_revision, downgrade_database, upgrade_database


def _rows(engine: sa.Engine, sql: str) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql))]


def _seed(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO videos (id, tenant_id, content_hash, name, source_path, size_bytes,"
                " status, timings, deliveries, faces_ready, flow_ready, attempts, created_at,"
                " updated_at) VALUES ('v1', 'default', :hash, 'cam', 'tcp://x', 0, 'extracting',"
                " '{}', '{}', false, false, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"hash": "a" * 64},
        )
        connection.execute(
            sa.text(
                "INSERT INTO segments (id, video_id, index, start_s, end_s, status, faces_ready,"
                " flow_ready, deliveries, timings, created_at, updated_at) VALUES ('s1', 'v1', 0,"
                " 0, 2, 'extracting', false, false, '{}', '{}', CURRENT_TIMESTAMP,"
                " CURRENT_TIMESTAMP)".replace(" index,", ' "index",')
            )
        )
        connection.execute(
            sa.text(
                'INSERT INTO segment_persons (segment_id, "index", face_frames)'
                " VALUES ('s1', 0, 4)"
            )
        )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_live_status_is_accepted_after_0005_and_rows_survive(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from tests.support.databases import new_database_url

    url: URL = new_database_url(backend, request, tmp_path_factory)
    upgrade_database(url, "0004")
    engine = make_engine(url, poolclass=NullPool)  # SQLite: foreign keys on, as in use
    try:
        _seed(engine)
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("UPDATE videos SET status = 'live'"))
        upgrade_database(url, "0005")
        assert current_revision(url) == "0005"
        assert _rows(engine, "SELECT count(*) FROM segment_persons") == [(1,)]
        assert _rows(engine, "SELECT id, status FROM segments") == [("s1", "extracting")]
        with engine.begin() as connection:
            connection.execute(sa.text("UPDATE videos SET status = 'live'"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("UPDATE videos SET status = 'streaming'"))
        downgrade_database(url, "0004")
        assert _rows(engine, "SELECT status FROM videos") == [("failed",)]
        assert _rows(engine, "SELECT count(*) FROM segment_persons") == [(1,)]
    finally:
        engine.dispose()
