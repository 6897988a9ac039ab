"""A result's persons and segments: the per-person aggregates and the segments × persons of
each listed video, read for one model version per video in a bounded number of queries.

`load_result_details` takes every video of a result list at once: one query for the persons'
aggregates and one for the segments with their persons and predictions (per chunk of
`CHUNK` videos), never one per video. A video without segment rows (analysed before
segments existed, or failed before its segments were planned) has no details.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.traits import TRAITS
from db.models import Person, Segment, SegmentPerson, SegmentPrediction

#: Videos per IN list: far below SQLite's and PostgreSQL's parameter limits.
CHUNK = 500


@dataclass(frozen=True)
class PersonResult:
    """One video-level person's aggregate (`db.models.Person`) as a result shows it.

    `faces_found` is the person's face frames over its scored segments; `main` marks the
    person whose aggregate is the video's headline `traits` (most face frames).
    """

    person: int
    traits: dict[str, float]
    spread: dict[str, float]
    faces_found: int
    segments: int
    first_s: float
    last_s: float
    main: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "traits": dict(self.traits),
            "spread": dict(self.spread),
            "faces_found": self.faces_found,
            "segments": self.segments,
            "first_s": self.first_s,
            "last_s": self.last_s,
        }


@dataclass(frozen=True)
class SegmentPersonResult:
    """One person found in one segment; `person` is the video-level number (None until the
    video is aggregated), `traits` None without a prediction from the result's model."""

    person: int | None
    traits: dict[str, float] | None
    faces_found: int
    index: int  # place in the segment, most face frames first
    prediction_id: int | None = None
    model_trained: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "person": self.person,
            "traits": None if self.traits is None else dict(self.traits),
            "faces_found": self.faces_found,
        }


@dataclass(frozen=True)
class SegmentResult:
    """One segment of a video with its persons; `faces_found` is the segment's face frames
    (None until its faces stage ran)."""

    index: int
    start_s: float
    end_s: float
    status: str
    error: str | None
    persons: tuple[SegmentPersonResult, ...] = ()
    faces_found: int | None = None
    # Video times at which a new shot is first seen in the segment (`core.persons.shots`).
    shots: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "status": self.status,
            "error": self.error,
            "persons": [person.to_dict() for person in self.persons],
            "shots": list(self.shots),
        }


@dataclass(frozen=True)
class ResultDetails:
    persons: tuple[PersonResult, ...] = ()
    segments: tuple[SegmentResult, ...] = ()


NO_DETAILS = ResultDetails()


def load_result_details(
    *, session: Session, versions: Mapping[str, str | None]
) -> dict[str, ResultDetails]:
    """Video id -> its persons and segments, read for the model version given for it.

    A version of None (nothing predicted or pinned yet) still lists the segments and the
    persons found in them, without traits. Videos without segments are left out.
    """
    details: dict[str, ResultDetails] = {}
    for chunk in _chunks(list(versions)):
        wanted = {video_id: versions[video_id] for video_id in chunk}
        persons = _persons(session, wanted)
        for video_id, segments in _segments(session, wanted).items():
            details[video_id] = ResultDetails(tuple(persons.get(video_id, ())), segments)
    return details


def _chunks(video_ids: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(video_ids), CHUNK):
        yield video_ids[start : start + CHUNK]


def _persons(session: Session, wanted: Mapping[str, str | None]) -> dict[str, list[PersonResult]]:
    versions = {version for version in wanted.values() if version is not None}
    if not versions:
        return {}
    stmt = (
        select(Person)
        .where(Person.video_id.in_(list(wanted)), Person.model_version.in_(sorted(versions)))
        .order_by(Person.video_id, Person.person)
    )
    found: dict[str, list[PersonResult]] = {}
    for person in session.scalars(stmt):
        if person.model_version != wanted[person.video_id]:
            continue
        found.setdefault(person.video_id, []).append(
            PersonResult(
                person=person.person,
                traits=person.traits,
                spread=person.spreads,
                faces_found=int(person.face_frames),
                segments=int(person.segments),
                first_s=float(person.first_s),
                last_s=float(person.last_s),
                main=bool(person.main),
            )
        )
    return found


def _segments(
    session: Session, wanted: Mapping[str, str | None]
) -> dict[str, tuple[SegmentResult, ...]]:
    versions = sorted({version for version in wanted.values() if version is not None})
    stmt = (
        select(
            Segment.video_id,
            Segment.id.label("segment_id"),
            Segment.index,
            Segment.start_s,
            Segment.end_s,
            Segment.status,
            Segment.error,
            Segment.faces_found,
            Segment.shots,
            SegmentPerson.id.label("segment_person_id"),
            SegmentPerson.index.label("person_index"),
            SegmentPerson.person,
            SegmentPerson.face_frames,
            SegmentPrediction.id.label("prediction_id"),
            SegmentPrediction.model_version,
            SegmentPrediction.model_trained,
            *(getattr(SegmentPrediction, name) for name in TRAITS),
        )
        .outerjoin(SegmentPerson, SegmentPerson.segment_id == Segment.id)
        .outerjoin(
            SegmentPrediction,
            (SegmentPrediction.segment_person_id == SegmentPerson.id)
            & SegmentPrediction.model_version.in_(versions),
        )
        .where(Segment.video_id.in_(list(wanted)))
        .order_by(Segment.video_id, Segment.index, SegmentPerson.index)
    )
    rows: dict[str, dict[str, list[Any]]] = {}
    for row in session.execute(stmt):
        rows.setdefault(row.video_id, {}).setdefault(row.segment_id, []).append(row)
    return {
        video_id: tuple(_segment(group, wanted[video_id]) for group in segments.values())
        for video_id, segments in rows.items()
    }


def _segment(rows: Sequence[Any], version: str | None) -> SegmentResult:
    """A segment from its joined rows: one per (person, prediction of a listed version)."""
    first = rows[0]
    persons: dict[int, SegmentPersonResult] = {}
    for row in rows:
        if row.segment_person_id is None:
            continue
        predicted = row.prediction_id is not None and row.model_version == version
        if row.segment_person_id in persons and not predicted:
            continue  # another version's prediction of a person already listed
        persons[row.segment_person_id] = SegmentPersonResult(
            person=row.person,
            traits={name: float(getattr(row, name)) for name in TRAITS} if predicted else None,
            faces_found=int(row.face_frames),
            index=int(row.person_index),
            prediction_id=int(row.prediction_id) if predicted else None,
            model_trained=bool(row.model_trained) if predicted else None,
        )
    return SegmentResult(
        index=int(first.index),
        start_s=float(first.start_s),
        end_s=float(first.end_s),
        status=str(first.status),
        error=first.error,
        persons=tuple(sorted(persons.values(), key=lambda p: p.index)),
        faces_found=first.faces_found,
        shots=tuple(float(t) for t in first.shots or ()),
    )
