"""Jobs from uploaded files (the API's `POST /v1/jobs`, the web app's form): registration,
storage under the tenant's layout, and idempotency keys."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from core.storage.artifacts import LAYOUT, ArtifactLayout
from core.storage.store import ArtifactStore
from db import repository as repo
from db.models import DEFAULT_TENANT_ID
from db.repository.jobs import create_job, job_by_idempotency_key
from workers.celery_app import create_app
from workers.services.errors import ServiceError
from workers.services.jobs import check_broker

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings


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
