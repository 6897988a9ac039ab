"""Celery tasks: thin adapters that decode ids, run a stage and enqueue the next ones.

Messages carry video ids only. A task retries only `RetryableError` (storage, database
or broker outages); input problems are recorded on the video by the stage itself.
"""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from sqlalchemy.exc import OperationalError

from core.errors import RetryableError
from tasks import stages
from tasks.context import StageContext

RETRYABLE = (RetryableError, OperationalError, ConnectionError)
RETRY_POLICY = {"max_retries": 4, "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True}


def register_tasks(app: Celery, get_context: Callable[[], StageContext]) -> None:
    """Define the pipeline's tasks on `app`; `get_context` gives the process's context."""

    @app.task(name="oceanstream.ingest", autoretry_for=RETRYABLE, **RETRY_POLICY)
    def ingest(video_id: str) -> None:
        if stages.run_ingest(get_context(), video_id):
            app.send_task("oceanstream.faces", args=[video_id], queue="faces")
            app.send_task("oceanstream.flow", args=[video_id], queue="flow")

    @app.task(name="oceanstream.faces", autoretry_for=RETRYABLE, **RETRY_POLICY)
    def faces(video_id: str) -> None:
        if stages.run_faces(get_context(), video_id):
            app.send_task("oceanstream.inference", args=[video_id], queue="inference")

    @app.task(name="oceanstream.flow", autoretry_for=RETRYABLE, **RETRY_POLICY)
    def flow(video_id: str) -> None:
        if stages.run_flow(get_context(), video_id):
            app.send_task("oceanstream.inference", args=[video_id], queue="inference")

    @app.task(name="oceanstream.inference", autoretry_for=RETRYABLE, **RETRY_POLICY)
    def inference(video_id: str) -> None:
        # A batch of one; an outage raises RetryableError, which retries the task.
        stages.run_inference(get_context(), video_id)
