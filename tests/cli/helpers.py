"""Running the real `oceanstream` command in a subprocess against a temporary home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Lines of third-party logging that must never reach a user at the default level.
NOISE = ("cuInit", "oneDNN", "moov", "absl", "WARNING: All log messages", "cuda", "WARN:", "[mov")


def oceanstream(
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    python: list[str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "OCEANSTREAM_HOME": str(home), "OCEANSTREAM_NUM_FRAMES": "8"}
    for name in ("OCEANSTREAM_DATABASE_URL", "OCEANSTREAM_MODEL", "OCEANSTREAM_BROKER_URL"):
        full.pop(name, None)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, *(python or []), "-m", "workers.cli", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *parts: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    for part in parts:
        assert part in lines[0], result.stderr
