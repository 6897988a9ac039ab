"""The `oceanstream` command line."""

from __future__ import annotations

import os

from workers.cli.app import app


def main() -> None:
    """Console-script entry point."""
    # Quiet the C++ logging of TensorFlow before anything imports it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "2")
    # Commands register themselves on import.
    from workers.cli import (  # noqa: F401
        analyze,
        database,
        distributed,
        extract,
        models,
        processes,
        results,
        training,
    )

    app()


__all__ = ["app", "main"]
