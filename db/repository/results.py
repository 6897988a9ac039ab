"""Read side: results per video, job progress and failures."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, any_, bindparam, func, or_, select
from sqlalchemy.orm import Session

from core.traits import TRAITS
from db.models import VIDEO_STATUSES, Job, JobVideo, Prediction, Segment, Video
from db.repository.result_details import (
    NO_DETAILS,
    PersonResult,
    SegmentPersonResult,
    SegmentResult,
    load_result_details,
)

__all__ = [
    "PersonResult",
    "ResultRow",
    "SegmentPersonResult",
    "SegmentResult",
    "entry_error",
    "job_failures",
    "job_segment_counts",
    "job_status_counts",
    "name_matches",
    "query_results",
    "result_stamp",
    "video_ids_with_prefix",
    "with_details",
]


@dataclass(frozen=True)
class ResultRow:
    """One video's result, as the CLI and the JSON output present it.

    `traits` is None when the video has no prediction (failed, no face, still running).
    `created_at` is when the prediction was stored or, without one, when the video last
    changed state. `job_id` is the job asked about or, without a job filter, the latest job
    that included the video.

    `persons` (by person number) and `segments` (by index, each with its persons) are read
    for the model version of the prediction shown or, without one, the version pinned on the
    video; both are empty for a video without segment rows.
    """

    video: str
    video_id: str
    status: str
    traits: dict[str, float] | None
    faces_found: int | None
    frames: int | None
    model_version: str | None
    model_trained: bool | None
    error: str | None
    job_id: str | None
    prediction_id: int | None
    created_at: datetime
    duration_s: float | None = None
    persons: tuple[PersonResult, ...] = ()
    segments: tuple[SegmentResult, ...] = ()
    #: The model version `persons` and `segments` were read for.
    details_version: str | None = None

    @property
    def main_person(self) -> PersonResult | None:
        return next((person for person in self.persons if person.main), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON result object of the project contract (`--json`); the keys up to `error`
        are the original contract's, in its order."""
        return {
            "video": self.video,
            "video_id": self.video_id,
            "status": self.status,
            "traits": None if self.traits is None else dict(self.traits),
            "faces_found": self.faces_found,
            "frames": self.frames,
            "model_version": self.model_version,
            "model_trained": self.model_trained,
            "error": self.error,
            "duration_s": self.duration_s,
            "persons": [person.to_dict() for person in self.persons],
            "segments": [segment.to_dict() for segment in self.segments],
            "shots": self.shots,
        }

    @property
    def shots(self) -> list[float]:
        """Video times at which a new shot is first seen, over all segments (`core.persons.shots`):
        each within half a sampling interval of the cut. Cuts at a segment boundary are not
        seen (each segment compares its own samples)."""
        return [t for segment in self.segments for t in segment.shots]


def query_results(
    *,
    session: Session,
    job_id: str | None = None,
    video: str | None = None,
    video_id: str | None = None,
    model_version: str | None = None,
) -> list[ResultRow]:
    """Stored results, filtered; a row per path as given (`video` is that path).

    * `job_id`: that job's entries in submission order, including failed and no-face ones
      (with their error and no traits). Two paths with the same bytes are two rows sharing
      one video id and one analysis.
    * `video`: a full video id, or a path as given or its file name (`clips/a.mp4` matches
      `a.mp4`).
    * `video_id`: that video id only (no name matching: one index lookup).
    * `model_version`: only results made by that model version.
    * none: every (video, path given) pair, oldest video first, named by the latest job that
      gave that path, with the video's latest prediction.

    Three queries whatever the number of rows (the rows, then every listed video's persons
    and segments at once; see `db.repository.result_details`).
    """
    if model_version is not None:
        prediction_on: ColumnElement[bool] = (Prediction.video_id == Video.id) & (
            Prediction.model_version == model_version
        )
    else:
        latest = (
            select(Prediction.id)
            .where(Prediction.video_id == Video.id)
            .order_by(Prediction.created_at.desc(), Prediction.id.desc())
            .limit(1)
            .correlate(Video)
            .scalar_subquery()
        )
        prediction_on = Prediction.id == latest

    name: ColumnElement[str]
    if job_id is not None:
        stmt, name = _job_select(job_id), JobVideo.name.expression
        stmt = stmt.outerjoin(Prediction, prediction_on)
        stmt = stmt.order_by(JobVideo.position)
    else:
        stmt, name, order = _all_select()
        stmt = stmt.outerjoin(Prediction, prediction_on).order_by(*order)
    if model_version is not None:
        stmt = stmt.where(Prediction.id.is_not(None))
    if video is not None:
        stmt = stmt.where(or_(Video.id == video, name_matches(name, video)))
    if video_id is not None:
        stmt = stmt.where(Video.id == video_id)
    return with_details(session, [_to_row(row) for row in session.execute(stmt)])


def result_stamp(
    *, session: Session | Connection, video_id: str, tenant_id: str
) -> tuple[Any, ...] | None:
    """What a stored result of the tenant's video `video_id` is made of, in one row of one
    query; None when the tenant has no such video (never stored, erased, another tenant's).

    Equal stamps mean an equal result: the stamp holds the video's status and `updated_at`
    (every move of a video, its finishing and its aggregation included, sets it), its
    predictions (count, newest id and time), its job entries (count, newest job: the name a
    result shows comes from them) and its segments (count, newest change).
    """
    row = session.execute(
        result_stamp_select(), {"video_id": video_id, "tenant_id": tenant_id}
    ).first()
    return None if row is None else tuple(row)


@cache
def result_stamp_select() -> Select[Any]:
    """`result_stamp`'s statement, built once (the statement is the same for every read, only
    its parameters change)."""
    return select(*_stamp_columns()).where(
        Video.id == bindparam("video_id"), Video.tenant_id == bindparam("tenant_id")
    )


@cache
def result_stamps_select() -> Select[Any]:
    """The stamps of many videos in one statement: each row is a video's id, its tenant, then
    `result_stamp`'s columns, for the videos whose id is in the array `video_ids`. PostgreSQL
    only (`= ANY(array)`): the API batches the checks of concurrent reads with it."""
    return select(Video.id, Video.tenant_id, *_stamp_columns()).where(
        Video.id == any_(bindparam("video_ids"))
    )


def _stamp_columns() -> list[Any]:
    """Scalar subqueries, not LATERAL joins, so that SQLite runs them too."""

    def of(column: Any, *where: ColumnElement[bool], join: Any = None) -> Any:
        stmt = select(column)
        if join is not None:
            stmt = stmt.select_from(JobVideo).join(Job, join)
        return stmt.where(*where).correlate(Video).scalar_subquery()

    by_prediction = Prediction.video_id == Video.id
    by_entry = JobVideo.video_id == Video.id
    by_segment = Segment.video_id == Video.id
    return [
        Video.status,
        Video.updated_at,
        of(func.count(Prediction.id), by_prediction),
        of(func.max(Prediction.id), by_prediction),
        of(func.max(Prediction.created_at), by_prediction),
        of(func.count(JobVideo.job_id), by_entry),
        of(func.max(Job.created_at), by_entry, join=Job.id == JobVideo.job_id),
        of(func.count(Segment.id), by_segment),
        of(func.max(Segment.updated_at), by_segment),
    ]


def with_details(session: Session, rows: Sequence[ResultRow]) -> list[ResultRow]:
    """`rows` with their persons and segments filled in, for all of them at once."""
    versions = {row.video_id: row.details_version for row in rows}
    details = load_result_details(session=session, versions=versions)
    return [
        replace(
            row,
            persons=details.get(row.video_id, NO_DETAILS).persons,
            segments=details.get(row.video_id, NO_DETAILS).segments,
        )
        for row in rows
    ]


def name_matches(column: ColumnElement[str], video: str) -> ColumnElement[bool]:
    """`column` is `video`, or a path whose last component is `video`."""
    escaped = video.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return or_(column == video, column.like(f"%/{escaped}", escape="\\"))


def video_ids_with_prefix(*, session: Session, prefix: str, limit: int = 10) -> list[str]:
    """Ids of stored videos starting with `prefix` (at most `limit`), sorted."""
    stmt = select(Video.id).where(Video.id.startswith(prefix)).order_by(Video.id).limit(limit)
    return list(session.scalars(stmt))


def job_status_counts(*, session: Session, job_id: str) -> dict[str, int]:
    """Number of the job's videos in each status; every status is present, zeros included."""
    counts = dict.fromkeys(VIDEO_STATUSES, 0)
    rows = session.execute(
        select(Video.status, func.count())
        .join(JobVideo, JobVideo.video_id == Video.id)
        .where(JobVideo.job_id == job_id)
        .group_by(Video.status)
    )
    for status, count in rows:
        counts[status] = int(count)
    return counts


def job_segment_counts(*, session: Session, job_id: str) -> dict[str, int]:
    """Number of segments in each status over the job's distinct videos (a video given twice
    counts once); every status is present, zeros included. Videos without segments add none."""
    counts = dict.fromkeys(VIDEO_STATUSES, 0)
    videos = select(JobVideo.video_id).where(JobVideo.job_id == job_id).distinct()
    rows = session.execute(
        select(Segment.status, func.count())
        .where(Segment.video_id.in_(videos))
        .group_by(Segment.status)
    )
    for status, count in rows:
        counts[status] = int(count)
    return counts


def job_failures(
    *, session: Session, job_id: str, statuses: Collection[str] = ("failed",)
) -> list[tuple[str, str]]:
    """(name in the job, error) of the job's videos in `statuses`, in submission order.

    `no_face` is not a failure by default (such a video counts as processed); pass
    `statuses=("failed", "no_face")` to list those too.
    """
    rows = session.execute(
        select(JobVideo.name, Video.error)
        .join(Video, JobVideo.video_id == Video.id)
        .where(JobVideo.job_id == job_id, Video.status.in_(list(statuses)))
        .order_by(JobVideo.position, JobVideo.name)
    )
    return [(name, error or "") for name, error in rows]


def _columns() -> tuple[Any, ...]:
    return (
        Video.id.label("video_id"),
        Video.status,
        Video.error,
        Video.source_path,
        Video.faces_found,
        Video.frames,
        Video.duration_s,
        Video.model_version.label("pinned_version"),
        Video.updated_at,
        Prediction.id.label("prediction_id"),
        Prediction.model_version,
        Prediction.model_trained,
        Prediction.created_at.label("predicted_at"),
        *(getattr(Prediction, name) for name in TRAITS),
    )


def _job_select(job_id: str) -> Select[Any]:
    return (
        select(JobVideo.name.label("name"), JobVideo.job_id.label("job_id"), *_columns())
        .select_from(JobVideo)
        .join(Video, JobVideo.video_id == Video.id)
        .where(JobVideo.job_id == job_id)
    )


def _all_select() -> tuple[Select[Any], ColumnElement[str], tuple[Any, ...]]:
    """Videos with each distinct path they were given under (the latest job's entry)."""
    entry = (
        select(
            JobVideo.video_id,
            JobVideo.name,
            JobVideo.job_id,
            JobVideo.position,
            func.row_number()
            .over(
                partition_by=(JobVideo.video_id, JobVideo.name),
                order_by=(Job.created_at.desc(), Job.id.desc(), JobVideo.position),
            )
            .label("rank"),
        )
        .join(Job, Job.id == JobVideo.job_id)
        .subquery("entry")
    )
    name = func.coalesce(entry.c.name, Video.name)
    stmt = (
        select(name.label("name"), entry.c.job_id.label("job_id"), *_columns())
        .select_from(Video)
        .outerjoin(entry, (entry.c.video_id == Video.id) & (entry.c.rank == 1))
    )
    return stmt, name, (Video.created_at, Video.id, entry.c.position, name)


def entry_error(error: str | None, source: str | None, name: str | None) -> str | None:
    """A video's error as its entry `name` shows it.

    Uploads with the same bytes share one video, analysed once, whose error names the file it
    was first stored from (`source`); another entry's error names that entry's own file.
    """
    if error is None or not source or not name or source == name:
        return error
    # Only where the stage errors put a file's name: at the end, or quoted.
    if error.endswith(f": {source}"):
        error = error[: -len(source)] + name
    return error.replace(repr(source), repr(name)).replace(f"of {source} ", f"of {name} ")


def _to_row(row: Any) -> ResultRow:
    predicted = row.prediction_id is not None
    return ResultRow(
        video=row.name,
        video_id=row.video_id,
        status=row.status,
        traits={name: float(getattr(row, name)) for name in TRAITS} if predicted else None,
        faces_found=row.faces_found,
        frames=row.frames,
        model_version=row.model_version,
        model_trained=bool(row.model_trained) if predicted else None,
        error=entry_error(row.error, row.source_path, row.name),
        job_id=row.job_id,
        prediction_id=row.prediction_id,
        created_at=row.predicted_at if predicted else row.updated_at,
        duration_s=None if row.duration_s is None else float(row.duration_s),
        details_version=row.model_version if predicted else row.pinned_version,
    )
