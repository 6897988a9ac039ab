"""The Typer application and helpers every command shares."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

app = typer.Typer(
    name="oceanstream",
    help="Apparent Big Five (OCEAN) impressions from video, with cross-attention maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema management.", no_args_is_help=True)
app.add_typer(db_app, name="db")

# Piped output is not squeezed to 80 columns: tables stay one row per video.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def collect_inputs(paths: list[Path]) -> list[Path]:
    """The video files named or found under the folders given; none is a usage error."""
    from core.files import expand_inputs

    inputs = expand_inputs(paths)
    if not inputs:
        err.print("error: no video files found in the given paths")
        raise typer.Exit(EXIT_USAGE)
    return inputs


def load_settings() -> Settings:
    from workers.settings import Settings

    return Settings()


def open_database(settings: Settings) -> sessionmaker:
    """Engine and session factory for the configured database, migrated to the latest schema.

    Upgrading on start keeps the embedded default (a SQLite file) working from a clean
    machine with no separate set-up step; on a shared server `oceanstream db upgrade` does it.
    """
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_database

    url = settings.effective_database_url
    if url.startswith("sqlite:///"):
        settings.home_dir.mkdir(parents=True, exist_ok=True)
    upgrade_database(url)
    return make_session_factory(make_engine(url))
