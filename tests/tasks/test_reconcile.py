"""`find_lost_work`: which (stage, id) pairs the reconciler resends, on SQLite and PostgreSQL.

Ingest is resent for a video; every later stage for a segment. A pair whose message is still
on the broker (`in_flight`) is never resent, however often the sweep runs: a stage stopped
for minutes must find one message per segment when it comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.pipeline import PipelineConfig
from core.status import VideoStatus
from core.storage.store import ArtifactStore
from core.video import segments as plan
from db import repository as repo
from db.repository.segments import SegmentUpdate
from tasks.context import StageContext
from tasks.reconcile import find_lost_work
from tests.support.rows import new_video


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], tmp_path: Path) -> StageContext:
    def no_bundles(version: str):
        raise AssertionError("the reconciler loads no model")

    return StageContext(
        session_factory=session_factory,
        store=ArtifactStore(f"file://{tmp_path}"),
        config=PipelineConfig(num_frames=8),
        load_bundle=no_bundles,
        active_version=lambda session=None: "unused",
    )


def segment_in(ctx: StageContext, label: str, status: str, ready: str | None = None) -> str:
    """A one-segment video (extracting) whose segment is in `status`; `ready` sets that
    feature stage's flag (the segment stays in `extracting` until the other one's is set)."""
    video_id = new_video(ctx.session_factory, label, status="extracting")
    with ctx.session_factory.begin() as session:
        [segment_id] = repo.create_segments(
            session=session, video_id=video_id, segments=[plan.Segment(0, 0.0, 1.0)]
        )
        if status != "pending":
            repo.finish_segment(
                session=session,
                segment_id=segment_id,
                changes=SegmentUpdate(VideoStatus(status)),
                from_statuses=None,
            )
        if ready is not None:
            repo.finish_segment(
                session=session,
                segment_id=segment_id,
                changes=SegmentUpdate(VideoStatus.INFERENCE, ready=ready),
                from_statuses=["extracting"],
            )
    return segment_id


def test_idle_videos_and_segments_get_the_stage_they_wait_on(ctx: StageContext) -> None:
    pending = new_video(ctx.session_factory, "pending")
    unsampled = segment_in(ctx, "unsampled", "pending")
    extracting = segment_in(ctx, "extracting", "extracting")
    waiting = segment_in(ctx, "faces-done", "extracting", ready="faces")
    inference = segment_in(ctx, "inference", "inference")
    segment_in(ctx, "segment-done", "done")
    new_video(ctx.session_factory, "done", status="done")
    # A segment left behind by a video that is final (e.g. erased or failed) is not resent.
    orphan = segment_in(ctx, "video-final", "inference")
    with ctx.session_factory.begin() as session:
        video_id = repo.get_segment(session=session, segment_id=orphan).video_id
        repo.transition_video(session=session, video_id=video_id, to_status="failed")
    time.sleep(0.05)
    work = find_lost_work(ctx, 0.01)
    assert sorted(work) == sorted(
        [
            ("ingest", pending),
            ("sample", unsampled),
            ("faces", extracting),
            ("flow", extracting),
            ("flow", waiting),
            ("inference", inference),
        ]
    )
    assert find_lost_work(ctx, 60) == []  # each resent row waits a full deadline again


def test_a_stage_whose_message_is_on_the_broker_is_not_resent(ctx: StageContext) -> None:
    segment_id = segment_in(ctx, "queued", "extracting", ready="faces")
    queued = {("flow", segment_id)}
    for _ in range(20):  # an outage of the flow workers: many sweeps, no resend
        time.sleep(0.02)
        assert find_lost_work(ctx, 0.01, lambda: queued) == []
    # The message is gone (a Redis restart, retries run out): the next sweep resends it.
    time.sleep(0.02)
    assert find_lost_work(ctx, 0.01, lambda: set()) == [("flow", segment_id)]
    # A message for the other stage, or another segment, does not count for this one.
    time.sleep(0.02)
    other = {("faces", segment_id), ("flow", "another-segment")}
    assert find_lost_work(ctx, 0.01, lambda: other) == [("flow", segment_id)]


def test_the_broker_is_read_only_when_some_video_is_idle(ctx: StageContext) -> None:
    new_video(ctx.session_factory, "fresh")

    def unread() -> set[tuple[str, str]]:
        raise AssertionError("read the broker with no idle video")

    assert find_lost_work(ctx, 60, unread) == []
