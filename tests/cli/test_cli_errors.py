"""Expected failures on the command line: one line on stderr, the right exit code, no trace.

Each runs the real `oceanstream` command in a subprocess against a temporary home.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.cli.helpers import assert_one_line_error, oceanstream
from tests.clips import write_talking_head
from tests.support.services import free_port


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_talking_head(tmp_path_factory.mktemp("clip") / "a.mp4", seconds=1.0, seed=1)


@pytest.mark.parametrize("command", ["analyze", "submit"])
def test_missing_path_is_a_usage_error_and_stores_nothing(
    tmp_path: Path, clip: Path, command: str
) -> None:
    done = oceanstream(tmp_path, command, str(clip), str(tmp_path / "nope.mp4"))
    assert_one_line_error(done, 2, "no such file or folder", "nope.mp4")
    assert not (tmp_path / "oceanstream.db").exists()


def test_unreachable_broker_at_submit_stores_nothing(tmp_path: Path, clip: Path) -> None:
    broker = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    done = oceanstream(tmp_path, "submit", str(clip), env={"OCEANSTREAM_BROKER_URL": broker})
    assert_one_line_error(done, 1, "cannot reach the broker at redis://", "***@127.0.0.1")
    assert "s3cret" not in done.stderr + done.stdout
    assert not (tmp_path / "oceanstream.db").exists()


def test_unknown_job_in_results_is_a_usage_error(tmp_path: Path) -> None:
    assert_one_line_error(
        oceanstream(tmp_path, "results", "--job", "nosuchjob"), 2, "no job 'nosuchjob'"
    )
    assert_one_line_error(oceanstream(tmp_path, "status", "nosuchjob"), 2, "no job 'nosuchjob'")


def test_version_and_clean_help(tmp_path: Path) -> None:
    version = oceanstream(tmp_path, "--version")
    assert (version.returncode, version.stdout.strip()) == (0, "oceanstream 0.1.0")
    for args in ([], ["analyze"], ["submit"], ["results"], ["worker"]):
        shown = oceanstream(tmp_path, *args, "--help")
        assert shown.returncode == 0, shown.stderr
        assert (
            "<bool>" not in shown.stdout and "--verbose" in oceanstream(tmp_path, "--help").stdout
        )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("OCEANSTREAM_MAX_FPS", "fast", "valid number"),
        ("OCEANSTREAM_STAGE_TIME_LIMITS", '{"ingest": [10, 5000]}', "visibility timeout"),
        ("OCEANSTREAM_STAGE_TIME_LIMITS", '{"decode": [1, 2]}', "unknown stage"),
    ],
)
def test_an_invalid_setting_is_one_line_naming_it(
    tmp_path: Path, name: str, value: str, says: str
) -> None:
    for args in (["results"], ["worker", "--queues", "ingest"]):
        done = oceanstream(tmp_path, *args, env={name: value})
        assert_one_line_error(done, 2, f"{name}: ", says)


def test_unreachable_database_is_one_line_with_the_password_masked(tmp_path: Path) -> None:
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/oceanstream"
    for args in (["results"], ["status", "x"], ["db", "upgrade"], ["models", "list"]):
        done = oceanstream(tmp_path, *args, env={"OCEANSTREAM_DATABASE_URL": url})
        assert_one_line_error(done, 1, "cannot use the database at postgresql://someone:***@")
        assert "s3cret" not in done.stderr


def test_single_reconcile_reports_an_outage_and_exits_1(tmp_path: Path) -> None:
    url = f"postgresql://someone:s3cret@127.0.0.1:{free_port()}/oceanstream"
    done = oceanstream(tmp_path, "reconcile", "--loop", "0", env={"OCEANSTREAM_DATABASE_URL": url})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("reconcile: error: cannot use the database")


@pytest.mark.postgres
def test_reconcile_loop_survives_an_outage(tmp_path: Path) -> None:
    """The database is missing at first (an outage), then appears: the loop goes on."""
    from sqlalchemy import text

    from tests.support.postgres import POSTGRES_URL, open_postgres

    databases = open_postgres(POSTGRES_URL)
    name = f"oceanstream_reconcile_{uuid.uuid4().hex[:12]}"
    url = databases.maintenance_url.set(database=name).render_as_string(hide_password=False)
    env = {**os.environ, "OCEANSTREAM_HOME": str(tmp_path), "OCEANSTREAM_DATABASE_URL": url}
    process = subprocess.Popen(
        [sys.executable, "-m", "workers.cli", "reconcile", "--loop", "0.3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(5)
        with databases.engine.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        databases.created.append(name)
        time.sleep(8)
        assert process.poll() is None, process.communicate()[1]
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
        databases.drop_all()
    lines = stderr.strip().splitlines()
    assert any(line.startswith("reconcile: error: cannot use the database") for line in lines)
    assert "reconcile: resent 0 messages" in lines, stderr
    assert "Traceback" not in stderr


@pytest.mark.slow
def test_locked_database_is_one_line(tmp_path: Path) -> None:
    assert oceanstream(tmp_path, "db", "upgrade").returncode == 0
    holder = sqlite3.connect(tmp_path / "oceanstream.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        # Waits this long for the lock before it gives up (30 s by default).
        done = oceanstream(tmp_path, "results", env={"OCEANSTREAM_SQLITE_BUSY_TIMEOUT_S": "2"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_one_line_error(done, 1, "database is locked (another process holds a write lock)")
