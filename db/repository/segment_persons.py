"""The persons found in a segment, their predictions and attention, and the timeline read.

A segment's persons (`core.persons.tracks`) are inserted if absent, keyed by (segment, index), and
their predictions are upserts, so every write here is safe under redelivery. The segments
themselves are `db.repository.segments`; the video-level aggregate is
`db.repository.aggregates`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.persons import tracks
from core.persons.person_links import PersonSummary
from core.traits import TRAITS
from db.attention import decode_attention, encode_attention
from db.models import Person, Segment, SegmentPerson, SegmentPrediction
from db.repository._common import NotFoundError, dialect_insert
from db.repository.predictions import check_model_trained, checked_scores
from db.repository.segments import _non_negative
from db.types import utcnow


@dataclass(frozen=True)
class SegmentPersonRecord:
    """One person of a segment as `save_segment_persons` stores it.

    Boxes are x, y, w, h in frame pixels (first and last sampled frame the face was seen
    in, as `PersonSummary`); `region` is the flow region (`core.persons.regions.Region.as_dict()`).
    """

    index: int
    face_frames: int
    first_box: Sequence[float]
    last_box: Sequence[float]
    region: Mapping[str, int] | None = None
    # The identity embedding (`core.persons.identity.identity_embedding`), when one was computed.
    embedding: np.ndarray | None = None
    # Seen in the segment's first shot, and in its last (`core.persons.tracks.Person`).
    opens_segment: bool = True
    closes_segment: bool = True

    @classmethod
    def of(
        cls, index: int, person: tracks.Person, embedding: np.ndarray | None = None
    ) -> SegmentPersonRecord:
        """The record of the segment's `index`-th person (`core.persons.tracks` order)."""
        summary = PersonSummary.of(person)
        return cls(
            index=index,
            face_frames=summary.face_frames,
            first_box=[float(v) for v in summary.first_box],
            last_box=[float(v) for v in summary.last_box],
            region=person.region.as_dict(),
            embedding=embedding,
            opens_segment=person.opens_segment,
            closes_segment=person.closes_segment,
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


def _person_row(segment_id: str, record: SegmentPersonRecord) -> dict[str, Any]:
    return {
        "segment_id": segment_id,
        "index": _non_negative("person index", record.index),
        "face_frames": _non_negative("face_frames", record.face_frames),
        "first_box": _box("first_box", record.first_box),
        "last_box": _box("last_box", record.last_box),
        "region": None if record.region is None else {k: int(v) for k, v in record.region.items()},
        "embedding": _embedding_bytes(record.embedding),
        "opens_segment": bool(record.opens_segment),
        "closes_segment": bool(record.closes_segment),
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
