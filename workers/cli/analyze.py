"""`oceanstream analyze`: every stage in this process, results stored in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.status import VideoStatus
from workers.cli.app import (
    EXIT_FAILED,
    EXIT_OK,
    app,
    collect_inputs,
    err,
    load_settings,
    open_database,
    out,
)
from workers.cli.render import print_results_table

if TYPE_CHECKING:
    from core.video_analysis import SegmentedResult


@app.command()
def analyze(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH", help="Video files or folders of videos."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of results."),
    model: Path | None = typer.Option(None, "--model", help="Model bundle folder."),
    attention_dir: Path | None = typer.Option(
        None, "--attention-dir", help="Write attention-map PNGs here."
    ),
) -> None:
    """Analyze videos in this process (no broker) and store the results."""
    from core.persons.segment_analysis import POSITION_ONLY
    from workers.services.analysis import analyze_inputs, prepare
    from workers.services.models import UNTRAINED_WARNING

    settings = load_settings()
    inputs = collect_inputs(paths)
    session_factory = open_database(settings)
    analyzer, bundle = prepare(settings, session_factory, model)
    if not bundle.metadata.trained:
        err.print(
            UNTRAINED_WARNING.format(version=bundle.metadata.version),
            style="yellow",
            markup=False,
        )
    if analyzer.videos.embed is None:
        err.print(f"note: {POSITION_ONLY}", style="yellow", markup=False, soft_wrap=True)
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("analyzing", total=len(inputs))

        def advance(path: Path, result: SegmentedResult) -> None:
            progress.update(task, advance=1, description=f"{escape(path.name)}: {result.status}")

        analysis = analyze_inputs(
            analyzer, session_factory, inputs, attention_dir=attention_dir, on_result=advance
        )
    rows = [row.to_dict() for row in analysis.rows]
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        print_results_table(out, rows)
    err.print(f"job {analysis.registration.job_id}: {analysis.registration.counts_note()}")
    failed = any(row["status"] == VideoStatus.FAILED for row in rows)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)
