"""The one shape every per-video stage has: guard, run, finish.

* guard: one transaction loads the video, checks it is in a state the stage runs from and
  that this stage's part is not done yet, counts this start, and fails the video once the
  stage was started more than `max_deliveries` times (a message that kills its worker
  every time cannot loop forever). A message with nothing to do is logged once, saying why;
* run: the stage's own work (decoding, models, storage), outside any transaction; a start
  that meets an outage (`is_outage`) is taken back, so the task's retries through an outage
  of minutes do not use up the count;
* finish: one transaction that writes every field the stage produced and moves the state,
  in one guarded UPDATE (`db.repository.finish_stage`).

A stage returns whether its caller (the Celery task) should send the next stage's messages,
which it does after the commit. The inference pool's batches go through the same three
steps, a batch at a time (`tasks.stages.inference`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy.orm import Session

from core.status import VideoStatus
from db import repository as repo
from db.models import FEATURE_STAGES, Video
from db.repository.stages import StageUpdate
from tasks.context import StageContext, is_outage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRef:
    """A detached snapshot of the fields a stage needs: of a video, or of one of its segments."""

    id: str  # the id the stage's message carries: the video's, or the segment's
    storage_uri: str | None
    model_version: str | None
    # The file as its user submitted it: what messages about the file name.
    source: str
    # The row already reached the state this stage's success leads to (see `guard`).
    moved_on: bool = False
    # A segment's video and index (for a video: its own id, and None).
    video_id: str = ""
    index: int | None = None


class StageRow(Protocol):
    """What the guard reads of a video or segment row."""

    status: str
    faces_ready: bool
    flow_ready: bool


@dataclass(frozen=True)
class Rows:
    """How a stage loads, counts and moves the rows its messages name: videos or segments.

    `finish` applies a `StageUpdate` with one guarded UPDATE, in the caller's transaction,
    and does whatever that move entails (a segment's last one aggregates its video).
    """

    kind: str
    load: Callable[[Session, str], tuple[StageRow, VideoRef] | None]
    count: Callable[[Session, str, str], int]
    release: Callable[[Session, str, str], int]
    finish: Callable[[StageContext, Session, str, StageUpdate, Sequence[VideoStatus]], bool]


def _load_video(session: Session, video_id: str) -> tuple[StageRow, VideoRef] | None:
    video = repo.get_video(session=session, video_id=video_id)
    return None if video is None else (video, _ref(video, video.model_version))


def _finish_video(
    ctx: StageContext,
    session: Session,
    video_id: str,
    changes: StageUpdate,
    from_statuses: Sequence[VideoStatus],
) -> bool:
    return repo.finish_stage(
        session=session, video_id=video_id, changes=changes, from_statuses=from_statuses
    )


VIDEO_ROWS = Rows(
    kind="video",
    load=_load_video,
    count=lambda session, video_id, stage: repo.count_delivery(
        session=session, video_id=video_id, stage=stage
    ),
    release=lambda session, video_id, stage: repo.release_delivery(
        session=session, video_id=video_id, stage=stage
    ),
    finish=_finish_video,
)


@dataclass(frozen=True)
class StageSpec:
    """What makes one stage different from another."""

    name: str
    # States a delivery of this stage's message does work in.
    runs_from: tuple[VideoStatus, ...]
    # Where success leads; a video found there gets the next stage's messages again.
    leads_to: VideoStatus
    # The stage's work, outside any transaction: what to write when it finishes.
    work: Callable[[StageContext, VideoRef], StageUpdate | None]
    # States `finish` moves the video from (the guard may have moved it on already).
    finishes_from: tuple[VideoStatus, ...]
    # Extra guarded work inside the guard's transaction (ingest pins the model version).
    claim: Callable[[StageContext, Session, Video], str | None] | None = None
    # The rows the stage's messages name.
    rows: Rows = VIDEO_ROWS
    # Writes that go with the finish, in its transaction, before it (ingest's segments).
    store: Callable[[StageContext, Session, VideoRef, StageUpdate], None] | None = None


def run_stage(ctx: StageContext, video_id: str, spec: StageSpec) -> bool:
    """Guard, run and finish `spec` for one row; True: send the next stage's messages.

    A `work` that returns None found nothing to do yet (a person-region flow stage whose
    segment's persons are not stored yet): its start is taken back.
    """
    ref = guard(ctx, video_id, spec)
    if ref is None:
        return False
    if ref.moved_on:
        return True
    try:
        changes = spec.work(ctx, ref)
        if changes is None:
            _release(ctx, video_id, spec)
            return False
        with ctx.session_factory.begin() as session:
            if spec.store is not None:
                spec.store(ctx, session, ref, changes)
            moved = spec.rows.finish(ctx, session, video_id, changes, spec.finishes_from)
    except Exception as exc:
        if is_outage(exc):
            _release(ctx, video_id, spec)
        raise
    return moved and changes.status == spec.leads_to


def guard(ctx: StageContext, video_id: str, spec: StageSpec) -> VideoRef | None:
    """Count this start and check the video is where this stage expects it.

    Returns None when the stage must not run: the video is unknown, elsewhere, this stage's
    part of it is done (a feature stage whose flag is set), it has no model version pinned
    (past ingest), or the stage was started more often than `max_deliveries` (then it is
    failed). Each of these is logged once, with the reason.

    A video found in `spec.leads_to` gives a ref with `moved_on` set, and no start is
    counted: a worker can die after committing that move and before sending the next
    stage's messages, and the redelivered message then finds the move done. The caller sends
    the next messages again; the stages are idempotent, so a duplicate costs nothing but the
    check, and nothing is left waiting for the reconciler.
    """
    kind = spec.rows.kind
    with ctx.session_factory.begin() as session:
        loaded = spec.rows.load(session, video_id)
        if loaded is None:
            log.info("%s stage: no %s %s; the message does nothing", spec.name, kind, video_id)
            return None
        row, ref = loaded
        if row.status == spec.leads_to:
            return replace(ref, moved_on=True)
        if row.status not in spec.runs_from or _part_done(row, spec.name):
            log.info(
                "%s stage: %s %s %s; the message does nothing",
                spec.name,
                kind,
                video_id,
                _why_idle(row, spec.name),
            )
            return None
        starts = spec.rows.count(session, video_id, spec.name)
        if starts > ctx.max_deliveries:
            error = gave_up(spec.name, starts)
            log.warning("%s %s failed: %s", kind, video_id, error)
            spec.rows.finish(
                ctx,
                session,
                video_id,
                StageUpdate(VideoStatus.FAILED, error=error),
                spec.runs_from,
            )
            return None
        version = ref.model_version
        if spec.claim is not None:
            assert isinstance(row, Video)  # claims are video stages'
            version = spec.claim(ctx, session, row)
        if version is None:
            log.info(
                "%s stage: %s %s has no model version pinned; nothing to do",
                spec.name,
                kind,
                video_id,
            )
            return None
        return replace(ref, model_version=version)


def gave_up(stage: str, starts: int) -> str:
    """The error stored on a video whose `stage` was started too often without finishing."""
    return (
        f"{stage} stage started {starts} times without finishing "
        "(its worker died, timed out or hit an unexpected error each time); gave up"
    )


def _part_done(video: StageRow, stage: str) -> bool:
    """A feature stage whose result is stored already (the other one is still running)."""
    return stage in FEATURE_STAGES and bool(getattr(video, f"{stage}_ready"))


def _why_idle(video: StageRow, stage: str) -> str:
    status = VideoStatus(video.status)
    if status.is_final:
        return f"is already final ({status})"
    if _part_done(video, stage):
        return f"has its {stage} result stored already"
    return f"is in state {status}"


def _release(ctx: StageContext, row_id: str, spec: StageSpec) -> None:
    """Take back this start; in the outage itself that may fail too, and the start stays."""
    try:
        with ctx.session_factory.begin() as session:
            spec.rows.release(session, row_id, spec.name)
    except Exception as exc:
        log.warning(
            "%s stage: could not take back a start of %s %s: %s",
            spec.name,
            spec.rows.kind,
            row_id,
            exc,
        )


def _ref(video: Video, version: str | None) -> VideoRef:
    return VideoRef(video.id, video.storage_uri, version, video.source_path, video_id=video.id)
