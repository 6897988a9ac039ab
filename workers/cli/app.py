"""The Typer application and helpers every command shares.

Command modules register on `app` when imported; `workers.cli.commands` imports them all.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from workers import package_version

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

app = typer.Typer(
    name="oceanstream",
    help="Apparent Big Five (OCEAN) impressions from video, with cross-attention maps.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: the rich renderer shows flags as `--json <bool>`.
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Database schema management.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db_app, name="db")

#: Width of tables written to a pipe or file: wide enough for the columns, short enough to read.
PIPED_WIDTH = 120
# Markup stays on for the command's own styles ("[red]failed[/]"); anything that comes from
# data (paths, errors, bundle metadata) is passed through rich.markup.escape. Emoji codes are
# off: a name such as `root:x:0.mp4` must not print as `root❌0.mp4`.
out = Console(soft_wrap=False, width=None if sys.stdout.isatty() else PIPED_WIDTH, emoji=False)
err = Console(stderr=True, soft_wrap=True, emoji=False)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _print_version(value: bool) -> None:
    if value:
        out.print(f"oceanstream {package_version()}", highlight=False)
        raise typer.Exit(EXIT_OK)


@app.callback()
def main_options(
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="Also show the log output of TensorFlow, OpenCV and FFmpeg, and debug messages.",
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_print_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Apparent Big Five (OCEAN) impressions from video, with cross-attention maps."""
    # The third-party libraries were quieted (or not) before anything imported them, in main().
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )


def plural(count: int, noun: str) -> str:
    """`1 video`, `2 videos`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def collect_inputs(paths: list[Path]) -> list[Path]:
    """The video files named or found under the folders given.

    A path that does not exist, or no video at all, is a usage error: nothing is stored and
    no model is loaded. A file that exists but cannot be read is an input failure, reported
    on its video.
    """
    from core.video.files import expand_inputs

    missing = [str(path) for path in paths if not path.expanduser().exists()]
    if missing:
        err.print(
            f"error: no such file or folder: {', '.join(missing)}", markup=False, highlight=False
        )
        raise typer.Exit(EXIT_USAGE)
    inputs = expand_inputs(paths)
    if not inputs:
        err.print("error: no video files found in the given paths")
        raise typer.Exit(EXIT_USAGE)
    return inputs


def load_settings() -> Settings:
    """The settings; one line per invalid one and exit 2 (a usage error), never a traceback."""
    from pydantic import ValidationError

    from workers.settings import Settings

    try:
        return Settings()
    except ValidationError as exc:
        for problem in exc.errors(include_url=False):
            name = "OCEANSTREAM_" + "_".join(str(part) for part in problem["loc"][:1]).upper()
            message = str(problem["msg"]).removeprefix("Value error, ")
            err.print(f"error: {name}: {message}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None


def open_database(settings: Settings) -> sessionmaker:
    """Engine and session factory for the configured database, migrated to the latest schema.

    Upgrading on start keeps the embedded default (a SQLite file) working from a clean
    machine with no separate set-up step; on a shared server `oceanstream db upgrade` does it.
    """
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_database
    from workers.bootstrap import prepare_home

    url = settings.effective_database_url
    busy_ms = int(settings.sqlite_busy_timeout_s * 1000)
    prepare_home(settings)  # a SQLite file's folder and file, private to the user
    upgrade_database(url, sqlite_busy_timeout_ms=busy_ms)
    return make_session_factory(make_engine(url, sqlite_busy_timeout_ms=busy_ms))
