"""Every `oceanstream` command, registered on the Typer app in one place."""

from __future__ import annotations

from workers.cli import (
    analyze,
    backbones,
    callbacks,
    database,
    dead_letters,
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
from workers.cli.app import app

COMMAND_MODULES = (
    analyze,
    backbones,
    callbacks,
    database,
    dead_letters,
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

__all__ = ["COMMAND_MODULES", "app"]
