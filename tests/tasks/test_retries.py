"""Which errors a stage task retries, and for how long: outages of minutes, never a bug.

The errors are real ones, raised by the drivers against a closed port and a real database.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from core.errors import StorageError, VideoDecodeError
from tasks.celery_tasks import MAX_RETRIES, RETRY_JITTER, RETRY_MAX_S, RETRYABLE, retry_delay
from tasks.context import is_outage
from tests.support.services import free_port


def raised(call) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("expected an error")


def test_outages_are_retried() -> None:
    port = free_port()  # nothing listens there
    engine = sa.create_engine(
        f"postgresql+psycopg://postgres@127.0.0.1:{port}/x", connect_args={"connect_timeout": 2}
    )
    refused = raised(lambda: engine.connect())
    assert isinstance(refused, OperationalError) and is_outage(refused)
    broker = redis.Redis(port=port, socket_connect_timeout=2)
    down = raised(broker.ping)
    assert isinstance(down, redis.ConnectionError) and is_outage(down)
    assert is_outage(StorageError("cannot reach the artifact store"))
    assert is_outage(ConnectionResetError()) and is_outage(TimeoutError())
    for error in (refused, down, StorageError("x")):
        assert isinstance(error, RETRYABLE)


def test_programming_and_input_errors_are_not(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        connection.execute(sa.text("INSERT INTO t VALUES (1)"))
    with engine.connect() as connection:
        duplicate = raised(lambda: connection.execute(sa.text("INSERT INTO t VALUES (1)")))
        missing = raised(lambda: connection.execute(sa.text("SELECT * FROM nowhere")))
        bad_sql = raised(lambda: connection.execute(sa.text("SELEC 1")))
    assert isinstance(duplicate, IntegrityError) and not is_outage(duplicate)
    # SQLite says OperationalError for a schema mistake: still a bug, not an outage.
    assert isinstance(missing, OperationalError) and not is_outage(missing)
    assert not is_outage(bad_sql)
    assert not is_outage(ProgrammingError("SELECT", {}, Exception("syntax error")))
    assert not is_outage(TypeError("unsupported operand"))
    assert not is_outage(VideoDecodeError("not a video"))


def test_the_backoff_rides_out_ten_minutes_and_never_waits_over_a_minute() -> None:
    firsts = [retry_delay(n) for n in range(7)]
    for n, pause in enumerate(firsts):
        assert (1 - RETRY_JITTER) * min(2**n, 60) <= pause <= min(2**n, 60)
    pauses = [retry_delay(n) for n in range(MAX_RETRIES)]
    assert max(pauses) <= RETRY_MAX_S
    # Even with every pause shortened by the full jitter, the retries span over 10 minutes.
    shortest = sum((1 - RETRY_JITTER) * min(2**n, RETRY_MAX_S) for n in range(MAX_RETRIES))
    assert shortest >= 600, shortest


@pytest.mark.parametrize("retries", [0, 5, 100])
def test_retry_delay_is_positive(retries: int) -> None:
    assert 0 < retry_delay(retries) <= RETRY_MAX_S
