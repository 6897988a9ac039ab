"""How resources are shown: JSON of jobs, and the cursors of paginated lists."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from fastapi import HTTPException

from workers.services.progress import JobView

MAX_PAGE = 100


def job_json(view: JobView) -> dict[str, Any]:
    progress = view.progress
    return {
        "id": view.id,
        "url": f"/v1/jobs/{view.id}",
        "kind": view.kind,
        "created_at": view.created_at.isoformat(),
        "final": progress.done,
        "total": progress.total,
        "finished": progress.finished,
        "progress": 1.0 if progress.total == 0 else progress.finished / progress.total,
        "counts": {status.value: n for status, n in progress.counts.items()},
        "videos": [
            {
                "position": entry.position,
                "name": entry.name,
                "video_id": entry.video_id,
                "status": entry.status,
                "url": f"/v1/videos/{entry.video_id}",
            }
            for entry in view.entries
        ],
        "results_url": f"/v1/jobs/{view.id}/results",
        "events_url": f"/v1/jobs/{view.id}/events",
        "callback_url": view.callback_url,
        "callback_state": view.callback_state,
    }


def encode_cursor(*parts: str) -> str:
    return base64.urlsafe_b64encode("\n".join(parts).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, parts: int) -> list[str]:
    """The parts of a cursor this API made; 400 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the cursor is not one this API gave out") from None
    values = raw.split("\n")
    if len(values) != parts:
        raise HTTPException(400, "the cursor is not one this API gave out")
    return values


def job_cursor(view: JobView) -> str:
    return encode_cursor(view.created_at.isoformat(), view.id)


def after_job(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    created, job_id = decode_cursor(cursor, 2)
    try:
        return datetime.fromisoformat(created), job_id
    except ValueError:
        raise HTTPException(400, "the cursor is not one this API gave out") from None


def offset_of(cursor: str | None) -> int:
    if cursor is None:
        return 0
    (value,) = decode_cursor(cursor, 1)
    if not value.isdigit():
        raise HTTPException(400, "the cursor is not one this API gave out")
    return int(value)
