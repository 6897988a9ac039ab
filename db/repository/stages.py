"""Per-video bookkeeping of the pipeline stages: what they measured, and their coordination.

The faces and flow stages of one video run at the same time on different workers, so every
read-modify-write here locks the row first (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's
write lock, taken at `BEGIN IMMEDIATE`, does the same) and no update is lost.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.status import VideoStatus
from db.models import FEATURE_STAGES, VIDEO_STATUSES, ModelVersion, Segment, Video
from db.repository._common import FETCH, NotFoundError
from db.repository.videos import check_status
from db.types import utcnow

#: The keys of `core.video.probe.VideoInfo.to_dict()` that `record_probe` stores, with their types.
PROBE_FIELDS: dict[str, type] = {
    "fps": float,
    "frame_count": int,
    "duration_s": float,
    "width": int,
    "height": int,
}


@dataclass
class StageUpdate:
    """Everything one stage writes to its video when it finishes, applied by `finish_stage`.

    `status` is where the video moves (with `error`, which replaces the stored one). With
    `ready`, a feature stage ("faces" or "flow") sets its flag and the video moves to `status`
    only if the other flag is already set. Counts and probe fields left as None keep their
    stored values; `timings` are merged into the stored ones.
    """

    status: VideoStatus
    error: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    probe: Mapping[str, Any] | None = None
    frames: int | None = None
    faces_found: int | None = None
    ready: str | None = None
    reset_flags: bool = False


def finish_stage(
    *,
    session: Session,
    video_id: str,
    changes: StageUpdate,
    from_statuses: Collection[str] | None,
) -> bool:
    """Apply `changes` in one UPDATE if the video is in one of `from_statuses` (any, when
    None); True if the video moved to `changes.status`.

    The row is locked first (`SELECT ... FOR UPDATE`; SQLite's write lock does the same), so
    the merged timings and the other stage's flag are read as they are now: of faces and
    flow finishing at once, exactly one sees both flags set and moves the video, and its
    caller alone enqueues inference. A video found elsewhere (a duplicate delivery finished
    it), or a feature stage whose flag is already set, is left untouched and gives False.
    """
    return guarded_finish(session, Video, video_id, changes, from_statuses)


def guarded_finish(
    session: Session,
    table: type[Video] | type[Segment],
    row_id: str,
    changes: StageUpdate,
    from_statuses: Collection[str] | None,
    extra: Mapping[str, Any] | None = None,
) -> bool:
    """`finish_stage` for a row of `table` (a video or a segment); `extra` adds columns.

    The row is locked first (`SELECT ... FOR UPDATE`; SQLite's write lock does the same), so
    the merged timings and the other feature stage's flag are read as they are now.
    """
    check_status(changes.status)
    allowed = list(VIDEO_STATUSES if from_statuses is None else from_statuses)
    for status in allowed:
        check_status(status)
    row = session.execute(
        select(table.status, table.timings, table.faces_ready, table.flow_ready)
        .where(table.id == row_id)
        .with_for_update()
    ).first()
    if row is None or row.status not in allowed:
        return False
    values = {**stage_values(row.timings, changes), **(extra or {})}
    moves = True
    if changes.ready is not None:
        if changes.ready not in FEATURE_STAGES:
            raise ValueError(f"ready must be one of {FEATURE_STAGES}, got {changes.ready!r}")
        own, other = "faces_ready", "flow_ready"
        if changes.ready == "flow":
            own, other = other, own
        if getattr(row, own):
            return False
        values[own] = True
        moves = bool(getattr(row, other))
    if moves:
        values.update(status=str(changes.status), error=changes.error)
    stmt = (
        update(table)
        .where(table.id == row_id, table.status.in_(allowed))
        .values({**values, "updated_at": utcnow()})
        .returning(table.id)
    )
    return session.execute(stmt, execution_options=FETCH).first() is not None and moves


def stage_values(current_timings: Mapping[str, Any] | None, changes: StageUpdate) -> dict[str, Any]:
    timings = {**(current_timings or {}), **checked_timings(changes.timings)}
    values: dict[str, Any] = {"timings": timings}
    if changes.probe is not None:
        values.update(_probe_values(changes.probe))
    if changes.frames is not None:
        values["frames"] = int(changes.frames)
    if changes.faces_found is not None:
        values["faces_found"] = int(changes.faces_found)
    if changes.reset_flags:
        values.update(faces_ready=False, flow_ready=False)
    return values


def set_storage_uri(
    *, session: Session, video_id: str, uri: str, stamp: dict[str, Any] | None = None
) -> None:
    """Store where the video's file lives in shared storage, and its stamp as stored there."""
    _update_video(session, video_id, {"storage_uri": uri, "storage_stamp": stamp})


def touch_video(*, session: Session, video_id: str) -> None:
    """Bump `updated_at`, so that `find_stuck_videos` waits a full deadline again."""
    _update_video(session, video_id, {})


def count_delivery(*, session: Session, video_id: str, stage: str) -> int:
    """Count one more start of `stage` for the video; returns the new count.

    Called when a worker takes the video into the stage (a duplicate message that finds the
    stage's work done is not a start), so a stage can give up on a message that kills its
    worker every time (redelivered forever under late acknowledgement). Each stage has its
    own count in `deliveries`; `attempts` is the total of every stage's starts.
    """
    current = _locked(session, video_id, Video.deliveries)
    counts = dict(current or {})
    counts[stage] = int(counts.get(stage, 0)) + 1
    _update_video(session, video_id, {"deliveries": counts, "attempts": Video.attempts + 1})
    return counts[stage]


def release_delivery(*, session: Session, video_id: str, stage: str) -> int:
    """Take back one start of `stage` (never below 0); returns the count left.

    For a start that ended in an outage (storage, database, broker) and is retried: the
    count is there to stop a message that kills its worker, and an outage of some minutes
    must not use it up. `attempts` keeps the start. A missing video raises `NotFoundError`.
    """
    current = _locked(session, video_id, Video.deliveries)
    counts = dict(current or {})
    counts[stage] = max(0, int(counts.get(stage, 0)) - 1)
    _update_video(session, video_id, {"deliveries": counts})
    return counts[stage]


def pin_model_version(
    *, session: Session, video_id: str, version: str, replace: bool = False
) -> str:
    """Fix the model version all of the video's stages use; returns the pinned version.

    The first pin wins (two racing ingests may see different active versions), so callers
    should use the returned value. `replace=True` re-pins, for re-running a video with
    another model.
    """
    if session.get(ModelVersion, version) is None:
        raise NotFoundError(f"no model version {version!r}; call ensure_model_version first")
    stmt = update(Video).where(Video.id == video_id)
    if not replace:
        stmt = stmt.where(Video.model_version.is_(None))
    session.execute(
        stmt.values(model_version=version, updated_at=utcnow()), execution_options=FETCH
    )
    pinned = session.execute(select(Video.model_version).where(Video.id == video_id)).first()
    if pinned is None:
        raise NotFoundError(f"no video with id {video_id!r}")
    return str(pinned[0])


def _locked(session: Session, video_id: str, column: Any) -> Any:
    row = session.execute(select(column).where(Video.id == video_id).with_for_update()).first()
    if row is None:
        raise NotFoundError(f"no video with id {video_id!r}")
    return row[0]


def _update_video(session: Session, video_id: str, values: dict[str, Any]) -> None:
    stmt = (
        update(Video)
        .where(Video.id == video_id)
        .values({**values, "updated_at": utcnow()})
        .returning(Video.id)
    )
    if session.execute(stmt, execution_options=FETCH).first() is None:
        raise NotFoundError(f"no video with id {video_id!r}")


def _probe_values(info: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: None if info[key] is None else cast(info[key])
        for key, cast in PROBE_FIELDS.items()
        if key in info
    }


def checked_timings(timings: Mapping[str, float]) -> dict[str, float]:
    """Stage name -> seconds, each checked finite and >= 0."""
    clean: dict[str, float] = {}
    for stage, seconds in timings.items():
        value = float(seconds)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"timing for {stage!r} must be finite and >= 0, got {seconds!r}")
        clean[str(stage)] = value
    return clean
