"""The services the CLI calls, on a SQLite file: registration summaries and id prefixes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.storage.store import ArtifactStore
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from db.models import Video
from workers.services.errors import AmbiguousVideoId
from workers.services.jobs import register_inputs
from workers.services.results import query_rows, resolve_video


@pytest.fixture
def session_factory(tmp_path: Path) -> sessionmaker[Session]:
    url = f"sqlite:///{tmp_path / 'oceanstream.db'}"
    upgrade_database(url)
    return make_session_factory(make_engine(url))


def test_a_copy_is_registered_as_its_own_entry(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    (tmp_path / "a.mp4").write_bytes(b"same bytes")
    shutil.copy(tmp_path / "a.mp4", tmp_path / "b.mp4")
    (tmp_path / "c.mp4").write_bytes(b"other bytes")
    inputs = [tmp_path / name for name in ("a.mp4", "b.mp4", "c.mp4")]
    store = ArtifactStore(f"file://{tmp_path / 'storage'}")
    first = register_inputs(session_factory, inputs, kind="submit", store=store)
    assert first.summary() == "3 videos (1 duplicate of another), 2 to analyse"
    assert first.video_ids[0] == first.video_ids[1] != first.video_ids[2]
    rows = query_rows(session_factory, job_id=first.job_id)
    assert [row.video for row in rows] == [str(path) for path in inputs]
    again = register_inputs(session_factory, inputs[:1], kind="submit", store=store)
    assert again.summary() == "1 video (1 already stored), 0 to analyse"


def test_id_prefixes(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        for suffix, digest in (("1", "h1"), ("2", "h2")):
            session.add(
                Video(
                    id=f"abcdef01{suffix * 24}",
                    content_hash=digest,
                    name=f"{suffix}.mp4",
                    source_path=f"/{suffix}.mp4",
                    size_bytes=1,
                )
            )
    with session_factory() as session:
        assert resolve_video(session, "abcdef011") == "abcdef01" + "1" * 24
        assert resolve_video(session, "abcdef0") == "abcdef0"  # too short: a name
        with pytest.raises(AmbiguousVideoId, match="abcdef01"):
            resolve_video(session, "abcdef01")
