"""Erasure: a job or a video, with everything derived from it, out of the database and storage.

Videos and what is derived from them (frames, face and flow features, predictions, attention,
segments, persons) are biometric-derived personal data. Erasing a video deletes its row, and
by cascade its job entries, segments, persons, predictions and attention maps, then its
stored objects: the per-video work folder (frames, features) and its upload, unless another
video row still refers to the same object. Erasing a job erases every video in it and the
job itself. Rows go first, in one transaction; the objects after it commits, so a reader
never finds a row whose objects are gone.

Deleted rows are then scrubbed from the database files (`db.engine.scrub_deleted`): SQLite
zeroes them (`secure_delete`) and empties its WAL; PostgreSQL rewrites the touched tables
(`VACUUM FULL`). When that cannot run at once (a lock held elsewhere past its timeout) it is
logged, and the next erasure's scrub covers these rows too.

A video still being analysed when it is erased may have a stage write its work folder after
the erasure; the next erasure sweep of that video id cannot find it any more, so such a
folder is left behind (see docs/api.md).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from core.storage.artifacts import LAYOUT
from core.storage.store import ArtifactStore
from db.engine import scrub_deleted
from db.models import DEFAULT_TENANT_ID
from db.repository import jobs as job_repo
from db.repository.jobs import jobs_older_than
from db.repository.videos import delete_videos, get_tenant_video, get_video, videos_older_than
from workers.services.errors import UnknownJob, UsageError

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from workers.settings import Settings

log = logging.getLogger("oceanstream.erasure")


class UnknownVideo(UsageError):
    def __init__(self, video_id: str) -> None:
        super().__init__(f"no video {video_id!r}")
        self.video_id = video_id


@dataclass(frozen=True)
class Erased:
    jobs: int = 0
    videos: int = 0
    objects: int = 0

    def __add__(self, other: Erased) -> Erased:
        return Erased(
            self.jobs + other.jobs, self.videos + other.videos, self.objects + other.objects
        )

    def summary(self) -> str:
        return f"erased {self.jobs} job(s), {self.videos} video(s), {self.objects} stored object(s)"


def erase_job(
    settings: Settings,
    session_factory: sessionmaker,
    job_id: str,
    tenant_id: str | None = None,
    *,
    scrub: bool = True,
) -> Erased:
    """Erase the job and its videos; with `tenant_id`, only that tenant's (else `UnknownJob`).

    `scrub=False` leaves the scrub of the database files to the caller (a purge of many jobs
    scrubs once).
    """
    with session_factory.begin() as session:
        job = (
            job_repo.get_job(session=session, job_id=job_id)
            if tenant_id is None
            else job_repo.get_tenant_job(session=session, job_id=job_id, tenant_id=tenant_id)
        )
        if job is None:
            raise UnknownJob(job_id)
        video_ids = job_repo.job_video_ids(session=session, job_id=job_id)
        job_repo.delete_job_row(session=session, job_id=job_id)
        uploads = delete_videos(session=session, video_ids=video_ids)
    if scrub:
        scrub_database(session_factory)
    objects = _erase_objects(settings, video_ids, uploads)
    return Erased(jobs=1, videos=len(video_ids), objects=objects)


def erase_video(
    settings: Settings, session_factory: sessionmaker, video_id: str, tenant_id: str | None = None
) -> Erased:
    """Erase one video; with `tenant_id`, only that tenant's (else `UnknownVideo`)."""
    with session_factory.begin() as session:
        video = (
            get_video(session=session, video_id=video_id)
            if tenant_id is None
            else get_tenant_video(session=session, video_id=video_id, tenant_id=tenant_id)
        )
        if video is None:
            raise UnknownVideo(video_id)
        uploads = delete_videos(session=session, video_ids=[video_id])
    scrub_database(session_factory)
    objects = _erase_objects(settings, [video_id], uploads)
    return Erased(videos=1, objects=objects)


def purge_older_than(settings: Settings, session_factory: sessionmaker, days: float) -> Erased:
    """Erase every job and video created more than `days` days ago (any tenant)."""
    if days <= 0:
        raise UsageError(f"--older-than must be a positive number of days, got {days}")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    with session_factory() as session:
        job_ids = jobs_older_than(session=session, older_than=cutoff)
    total = Erased()
    for job_id in job_ids:
        try:
            total += erase_job(settings, session_factory, job_id, scrub=False)
        except UnknownJob:  # erased meanwhile
            continue
    with session_factory.begin() as session:
        video_ids = videos_older_than(session=session, older_than=cutoff)
        uploads = delete_videos(session=session, video_ids=video_ids)
    if total.jobs or video_ids:
        scrub_database(session_factory)
    objects = _erase_objects(settings, video_ids, uploads)
    return total + Erased(videos=len(video_ids), objects=objects)


def purge_expired(settings: Settings, session_factory: sessionmaker) -> Erased:
    """`purge_older_than` the retention setting (OCEANSTREAM_RETENTION_DAYS); none: nothing."""
    if settings.retention_days is None:
        return Erased()
    return purge_older_than(settings, session_factory, settings.retention_days)


def scrub_database(session_factory: sessionmaker) -> bool:
    """Scrub deleted rows from the database files; False (and a warning) if it must wait."""
    from sqlalchemy.exc import OperationalError

    try:
        scrub_deleted(session_factory.kw["bind"])
    except OperationalError as exc:
        reason = (str(exc.orig or exc).strip().splitlines() or ["locked"])[0]
        log.warning("erased rows are not yet scrubbed from the database files: %s", reason)
        return False
    return True


def _erase_objects(settings: Settings, video_ids: Collection[str], uploads: list[str]) -> int:
    """Delete the videos' work folders and the given upload URIs; how many existed."""
    store = ArtifactStore(settings.effective_storage_url, settings.storage_mode)
    erased = 0
    for video_id in video_ids:
        folder = LAYOUT.work_prefix(video_id)
        if store.exists(store.uri(folder)):
            erased += 1
        store.delete_prefix(folder)
    for uri in uploads:
        if not uri.startswith(store.url + "/"):
            continue  # not in this store (moved storage): nothing here to erase
        if store.exists(uri):
            erased += 1
        store.delete_prefix(uri[len(store.url) + 1 :])
    return erased


__all__ = [
    "DEFAULT_TENANT_ID",
    "Erased",
    "UnknownVideo",
    "erase_job",
    "erase_video",
    "purge_expired",
    "purge_older_than",
    "scrub_database",
]
