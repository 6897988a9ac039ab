"""Following jobs: entries and segments per state, the views the API shows, polling to the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.status import FINAL_STATUSES, VideoStatus
from db import repository as repo
from db.repository.jobs import get_tenant_job, job_entries, list_jobs
from db.repository.results import job_segment_counts
from workers.services.errors import UnknownJob
from workers.services.results import ResultRow, job_results

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session, sessionmaker

    from db.models import Job


@dataclass(frozen=True)
class JobProgress:
    """Entries of a job per state; `finished` counts the final ones."""

    counts: dict[VideoStatus, int]
    total: int
    finished: int

    @property
    def done(self) -> bool:
        return self.finished == self.total


def job_progress(session_factory: sessionmaker, job_id: str) -> JobProgress:
    """Entries per state (every state present); raises `UnknownJob`."""
    with session_factory() as session:
        if repo.get_job(session=session, job_id=job_id) is None:
            raise UnknownJob(job_id)
        raw = repo.job_status_counts(session=session, job_id=job_id)
    counts = {status: raw.get(status.value, 0) for status in VideoStatus}
    finished = sum(counts[status] for status in FINAL_STATUSES)
    return JobProgress(counts=counts, total=sum(counts.values()), finished=finished)


@dataclass(frozen=True)
class JobEntry:
    position: int
    name: str  # the path or file name given (an uploaded file's name is only text)
    video_id: str
    status: str


@dataclass(frozen=True)
class JobView:
    """A job as the API shows it: who asked for it, its entries and its progress."""

    id: str
    kind: str
    created_at: datetime
    callback_url: str | None
    callback_state: str | None
    entries: list[JobEntry]
    progress: JobProgress


def job_view(session_factory: sessionmaker, job_id: str, tenant_id: str) -> JobView:
    """The tenant's job; another tenant's raises `UnknownJob` exactly like an unknown id."""
    with session_factory() as session:
        job = get_tenant_job(session=session, job_id=job_id, tenant_id=tenant_id)
        if job is None:
            raise UnknownJob(job_id)
        return _view(session, job)


def list_job_views(
    session_factory: sessionmaker,
    tenant_id: str,
    *,
    limit: int,
    after: tuple[datetime, str] | None = None,
) -> list[JobView]:
    """The tenant's jobs, newest first, after the (created_at, id) cursor `after`."""
    with session_factory() as session:
        jobs = list_jobs(session=session, tenant_id=tenant_id, limit=limit, after=after)
        return [_view(session, job) for job in jobs]


def _view(session: Session, job: Job) -> JobView:
    entries = [JobEntry(*row) for row in job_entries(session=session, job_id=job.id)]
    statuses = {entry.video_id: entry.status for entry in entries}
    counts = {status: 0 for status in VideoStatus}
    for entry in entries:
        counts[VideoStatus(statuses[entry.video_id])] += 1
    finished = sum(counts[status] for status in FINAL_STATUSES)
    return JobView(
        id=job.id,
        kind=job.kind,
        created_at=job.created_at,
        callback_url=job.callback_url,
        callback_state=job.callback_state,
        entries=entries,
        progress=JobProgress(counts=counts, total=len(entries), finished=finished),
    )


def job_segment_progress(session_factory: sessionmaker, job_id: str) -> JobProgress:
    """The job's segments per state (every state present), over its distinct videos."""
    with session_factory() as session:
        raw = job_segment_counts(session=session, job_id=job_id)
    counts = {status: raw.get(status.value, 0) for status in VideoStatus}
    finished = sum(counts[status] for status in FINAL_STATUSES)
    return JobProgress(counts=counts, total=sum(counts.values()), finished=finished)


def follow_job(
    session_factory: sessionmaker,
    job_id: str,
    *,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[JobProgress], None] | None = None,
) -> tuple[JobProgress, list[ResultRow]]:
    """Poll until every entry is final (or `timeout_s` passes); the last progress and rows."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        progress = job_progress(session_factory, job_id)
        if on_progress is not None:
            on_progress(progress)
        if progress.done or (deadline is not None and time.monotonic() > deadline):
            break
        time.sleep(poll_s)
    return progress, job_results(session_factory, job_id)
