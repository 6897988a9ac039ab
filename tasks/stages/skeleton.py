"""The one shape every per-video stage has: guard, run, finish.

* guard: one transaction loads the video, checks it is in a state the stage runs from,
  counts this delivery, and fails the video once it was delivered more than
  `max_deliveries` times (a message that kills its worker every time cannot loop forever);
* run: the stage's own work (decoding, models, storage), outside any transaction;
* finish: one transaction that writes every field the stage produced and moves the state,
  in one guarded UPDATE (`db.repository.finish_stage`).

A stage returns whether its caller (the Celery task) should send the next stage's messages,
which it does after the commit. The inference pool's batches go through the same three
steps, a batch at a time (`tasks.stages.inference`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.status import VideoStatus
from db import repository as repo
from db.models import Video
from db.repository.stages import StageUpdate
from tasks.context import StageContext


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
    changes = spec.work(ctx, ref)
    with ctx.session_factory.begin() as session:
        moved = repo.finish_stage(
            session=session, video_id=video_id, changes=changes, from_statuses=spec.finishes_from
        )
    return moved and changes.status == spec.leads_to


def guard(ctx: StageContext, video_id: str, spec: StageSpec) -> VideoRef | None:
    """Count this delivery and check the video is where this stage expects it.

    Returns None when the stage must not run: the video is unknown, elsewhere, has no model
    version pinned (past ingest), or was delivered more often than `max_deliveries` (then it
    is failed).

    A video found in `spec.leads_to` gives a ref with `moved_on` set, and no delivery is
    counted: a worker can die after committing that move and before sending the next
    stage's messages, and the redelivered message then finds the move done. The caller sends
    the next messages again; the stages are idempotent, so a duplicate costs nothing but the
    check, and nothing is left waiting for the reconciler.
    """
    with ctx.session_factory.begin() as session:
        video = repo.get_video(session=session, video_id=video_id)
        if video is None:
            return None
        if video.status == spec.leads_to:
            return _ref(video, video.model_version, moved_on=True)
        if video.status not in spec.runs_from:
            return None
        deliveries = repo.count_delivery(session=session, video_id=video_id, stage=spec.name)
        if deliveries > ctx.max_deliveries:
            repo.finish_stage(
                session=session,
                video_id=video_id,
                changes=StageUpdate(VideoStatus.FAILED, error=gave_up(spec.name, deliveries)),
                from_statuses=spec.runs_from,
            )
            return None
        version = video.model_version
        if spec.claim is not None:
            version = spec.claim(ctx, session, video)
        if version is None:
            return None
        return _ref(video, version)


def gave_up(stage: str, deliveries: int) -> str:
    """The error stored on a video whose `stage` message was delivered too often."""
    return (
        f"{stage} stage was delivered {deliveries} times without finishing "
        "(its worker died or timed out each time); gave up"
    )


def _ref(video: Video, version: str | None, moved_on: bool = False) -> VideoRef:
    return VideoRef(video.id, video.storage_uri, version, video.source_path, moved_on)
