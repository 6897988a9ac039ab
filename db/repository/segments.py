"""Segments of a video, the persons found in each, their predictions, and the timeline read.

A video is analysed as windows (`core.segments`), each holding persons (`core.tracks`). Every
write here is safe under redelivery: segments and persons are inserted if absent, keyed by
their index; predictions are upserts; a segment's state moves with one guarded UPDATE, like
a video's (`finish_stage`). The video-level aggregate is `db.repository.aggregates`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core import segments as plan
from core import tracks
from core.person_links import PersonSummary
from core.status import VideoStatus
from core.traits import TRAITS
from db.attention import decode_attention, encode_attention
from db.models import (
    FEATURE_STAGES,
    VIDEO_STATUSES,
    ModelVersion,
    Person,
    Segment,
    SegmentPerson,
    SegmentPrediction,
    Video,
    new_id,
)
from db.repository._common import FETCH, NotFoundError, dialect_insert
from db.repository.predictions import checked_scores
from db.repository.stages import StageUpdate, stage_values
from db.repository.videos import check_status
from db.types import utcnow


@dataclass
class SegmentUpdate(StageUpdate):
    """A `StageUpdate` for a segment, which also counts the persons its faces stage found.

    A segment has no probe data (the probe is the video's): `probe` must stay None.
    """

    persons: int | None = None


@dataclass(frozen=True)
class SegmentPersonRecord:
    """One person of a segment as `save_segment_persons` stores it.

    Boxes are x, y, w, h in frame pixels (first and last sampled frame the face was seen
    in, as `PersonSummary`); `region` is the flow region (`core.tracks.Region.as_dict()`).
    """

    index: int
    face_frames: int
    first_box: Sequence[float]
    last_box: Sequence[float]
    region: Mapping[str, int] | None = None
    # The identity embedding (`core.identity.identity_embedding`), when one was computed.
    embedding: np.ndarray | None = None

    @classmethod
    def of(
        cls, index: int, person: tracks.Person, embedding: np.ndarray | None = None
    ) -> SegmentPersonRecord:
        """The record of the segment's `index`-th person (`core.tracks` order)."""
        summary = PersonSummary.of(person)
        return cls(
            index=index,
            face_frames=summary.face_frames,
            first_box=[float(v) for v in summary.first_box],
            last_box=[float(v) for v in summary.last_box],
            region=person.region.as_dict(),
            embedding=embedding,
        )


@dataclass(frozen=True)
class TimelineRow:
    """One (segment, person) of a video; a segment without persons is one row with none.

    `person` is the video-level person (None until the video is aggregated), `traits` the
    person's scores in that segment (None without a prediction from the model version asked
    about), `faces_found` the person's face frames, or the segment's for a row without one.
    """

    segment: int
    start_s: float
    end_s: float
    status: str
    error: str | None
    person: int | None
    person_index: int | None
    traits: dict[str, float] | None
    faces_found: int | None
    prediction_id: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "status": self.status,
            "error": self.error,
            "person": self.person,
            "traits": None if self.traits is None else dict(self.traits),
            "faces_found": self.faces_found,
        }


def create_segments(
    *, session: Session, video_id: str, segments: Sequence[plan.Segment]
) -> list[str]:
    """Store the video's segment plan; returns the segment ids in index order.

    Idempotent and the first plan wins: the video row is locked, and a video that already
    has segments keeps them (a redelivered ingest, or one planned with other settings, gets
    the stored ids back). Inserts are also `ON CONFLICT DO NOTHING` on (video, index).
    """
    _check_plan(segments)
    locked = session.execute(select(Video.id).where(Video.id == video_id).with_for_update())
    if locked.first() is None:
        raise NotFoundError(f"no video with id {video_id!r}")
    stored = _segment_ids(session, video_id)
    if stored:
        return stored
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "video_id": video_id,
            "index": segment.index,
            "start_s": float(segment.start_s),
            "end_s": float(segment.end_s),
            "status": VideoStatus.PENDING.value,
            "deliveries": {},
            "timings": {},
            "created_at": now,
            "updated_at": now,
        }
        for segment in segments
    ]
    insert = dialect_insert(session, Segment).on_conflict_do_nothing(
        index_elements=[Segment.video_id, Segment.index]
    )
    session.execute(insert, rows)
    return _segment_ids(session, video_id)


def get_segments(*, session: Session, video_id: str) -> list[Segment]:
    """The video's segments in index order (none for a video not yet planned)."""
    return list(
        session.scalars(select(Segment).where(Segment.video_id == video_id).order_by(Segment.index))
    )


def get_segment(*, session: Session, segment_id: str) -> Segment | None:
    """The segment with `segment_id`, or None."""
    return session.get(Segment, segment_id)


def finish_segment(
    *,
    session: Session,
    segment_id: str,
    changes: StageUpdate,
    from_statuses: Collection[str] | None,
) -> bool:
    """Apply `changes` to a segment in one guarded UPDATE, as `finish_stage` does to a video.

    True if the segment moved to `changes.status`. The row is locked first, so of faces and
    flow finishing at once exactly one sees both flags set (`changes.ready`) and moves the
    segment on; a segment found in another status, or a feature flag already set, is left
    untouched and gives False. `SegmentUpdate.persons` stores the persons count.
    """
    check_status(changes.status)
    if changes.probe is not None:
        raise ValueError("a segment has no probe data; store the probe on its video")
    allowed = list(VIDEO_STATUSES if from_statuses is None else from_statuses)
    for status in allowed:
        check_status(status)
    row = session.execute(
        select(Segment.status, Segment.timings, Segment.faces_ready, Segment.flow_ready)
        .where(Segment.id == segment_id)
        .with_for_update()
    ).first()
    if row is None or row.status not in allowed:
        return False
    values = stage_values(row.timings, changes)
    if isinstance(changes, SegmentUpdate) and changes.persons is not None:
        values["persons"] = _non_negative("persons", changes.persons)
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
        update(Segment)
        .where(Segment.id == segment_id, Segment.status.in_(allowed))
        .values({**values, "updated_at": utcnow()})
        .returning(Segment.id)
    )
    return session.execute(stmt, execution_options=FETCH).first() is not None and moves


def count_segment_delivery(*, session: Session, segment_id: str, stage: str) -> int:
    """Count one more start of `stage` for the segment; returns the new count (see
    `count_delivery`, its video-level twin)."""
    return _bump_delivery(session, segment_id, stage, +1)


def release_segment_delivery(*, session: Session, segment_id: str, stage: str) -> int:
    """Take back one start of `stage` (never below 0) after an outage; returns the count."""
    return _bump_delivery(session, segment_id, stage, -1)


def save_segment_persons(
    *, session: Session, segment_id: str, persons: Sequence[SegmentPersonRecord]
) -> list[int]:
    """Store the persons found in a segment; returns all its segment-person ids by index.

    Idempotent: `ON CONFLICT DO NOTHING` on (segment, index), so a redelivered faces stage
    keeps the rows (and the predictions hanging off them) that the first one stored.
    """
    if session.get(Segment, segment_id) is None:
        raise NotFoundError(f"no segment with id {segment_id!r}")
    rows = [_person_row(segment_id, record) for record in persons]
    if len({row["index"] for row in rows}) != len(rows):
        raise ValueError(f"person indexes must be distinct, got {[r['index'] for r in rows]}")
    if rows:
        insert = dialect_insert(session, SegmentPerson).on_conflict_do_nothing(
            index_elements=[SegmentPerson.segment_id, SegmentPerson.index]
        )
        session.execute(insert, rows)
    stmt = (
        select(SegmentPerson.id)
        .where(SegmentPerson.segment_id == segment_id)
        .order_by(SegmentPerson.index)
    )
    return list(session.scalars(stmt))


def save_segment_prediction(
    *,
    session: Session,
    segment_person_id: int,
    model_version: str,
    scores: Sequence[float],
    model_trained: bool,
    attention: np.ndarray | None,
) -> SegmentPrediction:
    """Store one (segment, person)'s OCEAN `scores` (`TRAITS` order) and attention map.

    An upsert on (segment person, model version), like `save_prediction`: a redelivered
    inference updates the row. `attention=None` keeps a stored map; `model_trained` must
    agree with the model version.
    """
    values: dict[str, Any] = checked_scores(scores)
    check_model_trained(session, model_version, model_trained)
    if attention is not None:
        data, shape, dtype = encode_attention(attention)
        values.update(attention_data=data, attention_shape=shape, attention_dtype=dtype)
    insert = dialect_insert(session, SegmentPrediction).values(
        segment_person_id=segment_person_id,
        model_version=model_version,
        model_trained=bool(model_trained),
        created_at=utcnow(),
        **values,
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[SegmentPrediction.segment_person_id, SegmentPrediction.model_version],
        set_={name: insert.excluded[name] for name in (*values, "model_trained")},
    ).returning(SegmentPrediction)
    return session.scalars(upsert, execution_options={"populate_existing": True}).one()


def load_segment_attention(*, session: Session, segment_prediction_id: int) -> np.ndarray | None:
    """The attention map of one segment prediction ([2, heads, T, T] float32), or None."""
    row = session.execute(
        select(
            SegmentPrediction.attention_data,
            SegmentPrediction.attention_shape,
            SegmentPrediction.attention_dtype,
        ).where(SegmentPrediction.id == segment_prediction_id)
    ).first()
    if row is None or row.attention_data is None:
        return None
    return decode_attention(row.attention_data, row.attention_shape, row.attention_dtype)


def video_timeline(*, session: Session, video_id: str, model_version: str) -> list[TimelineRow]:
    """One row per segment and person of the video, by segment, then person in the segment."""
    stmt = (
        select(
            Segment.index.label("segment"),
            Segment.start_s,
            Segment.end_s,
            Segment.status,
            Segment.error,
            Segment.faces_found.label("segment_faces"),
            SegmentPerson.person,
            SegmentPerson.index.label("person_index"),
            SegmentPerson.face_frames,
            SegmentPrediction.id.label("prediction_id"),
            *(getattr(SegmentPrediction, name) for name in TRAITS),
        )
        .outerjoin(SegmentPerson, SegmentPerson.segment_id == Segment.id)
        .outerjoin(
            SegmentPrediction,
            (SegmentPrediction.segment_person_id == SegmentPerson.id)
            & (SegmentPrediction.model_version == model_version),
        )
        .where(Segment.video_id == video_id)
        .order_by(Segment.index, SegmentPerson.index)
    )
    return [_timeline_row(row) for row in session.execute(stmt)]


def video_persons(*, session: Session, video_id: str, model_version: str) -> list[Person]:
    """The video's per-person aggregates from `model_version`, by person number."""
    stmt = (
        select(Person)
        .where(Person.video_id == video_id, Person.model_version == model_version)
        .order_by(Person.person)
    )
    return list(session.scalars(stmt))


def check_model_trained(session: Session, model_version: str, model_trained: bool) -> None:
    """Refuse an unknown model version, or a `model_trained` flag that contradicts it."""
    stored = session.get(ModelVersion, model_version)
    if stored is None:
        raise NotFoundError(f"no model version {model_version!r}; call ensure_model_version first")
    if stored.trained != bool(model_trained):
        raise ValueError(
            f"model_trained={bool(model_trained)} contradicts model version {model_version!r} "
            f"(trained={stored.trained})"
        )


def _check_plan(segments: Sequence[plan.Segment]) -> None:
    indexes = [segment.index for segment in segments]
    if indexes != list(range(len(segments))) or not segments:
        raise ValueError(f"segments must be indexed 0..n-1 in order, got indexes {indexes}")
    for segment in segments:
        if not (math.isfinite(segment.start_s) and math.isfinite(segment.end_s)) or not (
            0 <= segment.start_s <= segment.end_s
        ):
            raise ValueError(f"segment {segment.index} needs 0 <= start_s <= end_s, got {segment}")


def _segment_ids(session: Session, video_id: str) -> list[str]:
    stmt = select(Segment.id).where(Segment.video_id == video_id).order_by(Segment.index)
    return list(session.scalars(stmt))


def _bump_delivery(session: Session, segment_id: str, stage: str, step: int) -> int:
    row = session.execute(
        select(Segment.deliveries).where(Segment.id == segment_id).with_for_update()
    ).first()
    if row is None:
        raise NotFoundError(f"no segment with id {segment_id!r}")
    counts = dict(row.deliveries or {})
    counts[stage] = max(0, int(counts.get(stage, 0)) + step)
    session.execute(
        update(Segment)
        .where(Segment.id == segment_id)
        .values(deliveries=counts, updated_at=utcnow()),
        execution_options=FETCH,
    )
    return counts[stage]


def _person_row(segment_id: str, record: SegmentPersonRecord) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "index": _non_negative("person index", record.index),
        "face_frames": _non_negative("face_frames", record.face_frames),
        "first_box": _box("first_box", record.first_box),
        "last_box": _box("last_box", record.last_box),
        "region": None if record.region is None else {k: int(v) for k, v in record.region.items()},
        "embedding": _embedding_bytes(record.embedding),
    }


def _embedding_bytes(embedding: np.ndarray | None) -> bytes | None:
    """An embedding as stored: float32 bytes of a finite 1-d vector."""
    if embedding is None:
        return None
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all():
        raise ValueError(f"an embedding must be a finite 1-d vector, got shape {vector.shape}")
    return vector.tobytes()


def _box(name: str, box: Sequence[float]) -> list[float]:
    values = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(-1)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be 4 finite numbers x, y, w, h, got {box!r}")
    return values


def _non_negative(name: str, value: int) -> int:
    if int(value) < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


def _timeline_row(row: Any) -> TimelineRow:
    scored = row.prediction_id is not None
    return TimelineRow(
        segment=int(row.segment),
        start_s=float(row.start_s),
        end_s=float(row.end_s),
        status=str(row.status),
        error=row.error,
        person=row.person,
        person_index=row.person_index,
        traits={name: float(getattr(row, name)) for name in TRAITS} if scored else None,
        faces_found=row.face_frames if row.person_index is not None else row.segment_faces,
        prediction_id=row.prediction_id,
    )
