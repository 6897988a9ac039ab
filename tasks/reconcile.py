"""The reconciler: the database says which videos are unfinished, so lost messages are resent.

The broker is only transport. If Redis restarts and loses every queued message, a worker
dies after its commit but before enqueueing the next stage, or a task's retries run out in
a long outage, the video stays in a non-final state; past a deadline this re-enqueues the
stage it is waiting for.

It does not resend a (stage, video) whose message is still on the broker, waiting on its
queue or being worked on (`in_flight`, given by the caller, which knows the broker): a stage
stopped for minutes must find one message per video when it comes back, not one per sweep.
Stages are idempotent, so a message resent in the instant between the broker being read and
a worker's commit costs only a duplicate check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

from core.status import UNFINISHED_STATUSES, VideoStatus
from db import repository as repo
from db.models import Video
from tasks.context import StageContext

#: (stage, video id) pairs with a message on the broker.
InFlight = Collection[tuple[str, str]]


def find_lost_work(
    ctx: StageContext,
    older_than_s: float,
    in_flight: Callable[[], InFlight] | None = None,
) -> list[tuple[str, str]]:
    """(stage, video_id) pairs to enqueue again, for videos idle for `older_than_s`.

    `in_flight`, called only when some video is idle, gives the pairs whose message is
    still on the broker; those are left alone. Without it (a broker this cannot read) every
    idle video's stage is resent. Each returned video's `updated_at` is bumped, so the next
    sweep waits a full deadline again before resending.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with ctx.session_factory() as session:
        idle = [
            (stage, video.id)
            for video in repo.find_stuck_videos(
                session=session, older_than=cutoff, statuses=UNFINISHED_STATUSES
            )
            for stage in waiting_on(video)
        ]
    if not idle:
        return []
    queued = set(in_flight()) if in_flight is not None else set()
    work = [pair for pair in idle if pair not in queued]
    with ctx.session_factory.begin() as session:
        for video_id in dict.fromkeys(video_id for _, video_id in work):
            repo.touch_video(session=session, video_id=video_id)
    return work


def waiting_on(video: Video) -> list[str]:
    """The stages whose messages move `video` on from where it is."""
    if video.status in (VideoStatus.PENDING, VideoStatus.INGESTING):
        return ["ingest"]
    if video.status == VideoStatus.EXTRACTING:
        return [
            stage
            for stage, ready in (("faces", video.faces_ready), ("flow", video.flow_ready))
            if not ready
        ]
    if video.status == VideoStatus.INFERENCE:
        return ["inference"]
    return []
