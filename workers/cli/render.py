"""Tables and CSV for result rows in the JSON contract's shape, and for timeline rows
(`workers.services.timeline.timeline_rows`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.status import VideoStatus
from core.traits import TRAITS

_STATUS_STYLE = {
    VideoStatus.DONE: "green",
    VideoStatus.NO_FACE: "yellow",
    VideoStatus.FAILED: "red",
}


def _model_cell(row: dict[str, Any]) -> str:
    version = escape(row.get("model_version") or "-")
    if row.get("model_trained") is False:
        return f"{version} [yellow](untrained)[/]"
    return version


def shorten_path(text: str, width: int) -> str:
    """`text` in at most `width` characters: leading folders give way first, then the name's
    middle (`…/clips/a.mp4`, `long_na…me.mp4`)."""
    if len(text) <= width:
        return text
    parts = text.replace("\\", "/").split("/")
    kept = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + 1 + len(kept) + 2 > width:
            break
        kept = f"{part}/{kept}"
    if len(kept) + 2 <= width:
        return f"…/{kept}"
    head = (width - 1) // 2
    tail = width - 1 - head
    return f"{kept[:head]}…{kept[-tail:]}" if tail else kept[:head] + "…"


_MIN_ERROR_WIDTH = 20


def _video_width(console: Console, rows: Sequence[dict[str, Any]], model_width: int) -> int:
    """What is left for the video column once the other columns have their room."""
    # Cells are padded by one space each side: status, five traits, faces, model, error.
    others = 8 + 5 * 7 + 7 + (model_width + 2 if model_width else 0) + _MIN_ERROR_WIDTH + 2
    longest = max((len(row["video"]) for row in rows), default=5)
    return max(16, min(longest, console.width - others - 2))


def _plain_model(row: dict[str, Any]) -> str:
    version = row.get("model_version") or "-"
    return f"{version} (untrained)" if row.get("model_trained") is False else version


def print_results_table(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    """One line per video where the terminal allows (long errors wrap within their row).

    The video column is the path as given, shortened in the middle when too long. When
    every scored row comes from one model, the model is named under the table instead of in
    a column.
    """
    models = {_plain_model(row) for row in rows if row.get("model_version")}
    model_width = max(map(len, models)) if len(models) > 1 else 0
    # A persons column only where some video shows more than one person.
    several = any(len(row.get("persons") or ()) > 1 for row in rows)
    video_width = _video_width(console, rows, model_width + (9 if several else 0))
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("video", no_wrap=True, max_width=video_width)
    table.add_column("status", no_wrap=True)
    for trait in TRAITS:
        table.add_column(trait[0].upper(), justify="right", no_wrap=True)
    table.add_column("faces", justify="right", no_wrap=True)
    if several:
        table.add_column("persons", justify="right", no_wrap=True)
    if model_width:
        table.add_column("model", no_wrap=True)
    table.add_column("error", overflow="fold", ratio=1)
    for row in rows:
        traits = row.get("traits")
        scores = [f"{traits[t]:.3f}" if traits else "-" for t in TRAITS]
        faces = f"{row['faces_found']}/{row['frames']}" if row.get("frames") else "-"
        status = row["status"]
        cells = [
            escape(shorten_path(row["video"], video_width)),
            f"[{_STATUS_STYLE.get(status, 'white')}]{status}[/]",
            *scores,
            faces,
        ]
        if several:  # "-": analysed as a whole, no persons to count
            cells.append(str(len(row["persons"])) if row.get("segments") else "-")
        if model_width:
            cells.append(_model_cell(row))
        table.add_row(*cells, escape(row.get("error") or ""))
    console.print(table)
    if len(models) == 1:
        console.print(f"model: {_model_cell(next(r for r in rows if r.get('model_version')))}")
    if any(row.get("model_trained") is False for row in rows):
        console.print("[yellow]untrained: scores from seeded weights, not an assessment[/]")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_timeline_table(console: Console, rows: Sequence[dict[str, Any]]) -> None:
    """A table per video: a line per segment and person (`-` where a segment has none)."""
    videos: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        videos.setdefault(f"{row['video']} ({row['video_id'][:8]})", []).append(row)
    for heading, video_rows in videos.items():
        table = Table(
            box=box.SIMPLE_HEAD, pad_edge=False, title=escape(heading), title_justify="left"
        )
        for name in ("segment", "start", "end", "status", "person"):
            table.add_column(name, justify="left" if name == "status" else "right", no_wrap=True)
        for trait in TRAITS:
            table.add_column(trait[0].upper(), justify="right", no_wrap=True)
        table.add_column("faces", justify="right", no_wrap=True)
        table.add_column("error", overflow="fold", ratio=1)
        for row in video_rows:
            traits = row.get("traits")
            status = row["status"]
            faces = row.get("faces_found")
            table.add_row(
                str(row["segment"]),
                _seconds(row["start_s"]),
                _seconds(row["end_s"]),
                f"[{_STATUS_STYLE.get(status, 'white')}]{escape(status)}[/]",
                "-" if row.get("person") is None else str(row["person"]),
                *(f"{traits[t]:.3f}" if traits else "-" for t in TRAITS),
                "-" if faces is None else str(faces),
                escape(row.get("error") or ""),
            )
        console.print(table)
