"""`oceanstream models list|show|register|activate`: which bundles exist, what each one is
(its model card), and which one serves.

The logic (and how the active version reaches the workers) is in `workers.services.models`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from core.traits import TRAITS
from workers.cli.app import EXIT_FAILED, EXIT_USAGE, app, err, load_settings, out

if TYPE_CHECKING:
    from db.models import ModelVersion

_SPLITS = ("train", "validation", "test")

models_app = typer.Typer(
    help="Model bundles: list, show, register, activate.",
    no_args_is_help=True,
    rich_markup_mode=None,
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


@models_app.command("show")
def show(
    version: str = typer.Argument(..., help="A version, or a unique prefix of one."),
    as_json: bool = typer.Option(False, "--json", help="Print the card as JSON."),
) -> None:
    """The model card: training data, split, accuracy against the mean baseline, backbone,
    intended use and limits."""
    from workers.cli.app import open_database
    from workers.services.errors import UsageError
    from workers.services.models import model_card

    settings = load_settings()
    try:
        view = model_card(open_database(settings), version, settings.num_frames)
    except UsageError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        out.print_json(json.dumps(view))
        return
    print_card(view)


def _known(value: Any) -> str:
    return "unknown" if value is None else str(value)


def _per_split(counts: Any) -> str:
    if not isinstance(counts, dict):
        return "unknown"
    return " / ".join(f"{name} {_known(counts.get(name))}" for name in _SPLITS)


def _line(label: str, text: str) -> None:
    out.print(f"{label}: {text}", markup=False, highlight=False, soft_wrap=True)


def print_card(view: dict[str, Any]) -> None:
    """The card as text; every value from the data is printed literally (no Rich markup)."""
    card = view["card"]
    trained = "yes" if view["trained"] else "no (untrained)"
    active = "yes" if view["active"] else "no"
    _line("model", f"{view['version']}  trained {trained}  active {active}")
    _line("created", _known(view["created"]))
    _line("location", view["uri"] or "(built-in)")
    data = card.get("training_data")
    if data is None:
        _line("training data", "none" if not view["trained"] else "unknown")
    else:
        rule = f" (a person: {data['person_rule']})" if data.get("person_rule") else ""
        _line(
            "training data",
            f"{_known(data.get('name'))} from {_known(data.get('source'))} "
            f"(labels: {_known(data.get('label_format'))}), {_known(data.get('clips'))} clips, "
            f"{_known(data.get('persons'))} persons{rule}",
        )
    split = card.get("split")
    if split is None:
        _line("split", "none" if not view["trained"] else "unknown")
    else:
        disjoint = {True: "yes", False: "no"}.get(split.get("person_disjoint"), "unknown")
        _line(
            "split",
            f"{_known(split.get('method'))}, {_known(split.get('rule'))}; person-disjoint: "
            f"{disjoint}; clips {_per_split(split.get('clips'))}; persons "
            f"{_per_split(split.get('persons'))}",
        )
    _print_evaluation(card.get("evaluation"), view["trained"])
    backbone = card.get("backbone") or {}
    _line(
        "backbone",
        f"{_known(backbone.get('name'))}; trained on: {_known(backbone.get('training_data'))}",
    )
    _line("intended use", _known(card.get("intended_use")))
    out.print("limits:", markup=False, highlight=False)
    for limit in card.get("limits") or ["unknown"]:
        out.print(f"  - {limit}", markup=False, highlight=False, soft_wrap=True)


def _print_evaluation(evaluation: dict[str, Any] | None, trained: bool) -> None:
    if evaluation is None:
        _line("accuracy", "none (untrained)" if not trained else "unknown")
        return
    _line(
        "accuracy",
        f"on the {_known(evaluation.get('split'))} split "
        f"({_known(evaluation.get('clips'))} clips): "
        f"{_known(evaluation.get('accuracy'))}; baseline: {_known(evaluation.get('baseline'))}",
    )
    table = Table("trait", "accuracy", "mean baseline", "difference")
    traits = evaluation.get("traits") or {}
    order = [*TRAITS, *sorted(set(traits) - set(TRAITS))]  # JSON stores keys sorted
    rows = [*((t, traits[t]) for t in order if t in traits), ("mean", evaluation.get("mean") or {})]
    for trait, figures in rows:
        accuracy, baseline = figures.get("accuracy"), figures.get("baseline")
        both = isinstance(accuracy, int | float) and isinstance(baseline, int | float)
        table.add_row(
            escape(str(trait)),
            f"{accuracy:.4f}" if isinstance(accuracy, int | float) else "unknown",
            f"{baseline:.4f}" if isinstance(baseline, int | float) else "unknown",
            f"{accuracy - baseline:+.4f}" if both else "unknown",
        )
    out.print(table)
