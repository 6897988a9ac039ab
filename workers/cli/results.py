"""`oceanstream results` and `oceanstream attention`: reading what is stored."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from workers.cli.app import app, err, load_settings, open_database, out
from workers.cli.render import print_results_table, print_timeline_table
from workers.services.csv_export import results_csv, timeline_csv

if TYPE_CHECKING:
    from workers.services.results import ResultRow


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
    timeline: bool = typer.Option(
        False, "--timeline", help="A row per segment and person instead of per video."
    ),
) -> None:
    """Show stored OCEAN results, a row per path as given."""
    from workers.services.results import query_rows

    session_factory = open_database(load_settings())
    found = query_rows(session_factory, job_id=job, video=video)
    if timeline:
        _print_timeline(found, fmt)
        return
    rows = [row.to_dict() for row in found]
    if fmt is Format.json:
        out.print_json(json.dumps(rows))
    elif fmt is Format.csv:
        out.out(results_csv(rows), end="")
    else:
        print_results_table(out, rows)
    if not rows and (job or video):
        err.print("no stored results match", markup=False)


def _print_timeline(found: list[ResultRow], fmt: Format) -> None:
    """Each video once (two paths with the same bytes share one timeline)."""
    from workers.services.timeline import timeline_rows

    first: dict[str, ResultRow] = {}
    for row in found:
        first.setdefault(row.video_id, row)
    rows = timeline_rows(first.values())
    if fmt is Format.json:
        out.print_json(json.dumps(rows))
    elif fmt is Format.csv:
        out.out(timeline_csv(rows), end="")
    else:
        print_timeline_table(out, rows)
    if not rows:
        err.print("no stored segments match", markup=False)


@app.command()
def attention(
    video: str = typer.Argument(
        ..., help="A path as given, a file name, or a video id (or 8+ of its chars)."
    ),
    out_path: Path = typer.Option(..., "--out", help="PNG path (a row per direction)."),
    segment: int | None = typer.Option(
        None, "--segment", metavar="N", help="The map of this segment (index from 0)."
    ),
    person: int | None = typer.Option(
        None, "--person", metavar="P", help="The map of this person (as results --timeline)."
    ),
) -> None:
    """Draw a stored attention map (a row per direction, a panel per head).

    Without --segment/--person: the video's map (its main person's). With them: that
    segment's and person's map; --segment alone takes the segment's person with most face
    frames, --person alone that person's segment with most face frames.
    """
    from core.plots.attention import plot_attention_map
    from workers.services.results import stored_attention, stored_segment_attention

    session_factory = open_database(load_settings())
    if segment is None and person is None:
        stored = stored_attention(session_factory, video)
    else:
        stored = stored_segment_attention(session_factory, video, segment=segment, person=person)
    for path in plot_attention_map(stored.weights, save_path=out_path, title=stored.title):
        out.print(str(path), highlight=False, soft_wrap=True, markup=False)
