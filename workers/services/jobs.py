"""Jobs: registering inputs (`analyze`, `submit`), queueing them, following their progress.

A job keeps one entry per path given, in order, even when two paths hold the same bytes;
storage keeps one video per content (see `register_video`), so such entries share one
analysis and one result.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.status import FINAL_STATUSES, VideoStatus
from db.models import DEFAULT_TENANT_ID
from workers.services.errors import (
    ServiceError,
    UnknownJob,
    Unreachable,
    hide_password,
    masked_url,
)

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session, sessionmaker

    from core.storage.artifacts import ArtifactLayout
    from core.storage.store import ArtifactStore
    from db.models import Job
    from workers.services.results import ResultRow
    from workers.settings import Settings


@dataclass(frozen=True)
class RegisteredVideo:
    video_id: str
    content_hash: str
    created: bool  # False: the same bytes were registered before (by any job)
    problem: str | None  # why the file is not read (unreadable, or refused), as stored
    refused: bool = False  # a path that must not be read, even when registered before


@dataclass
class Registration:
    """What registering a job's inputs did."""

    job_id: str
    video_ids: list[str]  # one per input, in order (repeated for the same bytes)
    to_process: list[str] = field(default_factory=list)  # distinct new videos, in order
    duplicates: int = 0  # inputs with the same bytes as an earlier input of this job
    already_stored: int = 0  # inputs whose bytes an earlier job registered
    unreadable: int = 0
    refused: int = 0  # symlinks in a folder that lead out of it, reported and not read
    failed_at_registration: set[str] = field(default_factory=set)  # unreadable or refused

    def summary(self) -> str:
        """`11 videos (1 duplicate of another), 10 to analyse`."""
        return f"{self.counts_note()}, {len(self.to_process)} to analyse"

    def counts_note(self) -> str:
        """`11 videos (1 duplicate of another)`."""
        notes = []
        if self.duplicates:
            notes.append(f"{self.duplicates} {_noun(self.duplicates, 'duplicate')} of another")
        if self.already_stored:
            notes.append(f"{self.already_stored} already stored")
        if self.unreadable:
            notes.append(f"{self.unreadable} unreadable")
        if self.refused:
            notes.append(f"{self.refused} refused")
        total = len(self.video_ids)
        head = f"{total} {_noun(total, 'video')}"
        if notes:
            head += f" ({', '.join(notes)})"
        return head


@dataclass(frozen=True)
class JobProgress:
    """Entries of a job per state; `finished` counts the final ones."""

    counts: dict[VideoStatus, int]
    total: int
    finished: int

    @property
    def done(self) -> bool:
        return self.finished == self.total


def _noun(count: int, noun: str) -> str:
    return noun if count == 1 else f"{noun}s"


def register_video(
    *,
    session: Session,
    job_id: str,
    path: Path,
    position: int,
    refusal: str | None = None,
    tenant_id: str = DEFAULT_TENANT_ID,
) -> RegisteredVideo:
    """One video row per distinct file content, and one job entry per path given.

    A file that cannot be read, or that is refused (`refusal`, and then never opened), gets
    a stable key derived from its path, so it can still be reported as failed in the job's
    results.
    """
    from db import repository as repo

    content_hash, size, problem = _identify(path, refusal)
    video, created = repo.get_or_create_video(
        session=session,
        content_hash=content_hash,
        name=path.name,
        source_path=str(path.absolute()),
        size_bytes=size,
        tenant_id=tenant_id,
    )
    repo.attach_video(
        session=session, job_id=job_id, video_id=video.id, name=str(path), position=position
    )
    return RegisteredVideo(video.id, content_hash, created, problem, refusal is not None)


def _identify(path: Path, refusal: str | None) -> tuple[str, int, str | None]:
    """(content hash or stand-in key, size, why the file is not read) of `path`."""
    from core.video.files import file_sha256, missing_file_key

    if refusal is not None:
        return missing_file_key(path, kind="refused"), 0, refusal
    try:
        return file_sha256(path), path.stat().st_size, None
    except OSError as exc:
        return missing_file_key(path), 0, f"cannot read {path}: {exc.strerror or exc}"


def register_inputs(
    session_factory: sessionmaker,
    inputs: Sequence[Path],
    *,
    kind: str,
    store: ArtifactStore | None = None,
    tenant_id: str = DEFAULT_TENANT_ID,
) -> Registration:
    """Create the job and its entries; with `store`, upload each new file once (by content).

    An unreadable file is marked failed at once, with the reason; so is a path refused by
    `expand_inputs` (a symlink leaving its folder), which is never opened, uploaded or
    analysed.
    """
    from core.storage.artifacts import LAYOUT
    from core.video.files import refusal
    from db import repository as repo

    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind=kind, options={}, tenant_id=tenant_id)
        registration = Registration(job_id=job.id, video_ids=[])
        seen: set[str] = set()
        for position, path in enumerate(inputs):
            video = register_video(
                session=session,
                job_id=job.id,
                path=path,
                position=position,
                refusal=refusal(inputs, path),
                tenant_id=tenant_id,
            )
            registration.video_ids.append(video.video_id)
            if video.video_id in seen:
                registration.duplicates += 1
                continue
            seen.add(video.video_id)
            if video.refused:
                registration.refused += 1
                registration.failed_at_registration.add(video.video_id)
                if video.created:
                    _fail(session, video)
                continue
            if not video.created:
                registration.already_stored += 1
                continue
            if video.problem is not None:
                registration.unreadable += 1
                registration.failed_at_registration.add(video.video_id)
                _fail(session, video)
                continue
            if store is not None:
                key = LAYOUT.video_upload(video.content_hash, path.suffix)
                uri = store.put_file(path, key)
                repo.set_storage_uri(
                    session=session,
                    video_id=video.video_id,
                    uri=uri,
                    stamp=store.stamp(uri).to_dict(),
                )
            registration.to_process.append(video.video_id)
        return registration


def _fail(session: Session, video: RegisteredVideo) -> None:
    from db import repository as repo

    repo.transition_video(
        session=session,
        video_id=video.video_id,
        to_status=VideoStatus.FAILED,
        error=video.problem,
    )


def check_broker(broker_url: str, timeout_s: float = 3.0) -> None:
    """Raise `Unreachable` unless a connection to the broker opens within `timeout_s`."""
    from kombu import Connection

    connection = Connection(broker_url, connect_timeout=timeout_s)
    try:
        connection.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception as exc:  # kombu raises its own, redis's or socket errors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        reason = hide_password(reason, broker_url)
        raise Unreachable(f"cannot reach the broker at {masked_url(broker_url)}: {reason}") from exc
    finally:
        connection.release()


def submit(
    settings: Settings, session_factory: sessionmaker, inputs: Sequence[Path]
) -> Registration:
    """Check the broker, register the job, upload new files and queue them for ingest.

    Nothing is stored when the broker cannot be reached.
    """
    from core.storage.store import ArtifactStore
    from workers.celery_app import create_app

    check_broker(settings.broker_url.get_secret_value())
    store = ArtifactStore(settings.effective_storage_url, settings.storage_mode)
    registration = register_inputs(session_factory, inputs, kind="submit", store=store)
    celery = create_app(settings)
    for video_id in registration.to_process:
        celery.send_task("oceanstream.ingest", args=[video_id], queue="ingest")
    return registration


@dataclass(frozen=True)
class Upload:
    """One uploaded file, spooled to a local file the server named (`path`).

    `name` is the name the client gave: shown and stored as the entry's name, never used as
    a path; `suffix` is its extension when that is short and alphanumeric, else empty.
    """

    path: Path
    name: str
    sha256: str
    size: int
    suffix: str


class IdempotencyKeyReused(ServiceError):
    """An Idempotency-Key came back with a different request (other files or callback)."""


def request_fingerprint(uploads: Sequence[Upload], callback_url: str | None) -> str:
    """SHA-256 over what an upload request asks for: each file's name and content, the callback.

    Two requests with the same fingerprint ask for the same job; a retried request carrying
    its Idempotency-Key again has the same one.
    """
    digest = hashlib.sha256()
    for upload in uploads:
        digest.update(f"{upload.name}\0{upload.sha256}\n".encode())
    digest.update(f"callback\0{callback_url or ''}".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class UploadedJob:
    job_id: str
    created: bool  # False: an earlier request with the same Idempotency-Key made it
    video_ids: list[str] = field(default_factory=list)


def tenant_layout(tenant_id: str) -> ArtifactLayout:
    """Where a tenant's uploads go: the default tenant's as before, others' under their id."""
    from core.storage.artifacts import LAYOUT, ArtifactLayout

    if tenant_id == DEFAULT_TENANT_ID:
        return LAYOUT
    return ArtifactLayout(prefix=f"tenants/{tenant_id}")


def submit_uploads(
    settings: Settings,
    session_factory: sessionmaker,
    uploads: Sequence[Upload],
    *,
    tenant_id: str,
    callback_url: str | None = None,
    idempotency_key: str | None = None,
) -> UploadedJob:
    """Register a job of uploaded files for `tenant_id`, store new content, queue it for ingest.

    A repeated `idempotency_key` of the tenant with the same request (`request_fingerprint`)
    returns the job the first request made and stores nothing; with a different request it
    raises `IdempotencyKeyReused` (a job made before fingerprints were kept replays as is).
    Nothing is stored when the broker cannot be reached.
    """
    from sqlalchemy.exc import IntegrityError

    from core.storage.store import ArtifactStore
    from workers.celery_app import create_app

    check_broker(settings.broker_url.get_secret_value())
    fingerprint = request_fingerprint(uploads, callback_url)
    if idempotency_key is not None:
        earlier = _job_for_key(session_factory, tenant_id, idempotency_key, fingerprint)
        if earlier is not None:
            return UploadedJob(earlier, created=False)
    store = ArtifactStore(settings.effective_storage_url, settings.storage_mode)
    try:
        job_id, video_ids, to_process = _register_uploads(
            session_factory, store, uploads, tenant_id, callback_url, idempotency_key, fingerprint
        )
    except IntegrityError:
        # Another request with the same key made its job first: that one is the answer.
        earlier = (
            None
            if idempotency_key is None
            else _job_for_key(session_factory, tenant_id, idempotency_key, fingerprint)
        )
        if earlier is None:
            raise
        return UploadedJob(earlier, created=False)
    celery = create_app(settings)
    for video_id in to_process:
        celery.send_task("oceanstream.ingest", args=[video_id], queue="ingest")
    return UploadedJob(job_id, created=True, video_ids=video_ids)


def _job_for_key(
    session_factory: sessionmaker, tenant_id: str, key: str, fingerprint: str
) -> str | None:
    """The job made with Idempotency-Key `key`, if it was made for the same request."""
    from db.repository.jobs import job_by_idempotency_key

    with session_factory() as session:
        job = job_by_idempotency_key(session=session, tenant_id=tenant_id, key=key)
        if job is None:
            return None
        kept = (job.options or {}).get("request_sha256")
        if kept is not None and kept != fingerprint:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different request (other files "
                f"or callback_url) that made job {job.id}; use a new key for a new job"
            )
        return job.id


def _register_uploads(
    session_factory: sessionmaker,
    store: ArtifactStore,
    uploads: Sequence[Upload],
    tenant_id: str,
    callback_url: str | None,
    idempotency_key: str | None,
    fingerprint: str,
) -> tuple[str, list[str], list[str]]:
    from db import repository as repo
    from db.repository.jobs import create_job

    layout = tenant_layout(tenant_id)
    with session_factory.begin() as session:
        job = create_job(
            session=session,
            kind="submit",
            options={"source": "api", "request_sha256": fingerprint},
            tenant_id=tenant_id,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
        )
        video_ids: list[str] = []
        to_process: list[str] = []
        for position, upload in enumerate(uploads):
            video, created = repo.get_or_create_video(
                session=session,
                content_hash=upload.sha256,
                name=upload.name,
                source_path=upload.name,
                size_bytes=upload.size,
                tenant_id=tenant_id,
            )
            repo.attach_video(
                session=session,
                job_id=job.id,
                video_id=video.id,
                name=upload.name,
                position=position,
            )
            video_ids.append(video.id)
            if created:
                uri = store.put_file(upload.path, layout.video_upload(upload.sha256, upload.suffix))
                repo.set_storage_uri(
                    session=session, video_id=video.id, uri=uri, stamp=store.stamp(uri).to_dict()
                )
                to_process.append(video.id)
        return job.id, video_ids, to_process


def job_progress(session_factory: sessionmaker, job_id: str) -> JobProgress:
    """Entries per state (every state present); raises `UnknownJob`."""
    from db import repository as repo

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
    from db.repository.jobs import get_tenant_job

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
    from db.repository.jobs import list_jobs

    with session_factory() as session:
        jobs = list_jobs(session=session, tenant_id=tenant_id, limit=limit, after=after)
        return [_view(session, job) for job in jobs]


def _view(session: Session, job: Job) -> JobView:
    from db.repository.jobs import job_entries

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


def owns_video(session_factory: sessionmaker, video_id: str, tenant_id: str) -> bool:
    """Whether `video_id` (a full id) is one of the tenant's videos."""
    from db.repository.videos import get_tenant_video

    with session_factory() as session:
        return get_tenant_video(session=session, video_id=video_id, tenant_id=tenant_id) is not None


def job_failures(session_factory: sessionmaker, job_id: str) -> list[tuple[str, str]]:
    """(path as given, error) of the job's failed entries, in order."""
    from db import repository as repo

    with session_factory() as session:
        return repo.job_failures(session=session, job_id=job_id)


def follow_job(
    session_factory: sessionmaker,
    job_id: str,
    *,
    timeout_s: float | None = None,
    poll_s: float = 0.5,
    on_progress: Callable[[JobProgress], None] | None = None,
) -> tuple[JobProgress, list[ResultRow]]:
    """Poll until every entry is final (or `timeout_s` passes); the last progress and rows."""
    from workers.services.results import job_results

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        progress = job_progress(session_factory, job_id)
        if on_progress is not None:
            on_progress(progress)
        if progress.done or (deadline is not None and time.monotonic() > deadline):
            break
        time.sleep(poll_s)
    return progress, job_results(session_factory, job_id)
