"""`oceanstream results` and `oceanstream attention`: reading what is stored."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from workers.cli.app import EXIT_USAGE, app, err, load_settings, open_database, out
from workers.cli.render import print_results_table, results_csv


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def row_json(row: Any) -> dict[str, Any]:
    from core.contract import result_json

    return result_json(
        video=row.video,
        video_id=row.video_id,
        status=row.status,
        traits=row.traits,
        faces_found=row.faces_found,
        frames=row.frames,
        model_version=row.model_version,
        model_trained=row.model_trained,
        error=row.error,
    )


@app.command()
def results(
    job: str | None = typer.Option(None, "--job", help="Only this job's videos."),
    video: str | None = typer.Option(None, "--video", help="A video name or id."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, json or csv."),
) -> None:
    """Show stored OCEAN results."""
    from db import repository as repo

    session_factory = open_database(load_settings())
    with session_factory() as session:
        rows = [row_json(r) for r in repo.query_results(session=session, job_id=job, video=video)]
    if fmt is Format.json:
        out.print_json(json.dumps(rows))
    elif fmt is Format.csv:
        out.out(results_csv(rows), end="")
    else:
        print_results_table(out, rows)
    if not rows and (job or video):
        err.print("no stored results match")


@app.command()
def attention(
    video: str = typer.Argument(..., help="A video name or id."),
    out_path: Path = typer.Option(..., "--out", help="PNG path; one file per direction."),
) -> None:
    """Draw a stored attention map (a PNG per direction, a panel per head)."""
    from core.model import plot_attention_map
    from db import repository as repo

    session_factory = open_database(load_settings())
    with session_factory() as session:
        rows = [r for r in repo.query_results(session=session, video=video) if r.prediction_id]
        if not rows:
            err.print(f"error: no stored prediction for video {video!r}")
            raise typer.Exit(EXIT_USAGE)
        row = rows[-1]
        weights = repo.load_attention(session=session, prediction_id=row.prediction_id)
    if weights is None:
        err.print(f"error: prediction for {video!r} has no attention map stored")
        raise typer.Exit(EXIT_USAGE)
    suffix = "" if row.model_trained else ", untrained"
    written = plot_attention_map(
        weights, save_path=out_path, title=f"{row.video} ({row.model_version}{suffix})"
    )
    for path in written:
        out.print(str(path))
