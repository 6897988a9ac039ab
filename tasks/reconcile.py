"""The reconciler: the database says which videos are unfinished, so lost messages are resent.

The broker is only transport. If Redis restarts and loses every queued message, or a
worker dies after its commit but before enqueueing the next stage, the video stays in a
non-final state; past a deadline this re-enqueues the stage it is waiting for. Stages are
idempotent, so resending a message that was not actually lost costs only duplicate work.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.status import UNFINISHED_STATUSES, VideoStatus
from db import repository as repo
from tasks.context import StageContext


def find_lost_work(ctx: StageContext, older_than_s: float) -> list[tuple[str, str]]:
    """(stage, video_id) pairs to enqueue again, for videos idle for `older_than_s`.

    Each returned video's `updated_at` is bumped, so the next sweep waits a full deadline
    again before resending.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    work: list[tuple[str, str]] = []
    with ctx.session_factory.begin() as session:
        for video in repo.find_stuck_videos(
            session=session, older_than=cutoff, statuses=UNFINISHED_STATUSES
        ):
            if video.status in (VideoStatus.PENDING, VideoStatus.INGESTING):
                work.append(("ingest", video.id))
            elif video.status == VideoStatus.EXTRACTING:
                if not video.faces_ready:
                    work.append(("faces", video.id))
                if not video.flow_ready:
                    work.append(("flow", video.id))
            elif video.status == VideoStatus.INFERENCE:
                work.append(("inference", video.id))
            repo.touch_video(session=session, video_id=video.id)
    return work
