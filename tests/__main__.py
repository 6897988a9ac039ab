"""The project's test command: lint, type-check, then the test suite.

    python -m tests [pytest args...]

Without arguments the tests that spend most of their time waiting on the clock run in a
second pytest process beside the rest: the fault-injection suite (`-m chaos`, tests/chaos,
which waits out a stage outage of minutes on its own PostgreSQL and Redis) and the `waits`
tests (real-time live streams, a database outage). Running them alongside costs the rest
little. The two processes take different database numbers of the machine's Redis. The
second one's output is printed when both are done; the command fails if either does. Extra
arguments go to one pytest process, as given.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

CHECKS = [
    [sys.executable, "-m", "ruff", "check", "core", "db", "tasks", "workers", "tests"],
    [sys.executable, "-m", "ruff", "format", "--check", "core", "db", "tasks", "workers", "tests"],
    [sys.executable, "-m", "mypy"],
]
PYTEST = [sys.executable, "-m", "pytest"]


def main() -> int:
    for command in CHECKS:
        print("+", " ".join(command[2:]), flush=True)
        if subprocess.call(command) != 0:
            return 1
    if sys.argv[1:]:
        print("+", "pytest", *sys.argv[1:], flush=True)
        return subprocess.call([*PYTEST, *sys.argv[1:]])
    return run_split()


def run_split() -> int:
    """The waiting tests in the background, everything else in the foreground."""
    background_env = {**os.environ, "OCEANSTREAM_TEST_REDIS_DBS": "11-15"}
    foreground_env = {**os.environ, "OCEANSTREAM_TEST_REDIS_DBS": "1-10"}
    with tempfile.TemporaryFile("w+") as background_log:
        print("+ pytest -m 'chaos or waits' (in the background; its output follows)", flush=True)
        background = subprocess.Popen(
            [*PYTEST, "-m", "chaos or waits"],
            stdout=background_log,
            stderr=subprocess.STDOUT,
            text=True,
            env=background_env,
        )
        try:
            print("+ pytest -m 'not chaos and not waits'", flush=True)
            code = subprocess.call([*PYTEST, "-m", "not chaos and not waits"], env=foreground_env)
            background_code = background.wait()
        finally:
            if background.poll() is None:
                background.kill()
        background_log.seek(0)
        print("+ pytest -m 'chaos or waits': output", flush=True)
        sys.stdout.write(background_log.read())
    print(f"+ exit codes: suite {code}, waiting tests {background_code}", flush=True)
    # pytest exits 5 when a selection holds no test; that is not a failure of the other.
    return max((c for c in (code, background_code) if c != 5), default=5)


if __name__ == "__main__":
    sys.exit(main())
