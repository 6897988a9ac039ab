"""The project's test command: lint, type-check, then the test suite.

    python -m tests [pytest args...]

Without arguments the suite runs in three pytest processes side by side, since one keeps
about one of this host's cores busy (most tests wait on worker processes, services and the
clock):

* the lane in the foreground, whose output streams: everything but the next two;
* `tests/cli` and `tests/training` (many short CLI processes, training runs);
* the tests that spend most of their time waiting on the clock: the fault-injection suite
  (`-m chaos`, tests/chaos, which waits out a stage outage of minutes on its own PostgreSQL
  and Redis) and the `waits` tests (real-time live streams, a database outage).

Each lane takes its own database numbers of the machine's Redis. The other lanes' output is
printed when all are done; the command fails if any lane does. Extra arguments go to one
pytest process, as given.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Lane:
    name: str
    args: list[str]
    redis_databases: str  # OCEANSTREAM_TEST_REDIS_DBS: the numbers its tests may take


SIDE_PATHS = ["tests/cli", "tests/training"]
FOREGROUND = Lane(
    "the rest",
    ["-m", "not chaos and not waits", *(f"--ignore={path}" for path in SIDE_PATHS)],
    "1-6",
)
BESIDE = [
    Lane("cli and training", ["-m", "not chaos and not waits", *SIDE_PATHS], "7-11"),
    Lane("waiting on the clock", ["-m", "chaos or waits"], "12-15"),
]


def run_split() -> int:
    """Two lanes in the background, one in the foreground; every lane's exit code counts."""
    with contextlib.ExitStack() as stack:
        started = []
        for lane in BESIDE:
            log = stack.enter_context(tempfile.TemporaryFile("w+"))
            print(f"+ pytest {' '.join(lane.args)}  ({lane.name}; in the background)", flush=True)
            process = subprocess.Popen(
                [*PYTEST, *lane.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "OCEANSTREAM_TEST_REDIS_DBS": lane.redis_databases},
            )
            stack.callback(_kill, process)
            started.append((lane, process, log))
        print(f"+ pytest {' '.join(FOREGROUND.args)}  ({FOREGROUND.name})", flush=True)
        codes = {
            FOREGROUND.name: subprocess.call(
                [*PYTEST, *FOREGROUND.args],
                env={**os.environ, "OCEANSTREAM_TEST_REDIS_DBS": FOREGROUND.redis_databases},
            )
        }
        for lane, process, log in started:
            codes[lane.name] = process.wait()
            log.seek(0)
            print(f"+ pytest {' '.join(lane.args)}  ({lane.name}): output", flush=True)
            sys.stdout.write(log.read())
    print("+ exit codes: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
    # pytest exits 5 when a selection holds no test; that is not a failure of the others.
    return max((code for code in codes.values() if code != 5), default=5)


def _kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait()


if __name__ == "__main__":
    sys.exit(main())
