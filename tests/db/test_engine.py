"""Engine set-up: SQLite behaves like a concurrent database, nothing happens at import."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError

from db import repository as repo
from db.engine import dispose_after_fork, make_engine, make_session_factory, normalize_url
from tests.support.postgres import open_postgres
from tests.support.rows import add_video, new_video, sha


def test_sqlite_connections_enforce_foreign_keys_and_use_wal(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}", sqlite_busy_timeout_ms=1234)
    try:
        with engine.connect() as connection:
            pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
            assert pragma("foreign_keys") == 1
            assert pragma("journal_mode") == "wal"
            assert pragma("busy_timeout") == 1234
    finally:
        engine.dispose()


def test_switching_a_new_file_to_wal_waits_for_a_writer_holding_the_lock(
    tmp_path: Path,
) -> None:
    """SQLite fails the WAL switch at once while another connection writes; it is retried."""
    path = tmp_path / "new.db"
    # The default rollback journal; committed from a timer thread.
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (n INTEGER)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    threading.Timer(0.3, writer.execute, args=("COMMIT",)).start()
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout_ms=10_000)
    try:
        started = time.monotonic()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.execute(text("SELECT n FROM t")).scalar_one() == 1
        assert time.monotonic() - started >= 0.25  # it did wait for the commit
    finally:
        engine.dispose()
        writer.close()


def test_the_wal_switch_gives_up_when_the_busy_timeout_runs_out(tmp_path: Path) -> None:
    path = tmp_path / "held.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (n INTEGER)")
    writer.execute("BEGIN IMMEDIATE")
    engine = make_engine(f"sqlite:///{path}", sqlite_busy_timeout_ms=200)
    try:
        with pytest.raises(OperationalError, match="database is locked"):
            engine.connect()
    finally:
        engine.dispose()
        writer.close()


def test_sqlite_parent_folder_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "folder" / "oceanstream.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        assert path.exists()
    finally:
        engine.dispose()


def test_sqlite_transactions_take_the_write_lock_up_front(tmp_path: Path) -> None:
    """A second writer waits (busy_timeout) instead of failing, and reads inside a
    transaction are not run outside it."""
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    engine = make_engine(url, sqlite_busy_timeout_ms=5000)
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE t (n INTEGER)"))
            connection.execute(text("INSERT INTO t VALUES (0)"))
        order: list[str] = []

        def second() -> None:
            with engine.begin() as connection:
                order.append("second begins")
                value = connection.execute(text("SELECT n FROM t")).scalar_one()
                connection.execute(text("UPDATE t SET n = :n"), {"n": value + 1})

        with engine.begin() as connection:
            value = connection.execute(text("SELECT n FROM t")).scalar_one()
            thread = threading.Thread(target=second)
            thread.start()
            time.sleep(0.3)
            order.append("first commits")
            connection.execute(text("UPDATE t SET n = :n"), {"n": value + 1})
        thread.join(10)
        assert order == ["first commits", "second begins"]
        with engine.connect() as connection:
            assert connection.execute(text("SELECT n FROM t")).scalar_one() == 2
    finally:
        engine.dispose()


def test_bare_postgresql_url_uses_psycopg_3() -> None:
    assert normalize_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_session_objects_stay_readable_after_the_block_commits(session_factory: Any) -> None:
    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind="analyze")
    assert len(job.id) == 32
    assert job.kind == "analyze"


def test_foreign_keys_are_enforced(session_factory: Any) -> None:
    with pytest.raises(IntegrityError), session_factory.begin() as session:
        repo.attach_video(session=session, job_id="nojob", video_id="novideo", name="x", position=0)


def _child_uses_engine(engine: Engine, label: str, results: Any) -> None:
    dispose_after_fork(engine)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        video, created = repo.get_or_create_video(
            session=session,
            content_hash=sha(label),
            name="child.mp4",
            source_path="/child.mp4",
            size_bytes=1,
        )
        results.put((video.id, created))


def test_forked_child_after_dispose_gets_its_own_connections(
    engine: Engine, session_factory: Any
) -> None:
    existing = new_video(session_factory, "parent")  # the parent's pool now holds a connection
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child_uses_engine, args=(engine, "parent", results))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert results.get(timeout=5) == (existing, False)
    # The parent's pooled connection still works after the child exited.
    with session_factory.begin() as session:
        assert add_video(session, "parent").id == existing


def test_importing_db_creates_no_engine() -> None:
    code = (
        "import gc, importlib\n"
        "from sqlalchemy.engine import Engine\n"
        "for name in ('db', 'db.models', 'db.engine', 'db.migrate', 'db.attention',"
        " 'db.repository'):\n"
        "    importlib.import_module(name)\n"
        "print(sum(isinstance(o, Engine) for o in gc.get_objects()))\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "0"


@pytest.mark.parametrize("ci", ["1", ""])
def test_unreachable_postgres_fails_in_ci_and_skips_elsewhere(
    ci: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if ci:
        monkeypatch.setenv("CI", ci)
        expected: Any = pytest.fail.Exception
    else:
        monkeypatch.delenv("CI", raising=False)
        expected = pytest.skip.Exception
    # Port 1 on localhost: nothing listens there, the connection is refused at once.
    with pytest.raises(expected, match="not reachable"):
        open_postgres("postgresql+psycopg://postgres@127.0.0.1:1/postgres")
