"""Videos: identity by content, guarded status transitions, finding stalled work.

The database is the source of truth for where each video is. Every change of state is one
guarded UPDATE, so a message delivered twice, or two workers racing, cannot move a video twice.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from core.status import VideoStatus
from db.models import DEFAULT_TENANT_ID, VIDEO_STATUSES, Video, new_id
from db.repository._common import FETCH, dialect_insert
from db.types import as_utc, utcnow

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def get_video(*, session: Session, video_id: str) -> Video | None:
    """The video with `video_id`, or None."""
    return session.get(Video, video_id)


def get_or_create_video(
    *,
    session: Session,
    content_hash: str,
    name: str,
    source_path: str,
    size_bytes: int,
    tenant_id: str = DEFAULT_TENANT_ID,
) -> tuple[Video, bool]:
    """The tenant's video whose file bytes hash to `content_hash` (SHA-256 hex), made if new.

    Returns (video, created). The same file submitted twice, under any name and from any
    number of processes at once, is one row: the insert is `ON CONFLICT DO NOTHING` and the
    row is read back afterwards. An existing row keeps its first name and path; the name a
    job used is stored by `attach_video`. Two tenants' same bytes are two rows.
    """
    digest = content_hash.strip().lower()
    if not _SHA256_HEX.match(digest):
        raise ValueError(f"content_hash must be 64 hex digits (SHA-256), got {content_hash!r}")
    if size_bytes < 0:
        raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
    now = utcnow()
    stmt = (
        dialect_insert(session, Video)
        .values(
            id=new_id(),
            tenant_id=tenant_id,
            content_hash=digest,
            name=name,
            source_path=str(source_path),
            size_bytes=int(size_bytes),
            status=VideoStatus.PENDING.value,
            timings={},
            deliveries={},
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=[Video.tenant_id, Video.content_hash])
        .returning(Video.id)
    )
    created = session.execute(stmt).first() is not None
    video = session.execute(
        select(Video).where(Video.tenant_id == tenant_id, Video.content_hash == digest)
    ).scalar_one()
    return video, created


def get_tenant_video(*, session: Session, video_id: str, tenant_id: str) -> Video | None:
    """The video with `video_id` if it belongs to `tenant_id`, else None (as if unknown)."""
    video = session.get(Video, video_id)
    return video if video is not None and video.tenant_id == tenant_id else None


def videos_older_than(*, session: Session, older_than: datetime) -> list[str]:
    """Ids of videos created before `older_than` (naive: UTC), oldest first."""
    stmt = (
        select(Video.id)
        .where(Video.created_at < as_utc(older_than))
        .order_by(Video.created_at, Video.id)
    )
    return list(session.scalars(stmt))


def delete_videos(*, session: Session, video_ids: Collection[str]) -> list[str]:
    """Delete the videos' rows; entries, segments, persons, predictions and attention cascade.

    Returns the storage URIs of their uploads that no remaining video refers to (another
    tenant's, or a video of the same tenant uploaded under the same key), for the caller to
    erase from storage once the transaction commits.
    """
    ids = list(video_ids)
    if not ids:
        return []
    uris = set(
        session.scalars(
            select(Video.storage_uri).where(Video.id.in_(ids), Video.storage_uri.is_not(None))
        )
    )
    session.execute(delete(Video).where(Video.id.in_(ids)), execution_options=FETCH)
    if not uris:
        return []
    still_used = set(
        session.scalars(
            select(Video.storage_uri)
            .where(Video.storage_uri.in_(list(uris)))
            .group_by(Video.storage_uri)
            .having(func.count() > 0)
        )
    )
    return sorted(uri for uri in uris if uri is not None and uri not in still_used)


def transition_video(
    *,
    session: Session,
    video_id: str,
    to_status: str,
    from_statuses: Iterable[str] | None = None,
    error: str | None = None,
) -> bool:
    """Move the video to `to_status` if it is in one of `from_statuses` (any, when None).

    One `UPDATE ... WHERE status IN (...)`: returns whether it moved, so of two workers racing
    for the same step exactly one gets True. `error` replaces the stored error (None clears it,
    so a re-run does not carry an old message). A missing video returns False.
    """
    check_status(to_status)
    values: dict[str, Any] = {"status": to_status, "error": error, "updated_at": utcnow()}
    stmt = update(Video).where(Video.id == video_id)
    if from_statuses is not None:
        allowed = list(from_statuses)
        for status in allowed:
            check_status(status)
        stmt = stmt.where(Video.status.in_(allowed))
    moved = session.execute(stmt.values(values).returning(Video.id), execution_options=FETCH)
    return moved.first() is not None


def find_stuck_videos(
    *,
    session: Session,
    older_than: datetime,
    statuses: Collection[str],
    limit: int | None = None,
) -> list[Video]:
    """Videos in one of `statuses` with no update since `older_than`, oldest first.

    For a reconciler that re-enqueues work whose message was lost. Every repository write
    to a video touches `updated_at`, so this measures time since the last progress. A naive
    `older_than` is taken as UTC.
    """
    for status in statuses:
        check_status(status)
    stmt = (
        select(Video)
        .where(Video.status.in_(list(statuses)), Video.updated_at < as_utc(older_than))
        .order_by(Video.updated_at, Video.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.execute(stmt).scalars())


def check_status(status: str) -> None:
    """Refuse a status outside `VIDEO_STATUSES` with a message, before the CHECK would."""
    if status not in VIDEO_STATUSES:
        raise ValueError(f"video status must be one of {VIDEO_STATUSES}, got {status!r}")
