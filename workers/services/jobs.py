"""Jobs: registering inputs (`analyze`, `submit`) and queueing them.

Jobs from uploaded files are `workers.services.uploads`; following a job (progress, the
views the API shows) is `workers.services.progress`.

A job keeps one entry per path given, in order, even when two paths hold the same bytes;
storage keeps one video per content (see `register_video`), so such entries share one
analysis and one result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.status import VideoStatus
from core.storage.artifacts import LAYOUT
from core.storage.store import ArtifactStore
from core.video.files import file_sha256, missing_file_key, refusal
from db import repository as repo
from db.models import DEFAULT_TENANT_ID
from db.repository.videos import get_tenant_video
from workers.celery_app import create_app
from workers.services.errors import (
    Unreachable,
    hide_password,
    masked_url,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

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
    check_broker(settings.broker_url.get_secret_value())
    store = ArtifactStore(settings.effective_storage_url, settings.storage_mode)
    registration = register_inputs(session_factory, inputs, kind="submit", store=store)
    celery = create_app(settings)
    for video_id in registration.to_process:
        celery.send_task("oceanstream.ingest", args=[video_id], queue="ingest")
    return registration


def job_failures(session_factory: sessionmaker, job_id: str) -> list[tuple[str, str]]:
    """(path as given, error) of the job's failed entries, in order."""
    with session_factory() as session:
        return repo.job_failures(session=session, job_id=job_id)


def owns_video(session_factory: sessionmaker, video_id: str, tenant_id: str) -> bool:
    """Whether `video_id` (a full id) is one of the tenant's videos."""
    with session_factory() as session:
        return get_tenant_video(session=session, video_id=video_id, tenant_id=tenant_id) is not None
