"""Keeping third-party libraries' log lines off the terminal (unless `--verbose`).

TensorFlow, OpenCV and FFmpeg write from C++ straight to file descriptor 2. Most of it obeys
environment variables read when the library loads, so those are set before anything imports
them; worker processes (forked or started by the command) inherit them. TensorFlow also prints a
few lines while it is being imported, before its logging is configured ("All log messages
before absl::InitializeLog()", "oneDNN custom operations are on", "Could not find cuda
drivers"), which no setting reaches: the import itself runs with descriptor 2 pointed at
/dev/null. Python exceptions are unaffected, so a failing import still reports itself.

oneDNN stays on (`TF_ENABLE_ONEDNN_OPTS` is left alone): turning it off would change the
numbers slightly; only its notice is hidden.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType

QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # also hides "failed call to cuInit" on a host without a GPU
    "ABSL_MIN_LOG_LEVEL": "3",
    "OPENCV_LOG_LEVEL": "ERROR",
    "OPENCV_VIDEOIO_DEBUG": "0",
    "OPENCV_FFMPEG_LOGLEVEL": "-8",  # AV_LOG_QUIET: no "moov atom not found"
    "KMP_WARNINGS": "0",
}
_NOISY_LOGGERS = ("tensorflow", "absl", "h5py", "matplotlib")
_SILENCED_IMPORTS = frozenset({"tensorflow"})


def quiet_third_party() -> None:
    """Set the environment and loggers so only the project's own messages reach stderr."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if not any(isinstance(finder, _SilentImporter) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SilentImporter())


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null for the duration (C++ writes included)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _SilentImporter(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of a noisy top-level package."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _SILENCED_IMPORTS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _SilentLoader(spec.loader)
                return spec
        return None


class _SilentLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with stderr_silenced():
            self._loader.exec_module(module)

    def __getattr__(self, name: str) -> object:  # resource readers and the like
        return getattr(self._loader, name)
