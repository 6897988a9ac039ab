"""Finding input videos and identifying them by content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
)
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes: the identity of a video, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def missing_file_key(path: str | Path) -> str:
    """A stable stand-in identity for a path that cannot be read, so it can be reported."""
    text = f"unreadable:{Path(path).expanduser().absolute()}"
    return hashlib.sha256(text.encode()).hexdigest()


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given (whatever their extension) and video files found under folders.

    Folders are walked recursively in sorted order so a batch is processed the same way
    every time. A path that does not exist is kept: the caller reports it as failed.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        candidates = (
            sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
            )
            if path.is_dir()
            else [path]
        )
        for candidate in candidates:
            key = candidate.absolute()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found
