"""Engine and session factories.

Nothing here runs at import: the CLI and each worker process build their own engine from the
settings (workers after the fork, see `dispose_after_fork`).

SQLite needs care to behave like a database under concurrent writers:

* `foreign_keys=ON`, because SQLite ignores foreign keys by default;
* `journal_mode=WAL`, so readers do not block the writer and vice versa. Switching a new
  database to WAL needs the file to itself, and SQLite reports "database is locked" at once,
  without calling the busy handler, while another connection writes (several workers starting
  together on a new database). The switch is retried until the busy timeout runs out; once
  the file is in WAL mode (which persists) the pragma no longer waits for anyone;
* `busy_timeout`, so a writer waits for the lock instead of failing at once;
* `secure_delete=ON`, so a deleted row's bytes are overwritten with zeros in its page rather
  than left in free space: with `scrub_deleted` (a WAL checkpoint that truncates the log after
  an erasure) an erased video's id and scores are gone from the database files;
* the driver's own transaction handling is switched off and every transaction starts with
  `BEGIN IMMEDIATE` (SQLAlchemy's documented recipe for pysqlite). The driver would otherwise
  run SELECTs outside any transaction and only issue `BEGIN` before the first write, so a
  read-modify-write could lose an update; and a deferred transaction that read first fails with
  "database is locked" (no retry) when it tries to write after another writer committed.
  Taking the write lock up front serializes writers and makes such transactions safe. The price:
  keep transactions short, since one holds the lock from its first statement to its commit.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import URL, Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLiteBegin = Literal["DEFERRED", "IMMEDIATE", "EXCLUSIVE"]


def normalize_url(url: str | URL) -> URL:
    """Parse `url`, choosing psycopg 3 for a bare `postgresql://` URL.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which the project does not install.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(
    url: str | URL,
    *,
    echo: bool = False,
    sqlite_busy_timeout_ms: int = 30_000,
    sqlite_begin: SQLiteBegin = "IMMEDIATE",
    **engine_kwargs: Any,
) -> Engine:
    """Create an engine for `url` with the settings this project relies on.

    `engine_kwargs` go to `sqlalchemy.create_engine` (for example `pool_size`).
    For a SQLite file the parent folder is created, since SQLite cannot create it.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _make_sqlite_engine(
            parsed, echo, sqlite_busy_timeout_ms, sqlite_begin, engine_kwargs
        )
    # Workers hold connections for hours; a server restart must not fail the next task.
    engine_kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, echo=echo, **engine_kwargs)


def _make_sqlite_engine(
    url: URL,
    echo: bool,
    busy_timeout_ms: int,
    begin: SQLiteBegin,
    engine_kwargs: dict[str, Any],
) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
    if not in_memory and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, echo=echo, **engine_kwargs)

    @event.listens_for(engine, "connect")
    def _configure_connection(dbapi_connection: Any, connection_record: Any) -> None:
        # Hand transaction control to SQLAlchemy (the `begin` hook below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            cursor.execute("PRAGMA secure_delete=ON")
            if not in_memory:
                _enable_wal(cursor, busy_timeout_ms / 1000)
                # Durable at each checkpoint, the usual pairing with WAL.
                cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql(f"BEGIN {begin}")

    return engine


#: The tables an erasure deletes rows from (the videos' and jobs' cascades).
ERASED_TABLES = (
    "jobs",
    "job_videos",
    "callback_attempts",
    "videos",
    "segments",
    "segment_persons",
    "segment_predictions",
    "persons",
    "predictions",
    "attention_maps",
)


def scrub_deleted(engine: Engine, tables: Sequence[str] = ERASED_TABLES) -> None:
    """Make rows deleted from `tables` physically gone from the database files.

    A DELETE only marks rows dead. SQLite (with `secure_delete`, set on every connection)
    zeroes them in the pages it writes to the WAL; a `wal_checkpoint(TRUNCATE)` copies those
    pages into the database file and empties the WAL, which still held the rows' earlier
    versions. PostgreSQL leaves dead tuples, and a plain VACUUM leaves their bytes in the
    page's free space, so each table is rewritten (`VACUUM FULL`): it holds an exclusive lock
    on the table while it is copied, a fraction of a second for small tables. A lock not
    granted within `lock_timeout` raises, so a long transaction elsewhere is not queued behind.
    """
    backend = engine.url.get_backend_name()
    if backend == "sqlite":
        # On the driver's connection: SQLAlchemy would open a transaction first, and a
        # checkpoint inside one cannot empty the WAL.
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            raw.close()
        return
    if backend != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("SET lock_timeout = '10s'")
        for table in tables:
            # Names come from the fixed list above, never from input.
            connection.exec_driver_sql(f'VACUUM (FULL) "{table}"')


def _enable_wal(cursor: Any, timeout_s: float) -> None:
    """`PRAGMA journal_mode=WAL`, retried while another connection holds the lock it needs."""
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory for `engine`; use it as `with factory.begin() as session:`.

    `expire_on_commit=False` keeps loaded attributes readable after the block commits and
    closes the session (for example a new job's id), instead of raising on detached objects.
    """
    return sessionmaker(bind=engine, expire_on_commit=False)


def dispose_after_fork(engine: Engine) -> None:
    """Make a forked child stop using the connections it inherited from its parent.

    Call it first thing in the child (Celery's `worker_process_init`). A socket shared by two
    processes corrupts both sessions; `dispose(close=False)` gives the child a fresh pool
    without closing the parent's connections underneath it (SQLAlchemy's pooling guide,
    "Using Connection Pools with Multiprocessing or os.fork()").
    """
    engine.dispose(close=False)
