"""A video's result from its segments: persons linked across segments, their aggregates, the
video's headline prediction and its final status, computed exactly once.

Exactly once: `aggregate_video` locks the video row (`SELECT ... FOR UPDATE`; SQLite's write
lock, taken at `BEGIN IMMEDIATE`, does the same) and acts only when every segment is final and
the video is not. Called in the same transaction as the `finish_segment` that made a segment
final, of two last segments finishing at once the second to take the lock sees the first's
commit and aggregates, the first sees a segment still running and does nothing; a redelivered
call finds the video final and does nothing.

The rules themselves (a person's aggregate, the main person, the final status) are pure and live
in `core.persons.aggregates`; `PersonAggregate` is re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from core.persons.aggregates import (
    PersonAggregate,
    ScoredSegment,
    aggregate_person,
    decide_status,
    mark_main,
)
from core.persons.person_links import PersonLinker, PersonSummary, link_video
from core.status import FINAL_STATUSES, VideoStatus
from core.traits import TRAITS
from db.models import ModelVersion, Person, Segment, SegmentPerson, SegmentPrediction, Video
from db.repository._common import FETCH, NotFoundError
from db.repository.predictions import save_prediction
from db.repository.segment_persons import load_segment_attention
from db.types import utcnow

__all__ = ["AggregateOutcome", "PersonAggregate", "aggregate_video", "number_live_persons"]


@dataclass(frozen=True)
class AggregateOutcome:
    """What `aggregate_video` decided: the video's final status, its persons, the main one."""

    status: VideoStatus
    error: str | None
    persons: tuple[PersonAggregate, ...]
    main: int | None


def aggregate_video(
    *, session: Session, video_id: str, model_version: str, linker: PersonLinker
) -> AggregateOutcome | None:
    """Finish the video from its segments, once; None when it is not time (or already done).

    With the video row locked, and only if the video is not final and has segments that all
    are: number the persons across segments with `linker` (in segment order) and store the
    numbers, store one aggregate per scored person, store the main person's aggregate as the
    video's `predictions` row (with the attention of its segment with most face frames), and
    move the video to its final status. Decisions: `done` when some segment has a
    prediction (failed segments listed in the error), `no_face` when every segment found no
    face, otherwise `failed` (with every failed segment listed), since a failed segment may
    have held a face.
    """
    video = session.execute(
        select(Video.status).where(Video.id == video_id).with_for_update()
    ).first()
    if video is None or VideoStatus(video.status).is_final:
        return None
    if video.status == VideoStatus.LIVE:
        # A watched live source: more segments are on their way. The watcher moves the video
        # on and aggregates when its source ends (`workers.services.watch`).
        return None
    # Every segment's finish asks; until the last, one row answers (a 3-hour video has 720
    # segments: loading them all on each finish would read 720 x 720 rows).
    unfinished = session.execute(
        select(Segment.id)
        .where(
            Segment.video_id == video_id,
            Segment.status.not_in([status.value for status in FINAL_STATUSES]),
        )
        .limit(1)
    ).first()
    if unfinished is not None:
        return None
    segments = list(
        session.execute(
            select(Segment).where(Segment.video_id == video_id).order_by(Segment.index)
        ).scalars()
    )
    if not segments or any(VideoStatus(s.status) not in FINAL_STATUSES for s in segments):
        return None
    rows = _segment_persons(session, [s.id for s in segments], model_version)
    numbers = _number(segments, rows, linker)
    if numbers:
        session.execute(
            update(SegmentPerson),
            [{"id": row_id, "person": person} for row_id, person in numbers.items()],
        )
    scored = _scored_by_person(segments, rows, numbers)
    aggregates = mark_main([aggregate_person(person, scored[person]) for person in sorted(scored)])
    main = next((a for a in aggregates if a.main), None)
    _store_persons(session, video_id, model_version, aggregates)
    if main is not None:
        _store_headline(session, video_id, model_version, main, scored[main.person])
    status, error = decide_status(segments, scored=bool(scored), model_version=model_version)
    _finish_video(session, video_id, segments, status, error)
    return AggregateOutcome(status, error, tuple(aggregates), None if main is None else main.person)


def number_live_persons(
    *, session: Session, video_id: str, model_version: str, linker: PersonLinker
) -> int:
    """Number the persons of a `live` video's segments so far; returns the segments numbered.

    Persons are linked in segment order, so only the run of final segments from the first one
    is numbered; numbers given here are those `aggregate_video` gives the same segments when
    the video ends (with a linker that, like continuity, looks only backwards). So that a
    live video's timeline and plot show persons while it is watched. A video not `live`
    is left alone.
    """
    video = session.execute(
        select(Video.status).where(Video.id == video_id).with_for_update()
    ).first()
    if video is None or video.status != VideoStatus.LIVE:
        return 0
    segments = list(
        session.execute(
            select(Segment).where(Segment.video_id == video_id).order_by(Segment.index)
        ).scalars()
    )
    done = 0
    while done < len(segments) and VideoStatus(segments[done].status) in FINAL_STATUSES:
        done += 1
    segments = segments[:done]
    if not segments:
        return 0
    rows = _segment_persons(session, [s.id for s in segments], model_version)
    numbers = _number(segments, rows, linker)
    if numbers:
        session.execute(
            update(SegmentPerson),
            [{"id": row_id, "person": person} for row_id, person in numbers.items()],
        )
    return done


def _segment_persons(session: Session, segment_ids: list[str], model_version: str) -> list[Any]:
    stmt = (
        select(
            SegmentPerson.id,
            SegmentPerson.segment_id,
            SegmentPerson.face_frames,
            SegmentPerson.first_box,
            SegmentPerson.last_box,
            SegmentPerson.embedding,
            SegmentPerson.opens_segment,
            SegmentPerson.closes_segment,
            SegmentPrediction.id.label("prediction_id"),
            *(getattr(SegmentPrediction, name) for name in TRAITS),
        )
        .outerjoin(
            SegmentPrediction,
            (SegmentPrediction.segment_person_id == SegmentPerson.id)
            & (SegmentPrediction.model_version == model_version),
        )
        .where(SegmentPerson.segment_id.in_(segment_ids))
        .order_by(SegmentPerson.index)
    )
    return list(session.execute(stmt))


def _number(
    segments: Sequence[Segment], rows: Sequence[Any], linker: PersonLinker
) -> dict[int, int]:
    """Segment-person id -> video-level person number."""
    by_segment: dict[str, list[Any]] = {s.id: [] for s in segments}
    for row in rows:
        by_segment[row.segment_id].append(row)
    ordered = [by_segment[s.id] for s in segments]
    summaries = [[_summary(row) for row in persons] for persons in ordered]
    numbers = link_video(summaries, linker)
    return {
        row.id: person
        for persons, ids in zip(ordered, numbers, strict=True)
        for row, person in zip(persons, ids, strict=True)
    }


def _summary(row: Any) -> PersonSummary | None:
    if row.first_box is None or row.last_box is None:
        return None
    return PersonSummary(
        first_box=np.asarray(row.first_box, np.float64),
        last_box=np.asarray(row.last_box, np.float64),
        face_frames=int(row.face_frames),
        embedding=None if row.embedding is None else np.frombuffer(row.embedding, np.float32),
        opens_segment=bool(row.opens_segment),
        closes_segment=bool(row.closes_segment),
    )


def _scored_by_person(
    segments: Sequence[Segment], rows: Sequence[Any], numbers: dict[int, int]
) -> dict[int, list[ScoredSegment]]:
    by_id = {s.id: s for s in segments}
    scored: dict[int, list[ScoredSegment]] = {}
    for row in rows:
        if row.prediction_id is None:
            continue
        segment = by_id[row.segment_id]
        scored.setdefault(numbers[row.id], []).append(
            ScoredSegment(
                segment=segment.index,
                start_s=float(segment.start_s),
                end_s=float(segment.end_s),
                face_frames=int(row.face_frames),
                scores=tuple(float(getattr(row, name)) for name in TRAITS),
                prediction_id=int(row.prediction_id),
            )
        )
    for results in scored.values():
        results.sort(key=lambda s: s.segment)
    return scored


def _store_persons(
    session: Session, video_id: str, model_version: str, aggregates: Sequence[PersonAggregate]
) -> None:
    # A video explicitly re-run with the same model replaces its earlier aggregates.
    session.execute(
        delete(Person).where(Person.video_id == video_id, Person.model_version == model_version)
    )
    if not aggregates:
        return
    trained = _trained(session, model_version)
    session.execute(
        insert(Person),
        [
            {
                "video_id": video_id,
                "person": a.person,
                "model_version": model_version,
                **a.traits,
                "spread": list(a.spread),
                "face_frames": a.face_frames,
                "segments": a.segments,
                "first_s": a.first_s,
                "last_s": a.last_s,
                "main": a.main,
                "model_trained": trained,
            }
            for a in aggregates
        ],
    )


def _store_headline(
    session: Session,
    video_id: str,
    model_version: str,
    main: PersonAggregate,
    scored: Sequence[ScoredSegment],
) -> None:
    """The main person's aggregate as the video's prediction, with the attention of its
    segment with most face frames (ties: the earliest)."""
    best = min(scored, key=lambda s: (-s.face_frames, s.segment))
    attention = load_segment_attention(session=session, segment_prediction_id=best.prediction_id)
    save_prediction(
        session=session,
        video_id=video_id,
        model_version=model_version,
        scores=main.scores,
        attention=attention,
        model_trained=_trained(session, model_version),
    )


def _trained(session: Session, model_version: str) -> bool:
    stored = session.get(ModelVersion, model_version)
    if stored is None:
        raise NotFoundError(f"no model version {model_version!r}")
    return bool(stored.trained)


def _finish_video(
    session: Session,
    video_id: str,
    segments: Sequence[Segment],
    status: VideoStatus,
    error: str | None,
) -> None:
    values: dict[str, Any] = {"status": status.value, "error": error, "updated_at": utcnow()}
    for column in ("frames", "faces_found"):
        counts = [getattr(s, column) for s in segments if getattr(s, column) is not None]
        if counts:
            values[column] = sum(counts)
    session.execute(
        update(Video)
        .where(Video.id == video_id, Video.status.not_in([s.value for s in FINAL_STATUSES]))
        .values(values),
        execution_options=FETCH,
    )
