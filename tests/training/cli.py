"""Running `oceanstream` in a subprocess on a home folder of the test's own (SQLite, files)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def oceanstream(
    home: Path, *args: str, timeout: float = 400, backbones: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCEANSTREAM_HOME": str(home), "OCEANSTREAM_NUM_FRAMES": "8"}
    for name in ("OCEANSTREAM_DATABASE_URL", "OCEANSTREAM_STORAGE_URL", "OCEANSTREAM_MODEL"):
        env.pop(name, None)
    env.pop("OCEANSTREAM_BACKBONES", None)
    if backbones is not None:
        env["OCEANSTREAM_BACKBONES"] = str(backbones)
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def said(done: subprocess.CompletedProcess[str]) -> str:
    """stderr with line wrapping undone (the console wraps long messages)."""
    return " ".join(done.stderr.split())
