"""Passwords in every URL form stay out of the CLI's output when a service is unreachable.

The real command, with the database or broker URL pointing at a port nothing listens on: a
password holding `#` or `/` (SQLAlchemy reads it whole), a password in the query
(`?password=`), a percent-encoded `#` in a broker password, and ports out of range. Each
gives one line on stderr, the right exit code, no traceback, and no trace of the password.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import oceanstream
from tests.clips import write_faceless
from tests.support.services import free_port

pytestmark = pytest.mark.integration

SECRET = "Leak5x"  # in every password below
DEAD = free_port()

HASH_DB = f"postgresql+psycopg://u:Hash#{SECRET}/p@127.0.0.1:{DEAD}/db"
QUERY_DB = f"postgresql+psycopg://u@127.0.0.1:{DEAD}/db?password=Q{SECRET}&sslmode=disable"
ENCODED_BROKER = f"redis://:Hash%23{SECRET}@127.0.0.1:{DEAD}/0"

CASES = {
    "status, '#' and '/' in the database password": (
        {"OCEANSTREAM_DATABASE_URL": HASH_DB},
        ["status", "0123abcd"],
        1,
        "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:",
    ),
    "reconcile, '#' and '/' in the database password": (
        {"OCEANSTREAM_DATABASE_URL": HASH_DB},
        ["reconcile"],
        1,
        "cannot use the database at postgresql+psycopg://u:***@127.0.0.1:",
    ),
    "status, ?password= on the database": (
        {"OCEANSTREAM_DATABASE_URL": QUERY_DB},
        ["status", "0123abcd"],
        1,
        "/db?password=***&sslmode=disable",
    ),
    "serve, ?password= on the database": (
        {"OCEANSTREAM_DATABASE_URL": QUERY_DB},
        ["serve", "--port", str(free_port())],
        1,
        "/db?password=***&sslmode=disable",
    ),
    "submit, %23 in the broker password": (
        {"OCEANSTREAM_BROKER_URL": ENCODED_BROKER},
        ["submit", "CLIP"],
        1,
        "cannot reach the broker at redis://:***@127.0.0.1:",
    ),
    "dead-letters list, %23 in the broker password": (
        {"OCEANSTREAM_BROKER_URL": ENCODED_BROKER},
        ["dead-letters", "list"],
        1,
        "cannot reach the broker at redis://:***@127.0.0.1:",
    ),
    "submit, ?password= on the broker": (
        {"OCEANSTREAM_BROKER_URL": f"redis://127.0.0.1:{DEAD}/0?password={SECRET}"},
        ["submit", "CLIP"],
        2,
        "OCEANSTREAM_BROKER_URL: kombu cannot read a password in the broker URL's query",
    ),
    "dead-letters list, '#' in the broker password": (
        {"OCEANSTREAM_BROKER_URL": f"redis://:Hash#{SECRET}@127.0.0.1:{DEAD}/0"},
        ["dead-letters", "list"],
        2,
        "OCEANSTREAM_BROKER_URL: write a '#' in the broker URL as %23",
    ),
    "status, database port out of range": (
        {"OCEANSTREAM_DATABASE_URL": f"postgresql+psycopg://u:{SECRET}@127.0.0.1:99999/db"},
        ["status", "0123abcd"],
        2,
        "OCEANSTREAM_DATABASE_URL: the port must be a number from 1 to 65535, got '99999'",
    ),
    "dead-letters list, broker port out of range": (
        {"OCEANSTREAM_BROKER_URL": f"redis://:{SECRET}@127.0.0.1:70000/0"},
        ["dead-letters", "list"],
        2,
        "OCEANSTREAM_BROKER_URL: the port must be a number from 1 to 65535, got '70000'",
    ),
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_faceless(tmp_path_factory.mktemp("clip") / "faceless.mp4", seconds=1.0, seed=3)


@pytest.mark.parametrize("case", list(CASES))
def test_an_unusable_url_is_one_line_without_its_password(
    case: str, clip: Path, tmp_path: Path
) -> None:
    env, args, code, expected = CASES[case]
    args = [str(clip) if a == "CLIP" else a for a in args]
    done = oceanstream(tmp_path, *args, env=env, timeout=120)
    shown = done.stdout + done.stderr
    assert SECRET not in shown and "Traceback" not in shown, shown
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, shown
    assert len(lines) == 1 and expected in lines[0], shown
