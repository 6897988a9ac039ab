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

from db import repository as repo
from db.repository.results import (
    ResultRow,
    SegmentPersonResult,
    SegmentResult,
    video_ids_with_prefix,
)
from db.repository.segment_persons import load_segment_attention
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
    "stored_segment_attention",
    "video_result",
]


def job_results(session_factory: sessionmaker, job_id: str) -> list[ResultRow]:
    """A row per entry of the job, in submission order."""
    return query_rows(session_factory, job_id=job_id)


def query_rows(
    session_factory: sessionmaker, *, job_id: str | None = None, video: str | None = None
) -> list[ResultRow]:
    """Stored results filtered by job and video; raises `UnknownJob`, `AmbiguousVideoId`."""
    with session_factory() as session:
        if job_id is not None and repo.get_job(session=session, job_id=job_id) is None:
            raise UnknownJob(job_id)
        ref = None if video is None else resolve_video(session, video)
        return repo.query_results(session=session, job_id=job_id, video=ref)


def video_result(session_factory: sessionmaker, video: str) -> ResultRow:
    """The one stored video `video` names (path, file name, id or id prefix), with its
    persons and segments; raises `UsageError` when it names none, or several videos."""
    rows = query_rows(session_factory, video=video)
    if not rows:
        raise UsageError(f"no stored video {video!r}")
    distinct = sorted({row.video_id for row in rows})
    if len(distinct) > 1:
        raise UsageError(
            f"{video!r} names {len(distinct)} videos ({', '.join(distinct)}); give one by id"
        )
    return max(rows, key=lambda row: row.created_at)


def resolve_video(session: Session, ref: str) -> str:
    """A full video id for an id prefix of >= 8 hex characters; anything else unchanged."""
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
    #: Set for one (segment, person)'s map: what it is the map of.
    segment_title: str | None = None

    @property
    def title(self) -> str:
        if self.segment_title is not None:
            return self.segment_title
        suffix = "" if self.row.model_trained else ", untrained"
        return f"{self.row.video} ({self.row.model_version}{suffix})"


def stored_attention(session_factory: sessionmaker, video: str) -> StoredAttention:
    """The attention map of the latest prediction for `video`; raises `UsageError`."""
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


def stored_segment_attention(
    session_factory: sessionmaker, video: str, *, segment: int | None, person: int | None
) -> StoredAttention:
    """The attention map of one (segment, person) of `video`; raises `UsageError`.

    `person` is the video-level person number (as `results --timeline` shows it). Without
    `person`, the segment's person with most face frames; without `segment`, the person's
    segment with most face frames (the earliest on a tie), as the headline map is chosen.
    """
    row = video_result(session_factory, video)
    found = _segment_person(row, segment, person)
    where = f"segment {found[0].index} of {row.video!r}, person {_person_name(found[1])}"
    if found[1].prediction_id is None:
        raise UsageError(f"{where} has no prediction from model {row.details_version!r}")
    with session_factory() as session:
        weights = load_segment_attention(
            session=session, segment_prediction_id=found[1].prediction_id
        )
    if weights is None:
        raise UsageError(f"{where} has no attention map stored")
    trained = found[1].model_trained
    suffix = "" if trained else ", untrained"
    title = (
        f"{row.video}, segment {found[0].index} ({found[0].start_s:g}-{found[0].end_s:g} s), "
        f"person {_person_name(found[1])} ({row.details_version}{suffix})"
    )
    return StoredAttention(row=row, weights=weights, segment_title=title)


def _segment_person(
    row: ResultRow, segment: int | None, person: int | None
) -> tuple[SegmentResult, SegmentPersonResult]:
    """The (segment, person) asked for; `UsageError` naming what exists when it does not."""
    if not row.segments:
        raise UsageError(f"video {row.video!r} has no segments (analysed as a whole)")
    segments = list(row.segments)
    if segment is not None:
        segments = [s for s in row.segments if s.index == segment]
        if not segments:
            last = row.segments[-1].index
            raise UsageError(f"video {row.video!r} has no segment {segment} (segments 0-{last})")
    pairs = [(s, p) for s in segments for p in s.persons]
    if person is not None:
        pairs = [(s, p) for s, p in pairs if p.person == person]
    if not pairs:
        raise UsageError(_no_person(row, segments[0] if segment is not None else None, person))
    scored = [pair for pair in pairs if pair[1].prediction_id is not None] or pairs
    return min(scored, key=lambda pair: (-pair[1].faces_found, pair[0].index, pair[1].index))


def _no_person(row: ResultRow, segment: SegmentResult | None, person: int | None) -> str:
    if segment is None:
        known = sorted({p.person for s in row.segments for p in s.persons if p.person is not None})
        return f"video {row.video!r} has no person {person} (persons: {_listed(known)})"
    known = sorted({p.person for p in segment.persons if p.person is not None})
    wanted = "no person" if person is None else f"no person {person}"
    return (
        f"segment {segment.index} of {row.video!r} has {wanted} "
        f"(status {segment.status}; persons there: {_listed(known)})"
    )


def _listed(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers)) or "none"


def _person_name(person: SegmentPersonResult) -> str:
    return str(person.person) if person.person is not None else f"#{person.index} (not linked)"
