"""The project's test command: lint, type-check, then the test suite.

    python -m tests [pytest args...]

Without arguments the fault-injection suite (`-m chaos`, tests/chaos) runs in a second
pytest process beside the rest: it spends most of its minutes waiting out a stage outage on
its own private PostgreSQL and Redis, so running it alongside costs the rest little. Its
output is printed when both are done; the command fails if either does. Extra arguments go to
one pytest process, as given.
"""

from __future__ import annotations

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
    """The chaos suite in the background, everything else in the foreground."""
    with tempfile.TemporaryFile("w+") as chaos_log:
        print("+ pytest -m chaos (in the background; its output follows the rest)", flush=True)
        chaos = subprocess.Popen(
            [*PYTEST, "-m", "chaos"], stdout=chaos_log, stderr=subprocess.STDOUT, text=True
        )
        try:
            print("+ pytest -m 'not chaos'", flush=True)
            code = subprocess.call([*PYTEST, "-m", "not chaos"])
            chaos_code = chaos.wait()
        finally:
            if chaos.poll() is None:
                chaos.kill()
        chaos_log.seek(0)
        print("+ pytest -m chaos: output", flush=True)
        sys.stdout.write(chaos_log.read())
    print(f"+ exit codes: suite {code}, chaos {chaos_code}", flush=True)
    # pytest exits 5 when a selection holds no test; that is not a failure of the other.
    return max((c for c in (code, chaos_code) if c != 5), default=5)


if __name__ == "__main__":
    sys.exit(main())
