"""Tables and CSV for result rows in the JSON contract's shape."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from core.traits import TRAITS

_STATUS_STYLE = {"done": "green", "no_face": "yellow", "failed": "red"}


def _model_cell(row: dict[str, Any]) -> str:
    version = row.get("model_version") or "-"
    if row.get("model_trained") is False:
        return f"{version} [yellow](untrained)[/]"
    return version


def print_results_table(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    table = Table(show_lines=False)
    table.add_column("video", overflow="fold")
    table.add_column("status")
    for trait in TRAITS:
        table.add_column(trait[0].upper(), justify="right")
    table.add_column("faces", justify="right")
    table.add_column("model")
    table.add_column("error", overflow="fold")
    for row in rows:
        traits = row.get("traits")
        scores = [f"{traits[t]:.3f}" if traits else "-" for t in TRAITS]
        faces = f"{row['faces_found']}/{row['frames']}" if row.get("frames") else "-"
        status = row["status"]
        table.add_row(
            row["video"],
            f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]",
            *scores,
            faces,
            _model_cell(row),
            row.get("error") or "",
        )
    console.print(table)
    if any(row.get("model_trained") is False for row in rows):
        console.print("[yellow]untrained: scores from seeded weights, not an assessment[/]")


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    fields = [
        "video",
        "video_id",
        "status",
        *TRAITS,
        "faces_found",
        "frames",
        "model_version",
        "model_trained",
        "error",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k in fields}
        flat.update(row.get("traits") or {})
        writer.writerow(flat)
    return buffer.getvalue()
