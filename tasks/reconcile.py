"""The reconciler: the database says which videos and segments are unfinished, so lost
messages are resent.

The broker is only transport. If Redis restarts and loses every queued message, a worker
dies after its commit but before enqueueing the next stage, or a task's retries run out in
a long outage, the video (before its segments are planned) or a segment stays in a
non-final state; past a deadline this re-enqueues the stage it is waiting for.

It does not resend a (stage, id) whose message is still on the broker, waiting on its queue
or being worked on (`in_flight`, given by the caller, which knows the broker): a stage
stopped for minutes must find one message per segment when it comes back, not one per
sweep. Stages are idempotent, so a message resent in the instant between the broker being
read and a worker's commit costs only a duplicate check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta

from core.status import VideoStatus
from db import repository as repo
from db.models import Segment, Video
from tasks.context import StageContext

#: (stage, video or segment id) pairs with a message on the broker.
InFlight = Collection[tuple[str, str]]

#: Video states a message moves on: before its segments exist.
_VIDEO_WAITING = (VideoStatus.PENDING, VideoStatus.INGESTING)
#: Segment states a message moves on.
_SEGMENT_WAITING = (
    VideoStatus.PENDING,
    VideoStatus.INGESTING,
    VideoStatus.EXTRACTING,
    VideoStatus.INFERENCE,
)


def find_lost_work(
    ctx: StageContext,
    older_than_s: float,
    in_flight: Callable[[], InFlight] | None = None,
) -> list[tuple[str, str]]:
    """(stage, id) pairs to enqueue again, for videos and segments idle for `older_than_s`.

    `in_flight`, called only when something is idle, gives the pairs whose message is still
    on the broker; those are left alone. Without it (a broker this cannot read) every idle
    row's stage is resent. Each returned row's `updated_at` is bumped, so the next sweep
    waits a full deadline again before resending.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with ctx.session_factory() as session:
        videos = [
            (stage, video.id)
            for video in repo.find_stuck_videos(
                session=session, older_than=cutoff, statuses=_VIDEO_WAITING
            )
            for stage in waiting_on(video)
        ]
        segments = [
            (stage, segment.id)
            for segment in repo.find_stuck_segments(
                session=session, older_than=cutoff, statuses=_SEGMENT_WAITING
            )
            for stage in segment_waiting_on(segment)
        ]
    if not videos and not segments:
        return []
    queued = set(in_flight()) if in_flight is not None else set()
    video_work = [pair for pair in videos if pair not in queued]
    segment_work = [pair for pair in segments if pair not in queued]
    with ctx.session_factory.begin() as session:
        for video_id in dict.fromkeys(video_id for _, video_id in video_work):
            repo.touch_video(session=session, video_id=video_id)
        for segment_id in dict.fromkeys(segment_id for _, segment_id in segment_work):
            repo.touch_segment(session=session, segment_id=segment_id)
    return video_work + segment_work


def waiting_on(video: Video) -> list[str]:
    """The stages whose messages move `video` on: ingest, until its segments are planned."""
    if video.status in _VIDEO_WAITING:
        return ["ingest"]
    return []


def segment_waiting_on(segment: Segment) -> list[str]:
    """The stages whose messages move `segment` on from where it is.

    A flow message for a segment whose flow waits for its persons does nothing until faces
    has stored them (faces then sends flow itself), so resending both is harmless.
    """
    if segment.status in (VideoStatus.PENDING, VideoStatus.INGESTING):
        return ["sample"]
    if segment.status == VideoStatus.EXTRACTING:
        return [
            stage
            for stage, ready in (("faces", segment.faces_ready), ("flow", segment.flow_ready))
            if not ready
        ]
    if segment.status == VideoStatus.INFERENCE:
        return ["inference"]
    return []
