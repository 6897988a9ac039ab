"""`oceanstream results` and `oceanstream attention`: reading what is stored."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from workers.cli.app import app, err, load_settings, open_database, out
from workers.cli.render import print_results_table, results_csv


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


@app.command()
def results(
    job: str | None = typer.Option(None, "--job", help="Only this job's videos."),
    video: str | None = typer.Option(
        None, "--video", help="A path as given, a file name, or a video id (or 8+ of its chars)."
    ),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json or csv."),
) -> None:
    """Show stored OCEAN results, a row per path as given."""
    from workers.services.results import query_rows

    session_factory = open_database(load_settings())
    rows = [row.to_dict() for row in query_rows(session_factory, job_id=job, video=video)]
    if fmt is Format.json:
        out.print_json(json.dumps(rows))
    elif fmt is Format.csv:
        out.out(results_csv(rows), end="")
    else:
        print_results_table(out, rows)
    if not rows and (job or video):
        err.print("no stored results match", markup=False)


@app.command()
def attention(
    video: str = typer.Argument(
        ..., help="A path as given, a file name, or a video id (or 8+ of its chars)."
    ),
    out_path: Path = typer.Option(..., "--out", help="PNG path (a row per direction)."),
) -> None:
    """Draw a stored attention map (a row per direction, a panel per head)."""
    from core.attention_plot import plot_attention_map
    from workers.services.results import stored_attention

    session_factory = open_database(load_settings())
    stored = stored_attention(session_factory, video)
    for path in plot_attention_map(stored.weights, save_path=out_path, title=stored.title):
        out.print(str(path), highlight=False, soft_wrap=True, markup=False)
