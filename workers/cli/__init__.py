"""The `oceanstream` command line."""

from __future__ import annotations

import sys

from workers.cli.app import app, err
from workers.cli.failures import describe_failure, exit_code_for


def main() -> None:
    """Console-script entry point."""
    if "--verbose" not in sys.argv[1:] and "-v" not in sys.argv[1:]:
        # Before anything imports TensorFlow or OpenCV; worker processes inherit it.
        from workers.cli.quiet import quiet_third_party

        quiet_third_party()
    # Imported here, after the libraries are quieted: the command modules import them.
    from workers.cli.commands import app as registered

    try:
        registered()
    except Exception as exc:
        _exit_on_expected_failure(exc)
        raise


def _exit_on_expected_failure(exc: Exception) -> None:
    """A database or broker outage or a usage error: one line, no traceback."""
    message = describe_failure(exc)
    if message is None:
        return
    err.print(f"error: {message}", highlight=False, markup=False)
    raise SystemExit(exit_code_for(exc))


__all__ = ["app", "main"]
