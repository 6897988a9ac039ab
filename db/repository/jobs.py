"""Jobs and the videos submitted in them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.status import FINAL_STATUSES
from db.models import (
    DEFAULT_TENANT_ID,
    JOB_KINDS,
    CallbackAttempt,
    Job,
    JobVideo,
    Video,
    new_id,
)
from db.repository._common import FETCH, dialect_insert
from db.types import as_utc, utcnow


def create_job(
    *,
    session: Session,
    kind: str,
    options: Mapping[str, Any] | None = None,
    tenant_id: str = DEFAULT_TENANT_ID,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> Job:
    """Create a job of `kind` ("analyze", "submit" or "extract") with its JSON `options`.

    A `callback_url` starts the job's callback in the `waiting` state (see
    `workers.services.callbacks`). A repeated (tenant, `idempotency_key`) raises the
    database's IntegrityError when flushed: the caller reads the first job back.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"job kind must be one of {JOB_KINDS}, got {kind!r}")
    job = Job(
        id=new_id(),
        kind=kind,
        options=dict(options or {}),
        created_at=utcnow(),
        tenant_id=tenant_id,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        callback_state=None if callback_url is None else "waiting",
    )
    session.add(job)
    session.flush()
    return job


def get_job(*, session: Session, job_id: str) -> Job | None:
    """The job with `job_id`, or None."""
    return session.get(Job, job_id)


def get_tenant_job(*, session: Session, job_id: str, tenant_id: str) -> Job | None:
    """The job with `job_id` if it belongs to `tenant_id`, else None (as if unknown)."""
    job = session.get(Job, job_id)
    return job if job is not None and job.tenant_id == tenant_id else None


def job_by_idempotency_key(*, session: Session, tenant_id: str, key: str) -> Job | None:
    """The tenant's job made by a request carrying Idempotency-Key `key`, or None."""
    stmt = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    return session.scalars(stmt).first()


def list_jobs(
    *,
    session: Session,
    tenant_id: str,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[Job]:
    """The tenant's jobs, newest first, starting after the (created_at, id) `after` cursor."""
    stmt = select(Job).where(Job.tenant_id == tenant_id)
    if after is not None:
        created, job_id = as_utc(after[0]), after[1]
        stmt = stmt.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
    return list(session.scalars(stmt))


def job_video_ids(*, session: Session, job_id: str) -> list[str]:
    """Distinct ids of the job's videos, in submission order."""
    rows = session.execute(
        select(JobVideo.video_id).where(JobVideo.job_id == job_id).order_by(JobVideo.position)
    )
    return list(dict.fromkeys(video_id for (video_id,) in rows))


def job_entries(*, session: Session, job_id: str) -> list[tuple[int, str, str, str]]:
    """(position, name given, video id, video status) of the job's entries, in order."""
    rows = session.execute(
        select(JobVideo.position, JobVideo.name, Video.id, Video.status)
        .join(Video, Video.id == JobVideo.video_id)
        .where(JobVideo.job_id == job_id)
        .order_by(JobVideo.position)
    )
    return [(int(p), str(n), str(v), str(s)) for p, n, v, s in rows]


def jobs_older_than(*, session: Session, older_than: datetime) -> list[str]:
    """Ids of jobs created before `older_than` (naive: UTC), oldest first."""
    stmt = select(Job.id).where(Job.created_at < as_utc(older_than)).order_by(Job.created_at)
    return list(session.scalars(stmt))


def delete_job_row(*, session: Session, job_id: str) -> bool:
    """Delete the job row (its entries and callback attempts cascade); whether it existed."""
    deleted = session.execute(
        delete(Job).where(Job.id == job_id).returning(Job.id), execution_options=FETCH
    )
    return deleted.first() is not None


def jobs_due_for_callback(*, session: Session, limit: int = 100) -> list[str]:
    """Jobs whose callback waits and every entry of which is final, oldest first."""
    final = [status.value for status in FINAL_STATUSES]
    unfinished = (
        select(JobVideo.job_id)
        .join(Video, Video.id == JobVideo.video_id)
        .where(JobVideo.job_id == Job.id, Video.status.not_in(final))
        .correlate(Job)
        .exists()
    )
    stmt = (
        select(Job.id)
        .where(Job.callback_state == "waiting", ~unfinished)
        .order_by(Job.created_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def idle_queued_callbacks(*, session: Session, before: datetime, limit: int = 100) -> list[str]:
    """Jobs whose callback is `queued` and nothing happened since `before`: no attempt was
    recorded and none of their videos changed after it. Their message may be lost."""
    recent_attempt = (
        select(CallbackAttempt.id)
        .where(CallbackAttempt.job_id == Job.id, CallbackAttempt.created_at >= before)
        .correlate(Job)
        .exists()
    )
    recent_change = (
        select(JobVideo.job_id)
        .join(Video, Video.id == JobVideo.video_id)
        .where(JobVideo.job_id == Job.id, Video.updated_at >= before)
        .correlate(Job)
        .exists()
    )
    stmt = (
        select(Job.id)
        .where(Job.callback_state == "queued", ~recent_attempt, ~recent_change)
        .order_by(Job.created_at)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def count_callback_attempts(*, session: Session, job_id: str) -> int:
    """How many deliveries of the job's callback were tried so far."""
    stmt = select(func.count()).select_from(CallbackAttempt).where(CallbackAttempt.job_id == job_id)
    return int(session.scalar(stmt) or 0)


def move_callback(*, session: Session, job_id: str, to_state: str, from_state: str) -> bool:
    """Guarded move of the job's callback state; whether this call moved it."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.callback_state == from_state)
        .values(callback_state=to_state)
        .returning(Job.id)
    )
    return session.execute(stmt, execution_options=FETCH).first() is not None


def record_callback_attempt(
    *, session: Session, job_id: str, attempt: int, status_code: int | None, error: str | None
) -> None:
    """Store one delivery attempt of the job's callback."""
    session.add(
        CallbackAttempt(
            job_id=job_id,
            attempt=attempt,
            status_code=status_code,
            error=error,
            created_at=utcnow(),
        )
    )
    session.flush()


def callback_attempts(*, session: Session, job_id: str) -> list[CallbackAttempt]:
    """The job's callback attempts, in order."""
    stmt = (
        select(CallbackAttempt)
        .where(CallbackAttempt.job_id == job_id)
        .order_by(CallbackAttempt.attempt, CallbackAttempt.id)
    )
    return list(session.scalars(stmt))


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
