"""A video over time: its segments × persons as rows (`results --timeline`) and as a plot
(`oceanstream plot`), both from the stored result rows (`workers.services.results`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.plots.timeline import (
    PersonPoint,
    PersonSeries,
    SegmentSpan,
    TimelinePlotData,
    plot_timeline,
)
from core.traits import TRAITS
from workers.services.errors import UsageError
from workers.services.results import video_result

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from db.repository.results import ResultRow

__all__ = ["TIMELINE_FIELDS", "plot_data", "plot_video", "timeline_rows"]

#: The keys of one timeline row, in order (`results --timeline --format json`).
TIMELINE_FIELDS = (
    "video",
    "video_id",
    "segment",
    "start_s",
    "end_s",
    "status",
    "person",
    "traits",
    "faces_found",
    "error",
)


def timeline_rows(rows: Iterable[ResultRow]) -> list[dict[str, Any]]:
    """One row per segment and person of each result, by segment, then person in it.

    A segment without persons (no face, failed, not yet run) is one row with `person` and
    `traits` None and the segment's own face count; `traits` is also None for a person
    without a prediction from the result's model. Results without segments add no rows.
    """
    timeline: list[dict[str, Any]] = []
    for row in rows:
        for segment in row.segments:
            base = {
                "video": row.video,
                "video_id": row.video_id,
                "segment": segment.index,
                "start_s": segment.start_s,
                "end_s": segment.end_s,
                "status": segment.status,
            }
            if not segment.persons:
                timeline.append(
                    {
                        **base,
                        "person": None,
                        "traits": None,
                        "faces_found": segment.faces_found,
                        "error": segment.error,
                    }
                )
            for person in segment.persons:
                timeline.append(
                    {
                        **base,
                        "person": person.person,
                        "traits": None if person.traits is None else dict(person.traits),
                        "faces_found": person.faces_found,
                        "error": segment.error,
                    }
                )
    return timeline


def plot_data(row: ResultRow) -> TimelinePlotData:
    """What `core.plots.timeline` draws for one stored result."""
    points: dict[int, list[PersonPoint]] = {}
    trained: set[bool] = set()
    for segment in row.segments:
        for person in segment.persons:
            if person.traits is None or person.person is None:
                continue
            points.setdefault(person.person, []).append(
                PersonPoint(
                    segment.index,
                    segment.start_s,
                    segment.end_s,
                    tuple(person.traits[t] for t in TRAITS),
                )
            )
            if person.model_trained is not None:
                trained.add(person.model_trained)
    aggregates = {person.person: person for person in row.persons}
    series = []
    for number in sorted(set(points) | set(aggregates)):
        aggregate = aggregates.get(number)
        series.append(
            PersonSeries(
                person=number,
                points=tuple(points.get(number, ())),
                scores=None if aggregate is None else tuple(aggregate.traits[t] for t in TRAITS),
                spread=None if aggregate is None else tuple(aggregate.spread[t] for t in TRAITS),
                first_s=None if aggregate is None else aggregate.first_s,
                last_s=None if aggregate is None else aggregate.last_s,
                main=aggregate is not None and aggregate.main,
            )
        )
    if row.model_trained is not None:
        trained.add(row.model_trained)
    version = row.details_version or "no model yet"
    return TimelinePlotData(
        title=f"{row.video} ({version}, {row.status})",
        segments=tuple(SegmentSpan(s.index, s.start_s, s.end_s, s.status) for s in row.segments),
        persons=tuple(series),
        trained=(False not in trained) if trained else None,
        duration_s=row.duration_s,
        shots=tuple(row.shots),
    )


def plot_video(session_factory: sessionmaker, video: str, save_path: Path) -> Path:
    """Draw `video`'s traits over time to `save_path`; raises `UsageError`."""
    row = video_result(session_factory, video)
    if not row.segments:
        raise UsageError(
            f"video {row.video!r} has no segments to plot "
            f"(status {row.status}; analysed as a whole or failed before its segments)"
        )
    return plot_timeline(plot_data(row), save_path)
