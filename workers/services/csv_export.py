"""Stored results as CSV files, for the CLI (`results --format csv`) and the API.

Text cells that a spreadsheet would run as a formula are neutralised (`neutralise_cell`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from core.traits import TRAITS

#: A text cell starting with one of these is read as a formula by spreadsheet programs.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with a single quote.

    Only text is touched: numbers (trait scores, counts) stay numbers.
    """
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def results_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as CSV; text cells that would start a formula are neutralised."""
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
    return _csv(rows, fields)


def timeline_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Timeline rows as CSV, the traits flattened; text cells neutralised as in `results_csv`."""
    fields = [
        "video",
        "video_id",
        "segment",
        "start_s",
        "end_s",
        "status",
        "person",
        *TRAITS,
        "faces_found",
        "error",
    ]
    return _csv(rows, fields)


def _csv(rows: Sequence[dict[str, Any]], fields: list[str]) -> str:
    """`rows` as CSV with the columns `fields`, the traits flattened, text cells neutralised."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {k: v for k, v in row.items() if k in fields}
        flat.update(row.get("traits") or {})
        writer.writerow({key: neutralise_cell(value) for key, value in flat.items()})
    return buffer.getvalue()
