"""The `oceanstream` command line."""

from __future__ import annotations

import sys

from workers.cli.app import app


def main() -> None:
    """Console-script entry point."""
    if "--verbose" not in sys.argv[1:] and "-v" not in sys.argv[1:]:
        # Before anything imports TensorFlow or OpenCV; worker processes inherit it.
        from workers.cli.quiet import quiet_third_party

        quiet_third_party()
    # Commands register themselves on import.
    from workers.cli import (  # noqa: F401
        analyze,
        callbacks,
        database,
        distributed,
        extract,
        keys,
        models,
        plot,
        processes,
        purge,
        results,
        serve,
        training,
        watch,
    )

    try:
        app()
    except Exception as exc:
        _exit_on_expected_failure(exc)
        raise


def _exit_on_expected_failure(exc: Exception) -> None:
    """A database or broker outage or a usage error: one line, no traceback."""
    from workers.cli.app import err
    from workers.cli.failures import describe_failure, exit_code_for

    message = describe_failure(exc)
    if message is None:
        return
    err.print(f"error: {message}", highlight=False, markup=False)
    raise SystemExit(exit_code_for(exc))


__all__ = ["app", "main"]
