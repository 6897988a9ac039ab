"""Jobs and the videos submitted in them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from db.models import JOB_KINDS, Job, JobVideo, new_id
from db.repository._common import dialect_insert
from db.types import utcnow


def create_job(*, session: Session, kind: str, options: Mapping[str, Any] | None = None) -> Job:
    """Create a job of `kind` ("analyze", "submit" or "extract") with its JSON `options`."""
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
    job = Job(id=new_id(), kind=kind, options=dict(options or {}), created_at=utcnow())
    session.add(job)
    session.flush()
    return job


def get_job(*, session: Session, job_id: str) -> Job | None:
    """The job with `job_id`, or None."""
    return session.get(Job, job_id)


def attach_video(*, session: Session, job_id: str, video_id: str, name: str, position: int) -> bool:
    """Record that `job_id` includes `video_id` at `position`, under `name` (the path given).

    One entry per position: two paths holding the same bytes are two entries sharing one
    video. Idempotent: a repeated call for the same position adds nothing (the first wins).
    Returns whether this call added the entry.
    """
    stmt = (
        dialect_insert(session, JobVideo)
        .values(job_id=job_id, video_id=video_id, name=name, position=position)
        .on_conflict_do_nothing(index_elements=[JobVideo.job_id, JobVideo.position])
        .returning(JobVideo.position)
    )
    return session.execute(stmt).first() is not None
