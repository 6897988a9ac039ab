"""The rows of a watched live source: its video, the segments it appends, its gaps, its end.

Each function takes the caller's `session` and does not commit (the watcher wraps each in
`with session_factory.begin():`). A live video is found again by its name: its stand-in
content hash is derived from the name (`live_content_key`), so a watch started again with the
same name continues the same video.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from core.status import VideoStatus
from db import repository as repo
from db.models import DEFAULT_TENANT_ID
from db.repository.segments import append_segment, finish_segment, get_segment, get_segments
from db.repository.stages import StageUpdate

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.persons.person_links import PersonLinker

NO_SEGMENT = "the live source gave no window of at least half a segment to analyse"


@dataclass(frozen=True)
class LiveVideo:
    """A registered live video: where its timeline resumes and where its last segment ends
    (None: it has none yet)."""

    video_id: str
    version: str
    resume_at: float
    last_end: float | None


def live_content_key(name: str, tenant_id: str) -> str:
    """The stand-in content hash of the live video called `name`."""
    return hashlib.sha256(f"live\0{tenant_id}\0{name}".encode()).hexdigest()


def default_name(source: str) -> str:
    """The source without any credentials in it (a URL's user and password)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(source)
    except ValueError:
        return source
    if parts.username is None and parts.password is None:
        return source
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=host))


def register_live_video(
    *,
    session: Session,
    name: str,
    source: str,
    job_kind: str,
    probe: Mapping[str, Any],
    version: Callable[[Session], str],
    segment_seconds: float,
) -> LiveVideo:
    """A job for this watch and the live video called `name` (made, or found), moved to
    `live` with the source's probe; a new video is pinned to `version(session)`."""
    job = repo.create_job(session=session, kind=job_kind, options={"watch": name})
    video, _ = repo.get_or_create_video(
        session=session,
        content_hash=live_content_key(name, DEFAULT_TENANT_ID),
        name=name,
        source_path=default_name(source),
        size_bytes=0,
    )
    repo.attach_video(session=session, job_id=job.id, video_id=video.id, name=name, position=0)
    pinned = repo.pin_model_version(
        session=session, video_id=video.id, version=video.model_version or version(session)
    )
    repo.transition_video(session=session, video_id=video.id, to_status=VideoStatus.LIVE)
    repo.finish_stage(
        session=session,
        video_id=video.id,
        changes=StageUpdate(VideoStatus.LIVE, probe=probe),
        from_statuses=[VideoStatus.LIVE],
    )
    resume_at, last_end = resume_point(
        session=session, video_id=video.id, segment_seconds=segment_seconds
    )
    return LiveVideo(video.id, pinned, resume_at, last_end)


def resume_point(
    *, session: Session, video_id: str, segment_seconds: float
) -> tuple[float, float | None]:
    """Where a watch of a video resumes on its timeline (the next window start after its
    last segment, plus the time since that segment was stored), and where that segment ends
    (None: the video has no segment)."""
    segments = get_segments(session=session, video_id=video_id)
    if not segments:
        return 0.0, None
    last = segments[-1]
    away = max(0.0, time.time() - epoch(last.created_at))
    k = -(-(last.end_s + away) // segment_seconds)
    return float(k * segment_seconds), float(last.end_s)


def model_facts(*, session: Session, version: str, default_frames: int) -> tuple[int, bool]:
    """The version's T and whether its flow covers persons, from its registration (so that
    a watcher whose segments the workers analyse never loads the model)."""
    row = repo.get_model_version(session=session, version=version)
    meta = {} if row is None else dict(row.meta or {})
    return int(meta.get("num_frames") or default_frames), meta.get("flow_region") == "person"


def next_segment_index(*, session: Session, video_id: str) -> int:
    segments = get_segments(session=session, video_id=video_id)
    return segments[-1].index + 1 if segments else 0


def store_live_segment(
    *,
    session: Session,
    video_id: str,
    start_s: float,
    end_s: float,
    frames: int,
    timings: Mapping[str, float],
    gap_s: float | None,
) -> tuple[str, int]:
    """Append the segment and move it to `extracting` (its frames are stored); with `gap_s`,
    record the hole before it (`gap_before_s` on it, `gaps` and `gap_s` on the video).
    Returns its id and index."""
    segment_id = append_segment(session=session, video_id=video_id, start_s=start_s, end_s=end_s)
    stored = get_segment(session=session, segment_id=segment_id)
    assert stored is not None  # just added
    changes = dict(timings)
    if gap_s is not None:
        changes["gap_before_s"] = gap_s
        record_gap(session=session, video_id=video_id, gap_s=gap_s)
    finish_segment(
        session=session,
        segment_id=segment_id,
        changes=StageUpdate(
            VideoStatus.EXTRACTING, timings=changes, frames=frames, reset_flags=True
        ),
        from_statuses=[VideoStatus.PENDING],
    )
    return segment_id, int(stored.index)


def record_gap(*, session: Session, video_id: str, gap_s: float) -> None:
    """One more gap of `gap_s` seconds in the live video's timings (`gaps`, `gap_s`)."""
    video = repo.get_video(session=session, video_id=video_id)
    timings = {} if video is None else dict(video.timings or {})
    repo.finish_stage(
        session=session,
        video_id=video_id,
        changes=StageUpdate(
            VideoStatus.LIVE,
            timings={
                "gaps": float(timings.get("gaps", 0)) + 1,
                "gap_s": float(timings.get("gap_s", 0)) + gap_s,
            },
        ),
        from_statuses=[VideoStatus.LIVE],
    )


def end_live_video(*, session: Session, video_id: str, linker: PersonLinker) -> None:
    """The source ended: the video leaves `live` and is aggregated if every segment is final
    (else its last segment to finish does it); a video without a segment fails."""
    if not get_segments(session=session, video_id=video_id):
        repo.transition_video(
            session=session,
            video_id=video_id,
            to_status=VideoStatus.FAILED,
            from_statuses=[VideoStatus.LIVE],
            error=NO_SEGMENT,
        )
        return
    repo.transition_video(
        session=session,
        video_id=video_id,
        to_status=VideoStatus.EXTRACTING,
        from_statuses=[VideoStatus.LIVE],
    )
    video = repo.get_video(session=session, video_id=video_id)
    assert video is not None and video.model_version is not None  # pinned at registration
    repo.aggregate_video(
        session=session, video_id=video_id, model_version=video.model_version, linker=linker
    )


def epoch(moment: datetime) -> float:
    """Seconds since the epoch of a stored time (naive: UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
