"""`find_lost_work`: which (stage, video) pairs the reconciler resends, on SQLite and PostgreSQL.

A pair whose message is still on the broker (`in_flight`) is never resent, however often the
sweep runs: a stage stopped for minutes must find one message per video when it comes back.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.pipeline import PipelineConfig
from core.storage import ArtifactStore
from db import repository as repo
from tasks.context import StageContext
from tasks.reconcile import find_lost_work
from tests.db.conftest import (  # noqa: F401 - the database fixtures of tests/db
    backend,
    database_url,
    engine,
    postgres_databases,
    session_factory,
)
from tests.db.helpers import new_video


@pytest.fixture
def ctx(session_factory: sessionmaker[Session], tmp_path: Path) -> StageContext:  # noqa: F811
    def no_bundles(version: str):
        raise AssertionError("the reconciler loads no model")

    return StageContext(
        session_factory=session_factory,
        store=ArtifactStore(f"file://{tmp_path}"),
        config=PipelineConfig(num_frames=8),
        load_bundle=no_bundles,
        active_version=lambda session=None: "unused",
    )


def extracting_with_faces_done(ctx: StageContext, label: str) -> str:
    video_id = new_video(ctx.session_factory, label, status="extracting")
    with ctx.session_factory.begin() as session:
        repo.finish_stage(
            session=session,
            video_id=video_id,
            changes=repo.StageUpdate("inference", ready="faces"),
            from_statuses=["extracting"],
        )
    return video_id


def test_idle_videos_get_the_stage_they_wait_on(ctx: StageContext) -> None:
    pending = new_video(ctx.session_factory, "pending")
    waiting = extracting_with_faces_done(ctx, "extracting")
    inference = new_video(ctx.session_factory, "inference", status="inference")
    new_video(ctx.session_factory, "done", status="done")
    time.sleep(0.05)
    work = find_lost_work(ctx, 0.01)
    assert sorted(work) == sorted(
        [("ingest", pending), ("flow", waiting), ("inference", inference)]
    )
    assert find_lost_work(ctx, 60) == []  # each resent video waits a full deadline again


def test_a_stage_whose_message_is_on_the_broker_is_not_resent(ctx: StageContext) -> None:
    video_id = extracting_with_faces_done(ctx, "queued")
    queued = {("flow", video_id)}
    for _ in range(20):  # an outage of the flow workers: many sweeps, no resend
        time.sleep(0.02)
        assert find_lost_work(ctx, 0.01, lambda: queued) == []
    # The message is gone (a Redis restart, retries run out): the next sweep resends it.
    time.sleep(0.02)
    assert find_lost_work(ctx, 0.01, lambda: set()) == [("flow", video_id)]
    # A message for the other stage, or another video, does not count for this one.
    time.sleep(0.02)
    other = {("faces", video_id), ("flow", "another-video")}
    assert find_lost_work(ctx, 0.01, lambda: other) == [("flow", video_id)]


def test_the_broker_is_read_only_when_some_video_is_idle(ctx: StageContext) -> None:
    new_video(ctx.session_factory, "fresh")

    def unread() -> set[tuple[str, str]]:
        raise AssertionError("read the broker with no idle video")

    assert find_lost_work(ctx, 60, unread) == []
