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
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.status import VideoStatus
from db import repository as repo
from db.models import FEATURE_STAGES, Video
from db.repository.stages import StageUpdate
from tasks.context import StageContext, is_outage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoRef:
    """A detached snapshot of the fields a stage needs."""

    id: str
    storage_uri: str | None
    model_version: str | None
    # The file as its user submitted it: what messages about the file name.
    source: str
    # The video already reached the state this stage's success leads to (see `guard`).
    moved_on: bool = False


@dataclass(frozen=True)
class StageSpec:
    """What makes one stage different from another."""

    name: str
    # States a delivery of this stage's message does work in.
    runs_from: tuple[VideoStatus, ...]
    # Where success leads; a video found there gets the next stage's messages again.
    leads_to: VideoStatus
    # The stage's work, outside any transaction: what to write when it finishes.
    work: Callable[[StageContext, VideoRef], StageUpdate]
    # States `finish` moves the video from (the guard may have moved it on already).
    finishes_from: tuple[VideoStatus, ...]
    # Extra guarded work inside the guard's transaction (ingest pins the model version).
    claim: Callable[[StageContext, Session, Video], str | None] | None = None


def run_stage(ctx: StageContext, video_id: str, spec: StageSpec) -> bool:
    """Guard, run and finish `spec` for one video; True: send the next stage's messages."""
    ref = guard(ctx, video_id, spec)
    if ref is None:
        return False
    if ref.moved_on:
        return True
    try:
        changes = spec.work(ctx, ref)
        with ctx.session_factory.begin() as session:
            moved = repo.finish_stage(
                session=session,
                video_id=video_id,
                changes=changes,
                from_statuses=spec.finishes_from,
            )
    except Exception as exc:
        if is_outage(exc):
            _release(ctx, video_id, spec.name)
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
    with ctx.session_factory.begin() as session:
        video = repo.get_video(session=session, video_id=video_id)
        if video is None:
            log.info("%s stage: no video %s; the message does nothing", spec.name, video_id)
            return None
        if video.status == spec.leads_to:
            return _ref(video, video.model_version, moved_on=True)
        if video.status not in spec.runs_from or _part_done(video, spec.name):
            log.info(
                "%s stage: video %s %s; the message does nothing",
                spec.name,
                video_id,
                _why_idle(video, spec.name),
            )
            return None
        starts = repo.count_delivery(session=session, video_id=video_id, stage=spec.name)
        if starts > ctx.max_deliveries:
            error = gave_up(spec.name, starts)
            log.warning("video %s failed: %s", video_id, error)
            repo.finish_stage(
                session=session,
                video_id=video_id,
                changes=StageUpdate(VideoStatus.FAILED, error=error),
                from_statuses=spec.runs_from,
            )
            return None
        version = video.model_version
        if spec.claim is not None:
            version = spec.claim(ctx, session, video)
        if version is None:
            log.info(
                "%s stage: video %s has no model version pinned; nothing to do", spec.name, video_id
            )
            return None
        return _ref(video, version)


def gave_up(stage: str, starts: int) -> str:
    """The error stored on a video whose `stage` was started too often without finishing."""
    return (
        f"{stage} stage started {starts} times without finishing "
        "(its worker died, timed out or hit an unexpected error each time); gave up"
    )


def _part_done(video: Video, stage: str) -> bool:
    """A feature stage whose result is stored already (the other one is still running)."""
    return stage in FEATURE_STAGES and bool(getattr(video, f"{stage}_ready"))


def _why_idle(video: Video, stage: str) -> str:
    status = VideoStatus(video.status)
    if status.is_final:
        return f"is already final ({status})"
    if _part_done(video, stage):
        return f"has its {stage} result stored already"
    return f"is in state {status}"


def _release(ctx: StageContext, video_id: str, stage: str) -> None:
    """Take back this start; in the outage itself that may fail too, and the start stays."""
    try:
        with ctx.session_factory.begin() as session:
            repo.release_delivery(session=session, video_id=video_id, stage=stage)
    except Exception as exc:
        log.warning("%s stage: could not take back a start of video %s: %s", stage, video_id, exc)


def _ref(video: Video, version: str | None, moved_on: bool = False) -> VideoRef:
    return VideoRef(video.id, video.storage_uri, version, video.source_path, moved_on)
