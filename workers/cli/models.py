"""`oceanstream models list|register|activate`: which bundles exist and which one serves.

The logic (and how the active version reaches the workers) is in `workers.services.models`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from workers.cli.app import EXIT_FAILED, EXIT_USAGE, app, err, load_settings, out

if TYPE_CHECKING:
    from db.models import ModelVersion

models_app = typer.Typer(
    help="Model bundles: list, register, activate.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(models_app, name="models")


def _summary(row: ModelVersion) -> dict[str, Any]:
    metrics = (row.meta or {}).get("metrics") or {}
    held_out = metrics.get("test") or metrics.get("validation") or {}
    mean = held_out.get("mean") or {}
    return {
        "version": row.version,
        "trained": row.trained,
        "active": row.active,
        "created": row.created_at.isoformat(timespec="seconds"),
        "dataset": (row.meta or {}).get("dataset"),
        "accuracy": mean.get("accuracy"),
        "baseline": mean.get("baseline"),
        "uri": row.uri,
    }


@models_app.command("list")
def list_models(
    output: str = typer.Option("table", "--format", help="table or json."),
) -> None:
    """Registered model versions, newest first, with their held-out accuracy."""
    from db.repository.model_catalog import list_model_versions
    from workers.cli.app import open_database

    if output not in ("table", "json"):
        err.print(f"error: --format must be table or json, got {output!r}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    session_factory = open_database(load_settings())
    with session_factory() as session:
        rows = [_summary(row) for row in list_model_versions(session=session)]
    if output == "json":
        out.print_json(json.dumps(rows))
        return
    table = Table("version", "trained", "active", "created", "data set", "accuracy", "uri")
    for row in rows:
        accuracy = (
            f"{row['accuracy']:.4f} (baseline {row['baseline']:.4f})"
            if row["accuracy"] is not None and row["baseline"] is not None
            else "-"
        )
        table.add_row(
            escape(row["version"]),
            "yes" if row["trained"] else "[yellow]no[/]",
            "[green]active[/]" if row["active"] else "",
            row["created"],
            escape(str(row["dataset"] or "-")),
            accuracy,
            escape(row["uri"] or "(built-in)"),
        )
    out.print(table)


@models_app.command("register")
def register(
    path: Path = typer.Argument(..., help="A model bundle folder (made by oceanstream train)."),
    activate: bool = typer.Option(False, "--activate", help="Also make it the active version."),
    move: bool = typer.Option(
        False,
        "--move",
        help="The version is registered at another folder: serve it from this one instead.",
    ),
) -> None:
    """Record a bundle in the database by its absolute path; prints its version.

    A version already registered from another folder keeps that location unless `--move`.
    """
    from core.errors import ModelBundleError
    from workers.cli.app import open_database
    from workers.services.models import activate_version, register_bundle_dir

    session_factory = open_database(load_settings())
    try:
        version, trained = register_bundle_dir(session_factory, path, move=move)
    except ModelBundleError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    except ValueError as exc:  # stored with the other trained flag, or at another location
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_FAILED) from None
    if not trained:
        err.print(
            f"warning: {version} is untrained; its scores are not an assessment", markup=False
        )
    if activate:
        activate_version(session_factory, version)
        err.print(f"{version} is now active", markup=False)
    out.print(version, markup=False, highlight=False)


@models_app.command("activate")
def activate(
    version: str = typer.Argument(..., help="A registered version (see oceanstream models list)."),
) -> None:
    """Make `version` the one the workers use for the next videos."""
    from core.errors import ModelBundleError
    from workers.cli.app import open_database
    from workers.services.models import activate_version

    session_factory = open_database(load_settings())
    try:
        activate_version(session_factory, version)
    except ModelBundleError as exc:
        err.print(f"error: cannot activate {version}: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE if "not registered" in str(exc) else EXIT_FAILED) from None
    err.print(
        f"{version} is now active; workers use it for the videos they ingest next", markup=False
    )
