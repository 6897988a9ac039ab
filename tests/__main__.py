"""The project's test command: lint, type-check, then the test suite.

    python -m tests [pytest args...]

Extra arguments go to pytest.
"""

from __future__ import annotations

import subprocess
import sys

CHECKS = [
    [sys.executable, "-m", "ruff", "check", "core", "db", "tasks", "workers", "tests"],
    [sys.executable, "-m", "ruff", "format", "--check", "core", "db", "tasks", "workers", "tests"],
    [sys.executable, "-m", "mypy"],
]


def main() -> int:
    for command in CHECKS:
        print("+", " ".join(command[2:]), flush=True)
        if subprocess.call(command) != 0:
            return 1
    pytest = [sys.executable, "-m", "pytest", *sys.argv[1:]]
    print("+", " ".join(pytest[2:]), flush=True)
    return subprocess.call(pytest)


if __name__ == "__main__":
    sys.exit(main())
