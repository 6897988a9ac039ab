"""Finding input videos and identifying them by content."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
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


def missing_file_key(path: str | Path, kind: str = "unreadable") -> str:
    """A stable stand-in identity for a path that is not read, so it can be reported."""
    text = f"{kind}:{Path(path).expanduser().absolute()}"
    return hashlib.sha256(text.encode()).hexdigest()


class InputPaths(list[Path]):
    """The paths to register, in order, and why any of them is refused (not to be read).

    A plain list of paths everywhere a `Sequence[Path]` is taken; `refusal` says whether a
    path found in a folder must be reported instead of read.
    """

    def __init__(self, paths: Iterable[Path] = (), refused: dict[Path, str] | None = None):
        super().__init__(paths)
        self.refused: dict[Path, str] = dict(refused or {})  # by absolute path


def refusal(inputs: Sequence[Path], path: Path) -> str | None:
    """Why `path`, one of `inputs`, must not be read; None when it may be."""
    if not isinstance(inputs, InputPaths):
        return None
    return inputs.refused.get(path.expanduser().absolute())


def expand_inputs(paths: Iterable[str | Path]) -> InputPaths:
    """Files as given (whatever their extension) and video files found under folders.

    Folders are walked recursively in sorted order so a batch is processed the same way
    every time. A path that does not exist is kept: the caller reports it as failed. A
    folder is read within itself: a symlink in it whose target lies outside it is kept but
    refused (see `refusal`), and folders reached through symlinks are not entered. A
    symlink named as a path is the user's own choice and is followed.
    """
    found = InputPaths()
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            candidates = _folder_videos(path, found.refused)
        else:
            candidates = [path]
            found.refused.pop(path.absolute(), None)
        for candidate in candidates:
            key = candidate.absolute()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


def _folder_videos(folder: Path, refused: dict[Path, str]) -> list[Path]:
    """Video files under `folder`, sorted; links leaving it are listed and added to `refused`."""
    root = folder.resolve()
    videos = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            continue
        if path.is_symlink():
            reason = _link_refusal(path, root)
            if reason is not None:
                refused.setdefault(path.absolute(), reason)
            videos.append(path)  # a link within the folder that leads nowhere: unreadable
        elif path.is_file():
            videos.append(path)
    return videos


def _link_refusal(link: Path, root: Path) -> str | None:
    """Why the symlink `link` in the folder `root` must not be read; None when it may be."""
    try:
        target = link.resolve()
    except (OSError, RuntimeError):  # a loop of links
        return f"symlink cannot be resolved: {link}; not read"
    if target.is_relative_to(root):
        return None
    return f"symlink leaves the submitted folder: {link} -> outside; not read"
