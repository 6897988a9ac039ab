"""Set-based writes for the inference pool: one batch of videos in a few statements.

The batcher handles tens of videos per model call; doing each video's bookkeeping with the
per-video functions would cost more database round trips than the model costs. These
functions do the same guarded work for a whole batch: rows are locked in id order (two
workers claiming overlapping batches cannot deadlock), each state change is still guarded by
the video's status, and the caller owns the transaction as everywhere else.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Integer, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from core.traits import TRAITS
from db.attention import encode_attention
from db.models import AttentionMap, ModelVersion, Prediction, Video
from db.repository._common import NotFoundError, dialect_insert
from db.repository.predictions import checked_scores
from db.repository.stages import checked_timings
from db.repository.videos import check_status
from db.types import utcnow

_VIDEOS: Table = Video.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class ClaimedVideo:
    """A video taken up by one delivery of a stage's message, as it was before the claim."""

    video_id: str
    model_version: str | None
    deliveries: int  # this stage's deliveries, this one included
    queued_since: datetime  # `updated_at` before the claim: when the video was last moved


def claim_videos(
    *, session: Session, video_ids: Collection[str], stage: str, statuses: Collection[str]
) -> list[ClaimedVideo]:
    """Lock the videos of `video_ids` that are in one of `statuses` and count a delivery each.

    The batch form of `count_delivery`: ids that are unknown or elsewhere are left out (their
    message has nothing to do). Rows are locked in id order and `updated_at` is bumped, as
    every write does, after being read.
    """
    for status in statuses:
        check_status(status)
    rows = session.execute(
        select(Video.id, Video.model_version, Video.deliveries, Video.updated_at)
        .where(Video.id.in_(sorted(set(video_ids))), Video.status.in_(list(statuses)))
        .order_by(Video.id)
        .with_for_update()
    ).all()
    if not rows:
        return []
    claims, params = [], []
    for row in rows:
        counts = dict(row.deliveries or {})
        counts[stage] = int(counts.get(stage, 0)) + 1
        params.append({"b_id": row.id, "b_deliveries": counts})
        claims.append(ClaimedVideo(row.id, row.model_version, counts[stage], row.updated_at))
    session.execute(
        update(_VIDEOS)
        .where(_VIDEOS.c.id == bindparam("b_id"))
        .values(
            deliveries=bindparam("b_deliveries"),
            attempts=_VIDEOS.c.attempts + 1,
            updated_at=utcnow(),
        ),
        params,
    )
    return claims


@dataclass
class StageOutcome:
    """What one video's inference produced: a prediction (`done`) or an error (`failed`)."""

    video_id: str
    status: str
    model_version: str | None = None
    model_trained: bool | None = None
    scores: Sequence[float] | None = None
    attention: np.ndarray | None = None
    frames: int | None = None
    faces_found: int | None = None
    error: str | None = None
    timings: Mapping[str, float] = field(default_factory=dict)


def finish_videos(
    *, session: Session, outcomes: Sequence[StageOutcome], from_statuses: Collection[str]
) -> set[str]:
    """Store each outcome and move its video, if the video is still in `from_statuses`.

    The batch form of `db.repository.outcomes.store_result`: timings merged, counts,
    prediction with its attention map (an upsert, unique per video and model version), status
    and error, for all videos in one round of statements. Returns the ids that moved; a video found
    elsewhere (a duplicate delivery finished it first) is left untouched.
    """
    if not outcomes:
        return set()
    for outcome in outcomes:
        check_status(outcome.status)
    current: dict[str, dict[str, Any] | None] = dict(
        session.execute(  # type: ignore[arg-type]
            select(Video.id, Video.timings)
            .where(
                Video.id.in_(sorted({o.video_id for o in outcomes})),
                Video.status.in_(list(from_statuses)),
            )
            .order_by(Video.id)
            .with_for_update()
        ).all()
    )
    moving = [o for o in outcomes if o.video_id in current]
    if not moving:
        return set()
    _save_predictions(session, [o for o in moving if o.status == "done"])
    now = utcnow()
    params = [
        {
            "b_id": o.video_id,
            "b_status": o.status,
            "b_error": o.error,
            "b_timings": {**(current[o.video_id] or {}), **checked_timings(o.timings)},
            "b_frames": o.frames,
            "b_faces": o.faces_found,
        }
        for o in moving
    ]
    session.execute(
        update(_VIDEOS)
        .where(_VIDEOS.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            error=bindparam("b_error"),
            timings=bindparam("b_timings"),
            # A count left as None keeps the stored one, as `finish_stage` does.
            frames=func.coalesce(bindparam("b_frames", type_=Integer), _VIDEOS.c.frames),
            faces_found=func.coalesce(bindparam("b_faces", type_=Integer), _VIDEOS.c.faces_found),
            updated_at=now,
        ),
        params,
    )
    return {o.video_id for o in moving}


def _save_predictions(session: Session, outcomes: Sequence[StageOutcome]) -> None:
    if not outcomes:
        return
    _check_versions(session, outcomes)
    rows = [
        {
            "video_id": o.video_id,
            "model_version": o.model_version,
            "model_trained": bool(o.model_trained),
            "created_at": utcnow(),
            **checked_scores(o.scores if o.scores is not None else ()),
        }
        for o in outcomes
    ]
    table = Prediction.__table__
    insert = dialect_insert(session, table)
    # One statement per batch shape, compiled once and cached; SQLAlchemy sends the rows as
    # one multi-row INSERT ("insertmanyvalues") and returns them in parameter order.
    upsert = insert.on_conflict_do_update(
        index_elements=[table.c.video_id, table.c.model_version],
        set_={name: insert.excluded[name] for name in (*TRAITS, "model_trained")},
    ).returning(table.c.id, sort_by_parameter_order=True)
    ids = list(session.scalars(upsert, rows))
    maps = []
    for prediction_id, o in zip(ids, outcomes, strict=True):
        if o.attention is None:
            continue
        data, shape, dtype = encode_attention(o.attention)
        maps.append({"prediction_id": prediction_id, "shape": shape, "dtype": dtype, "data": data})
    if maps:
        attention = AttentionMap.__table__
        insert = dialect_insert(session, attention)
        session.execute(
            insert.on_conflict_do_update(
                index_elements=[attention.c.prediction_id],
                set_={name: insert.excluded[name] for name in ("shape", "dtype", "data")},
            ),
            maps,
        )


def _check_versions(session: Session, outcomes: Sequence[StageOutcome]) -> None:
    """Every model version exists, and each prediction's trained flag agrees with it."""
    wanted = {o.model_version for o in outcomes}
    stored = dict(
        session.execute(
            select(ModelVersion.version, ModelVersion.trained).where(
                ModelVersion.version.in_([v for v in wanted if v is not None])
            )
        ).all()
    )
    for o in outcomes:
        if o.model_version not in stored:
            raise NotFoundError(
                f"no model version {o.model_version!r}; call ensure_model_version first"
            )
        if stored[o.model_version] != bool(o.model_trained):
            raise ValueError(
                f"model_trained={bool(o.model_trained)} contradicts model version "
                f"{o.model_version!r} (trained={stored[o.model_version]})"
            )
