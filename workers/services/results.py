"""Reading stored results: rows in the JSON contract's shape, lookups by path, name or id.

A video is shown everywhere as the path given in its job (`analyze`, `submit`, `results`,
`status`); where a row belongs to no particular job, the path given in the latest job that
used it. A video is looked up by that path, its file name, its id, or a unique prefix of its
id of at least `MIN_ID_PREFIX` hex characters (the short id in attention file names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from db.repository.results import ResultRow
from workers.services.errors import AmbiguousVideoId, UnknownJob, UsageError

if TYPE_CHECKING:
    import numpy as np
    from sqlalchemy.orm import Session, sessionmaker

MIN_ID_PREFIX = 8
_ID_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_ID_PREFIX},32}}")

__all__ = [
    "MIN_ID_PREFIX",
    "ResultRow",
    "StoredAttention",
    "job_results",
    "query_rows",
    "resolve_video",
    "stored_attention",
]


def job_results(session_factory: sessionmaker, job_id: str) -> list[ResultRow]:
    """A row per entry of the job, in submission order."""
    return query_rows(session_factory, job_id=job_id)


def query_rows(
    session_factory: sessionmaker, *, job_id: str | None = None, video: str | None = None
) -> list[ResultRow]:
    """Stored results filtered by job and video; raises `UnknownJob`, `AmbiguousVideoId`."""
    from db import repository as repo

    with session_factory() as session:
        if job_id is not None and repo.get_job(session=session, job_id=job_id) is None:
            raise UnknownJob(job_id)
        ref = None if video is None else resolve_video(session, video)
        return repo.query_results(session=session, job_id=job_id, video=ref)


def resolve_video(session: Session, ref: str) -> str:
    """A full video id for an id prefix of >= 8 hex characters; anything else unchanged."""
    from db.repository.results import video_ids_with_prefix

    if not _ID_PREFIX.fullmatch(ref):
        return ref
    candidates = video_ids_with_prefix(session=session, prefix=ref)
    if len(candidates) > 1:
        raise AmbiguousVideoId(ref, candidates)
    return candidates[0] if candidates else ref


@dataclass(frozen=True)
class StoredAttention:
    row: ResultRow
    weights: np.ndarray[Any, Any]

    @property
    def title(self) -> str:
        suffix = "" if self.row.model_trained else ", untrained"
        return f"{self.row.video} ({self.row.model_version}{suffix})"


def stored_attention(session_factory: sessionmaker, video: str) -> StoredAttention:
    """The attention map of the latest prediction for `video`; raises `UsageError`."""
    from db import repository as repo

    with session_factory() as session:
        ref = resolve_video(session, video)
        rows = [r for r in repo.query_results(session=session, video=ref) if r.prediction_id]
        if not rows:
            raise UsageError(f"no stored prediction for video {video!r}")
        row = max(rows, key=lambda r: r.created_at)
        assert row.prediction_id is not None  # filtered above
        weights = repo.load_attention(session=session, prediction_id=row.prediction_id)
    if weights is None:
        raise UsageError(f"prediction for {video!r} has no attention map stored")
    return StoredAttention(row=row, weights=weights)
