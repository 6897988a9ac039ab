"""An erased video's id and scores are gone from the database files, not only from its rows.

SQLite: the database file and its WAL are read as bytes. PostgreSQL: every page of the
project's tables, their indexes and TOAST tables is read with `pageinspect`. Each test first
checks that the bytes are there before the erasure, so a search that finds nothing proves
something.
"""

from __future__ import annotations

import struct
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from tests.support.rows import add_model, attention_map, new_video
from workers.services.erasure import erase_video
from workers.settings import Settings

Factory = sessionmaker[Session]
#: A score no other test stores, to search for in its binary forms.
SCORE = 0.123456789012345


def needles(video_id: str) -> dict[str, list[bytes]]:
    """What to search for: the id, and the score as SQLite (big-endian) or PostgreSQL stores it."""
    return {
        "video id": [video_id.encode()],
        "score": [struct.pack(">d", SCORE), struct.pack("<d", SCORE)],
    }


def sqlite_hits(engine: Engine, needle: bytes) -> int:
    database = Path(engine.url.database or "")
    files = [database, database.with_name(database.name + "-wal")]
    return sum(path.read_bytes().count(needle) for path in files if path.exists())


PAGES_HOLDING = text(
    """
    WITH relations AS (
        SELECT c.oid FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'i')
        UNION
        SELECT c.reltoastrelid FROM pg_class c
        WHERE c.relnamespace = 'public'::regnamespace AND c.reltoastrelid <> 0
    )
    SELECT count(*) FROM relations r,
        generate_series(0, pg_relation_size(r.oid) / 8192 - 1) AS block
    WHERE position(:needle IN get_raw_page(r.oid::regclass::text, block::int)) > 0
    """
)


def postgres_hits(engine: Engine, needle: bytes) -> int:
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        return int(connection.execute(PAGES_HOLDING, {"needle": needle}).scalar_one())


def hits(engine: Engine, *forms: bytes) -> int:
    search = sqlite_hits if engine.url.get_backend_name() == "sqlite" else postgres_hits
    return sum(search(engine, form) for form in forms)


def test_an_erased_video_leaves_no_bytes_in_the_database_files(
    session_factory: Factory, engine: Engine, tmp_path: Path
) -> None:
    video_id = new_video(session_factory, "erase-me")
    with session_factory.begin() as session:
        version = add_model(session)
        repo.save_prediction(
            session=session,
            video_id=video_id,
            model_version=version,
            scores=[SCORE] * 5,
            attention=attention_map(seed=5),
            model_trained=False,
        )
    kept = new_video(session_factory, "keep-me")
    wanted = needles(video_id)
    assert all(hits(engine, *forms) > 0 for forms in wanted.values())

    settings = Settings(home=tmp_path / "home", _env_file=None)  # type: ignore[call-arg]
    erased = erase_video(settings, session_factory, video_id)

    assert erased.videos == 1
    found = {what: hits(engine, *forms) for what, forms in wanted.items()}
    assert not any(found.values()), f"erased bytes still in the database files: {found}"
    assert hits(engine, kept.encode()) > 0  # the other video's row is untouched
