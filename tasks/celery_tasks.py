"""Celery tasks: thin adapters that decode ids, run a stage and enqueue the next ones.

Messages carry ids only: ingest's a video id, every later stage's a segment id. A task
retries only outages (`tasks.context.is_outage`: storage, database or broker unreachable),
with a growing pause: 1, 2, 4 ... 32 s, then every 60 s, for `MAX_RETRIES` retries, so a
stage rides out an outage of about a quarter of an hour (at least 10 minutes with the
jitter). A programming error is not retried: the task fails at once with its traceback in
the worker's log. When the retries do run out the message is gone, and the reconciler
(`tasks.reconcile`) sends the stage again. Input problems are recorded on the segment (or,
before its segments are planned, the video) by the stage itself.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Iterator

from celery import Celery, Task
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.errors import RetryableError
from tasks import stages
from tasks.context import StageContext, is_outage
from tasks.queues import STAGE_QUEUES, task_name

log = logging.getLogger(__name__)

#: Pause before retry n (from 0): RETRY_FIRST_S * 2**n, at most RETRY_MAX_S.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
#: 1 + 2 + 4 + 8 + 16 + 32 + 14 * 60 = 903 s of pauses before the last retry.
MAX_RETRIES = 20
#: Each pause is shortened by up to this fraction, so a fleet does not reconnect in step.
RETRY_JITTER = 0.25

#: The error types an outage is raised as, for `isinstance` (`is_outage` decides finely).
RETRYABLE: tuple[type[Exception], ...] = (
    RetryableError,
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeoutError,
    BrokerError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)
#: Celery's own retry options with the same schedule, for tasks that use `autoretry_for`.
RETRY_POLICY = {
    "max_retries": MAX_RETRIES,
    "retry_backoff": RETRY_FIRST_S,
    "retry_backoff_max": RETRY_MAX_S,
    "retry_jitter": False,
}


def retry_delay(retries: int) -> float:
    """Seconds to wait before retry number `retries` (0 for the first), jitter included."""
    pause = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** min(retries, 16))
    return pause * (1.0 - RETRY_JITTER * random.random())


@contextlib.contextmanager
def retried_through_outages(task: Task) -> Iterator[None]:
    """Run the body; on an outage retry the task later (Celery sends it again), else raise."""
    try:
        yield
    except Exception as exc:
        if not is_outage(exc):
            raise
        retries = task.request.retries
        if retries >= MAX_RETRIES:
            log.error("%s gave up after %d retries; the reconciler resends it", task.name, retries)
            raise
        pause = retry_delay(retries)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning(
            "%s met an outage (%s); retry %d in %.1f s", task.name, reason, retries + 1, pause
        )
        raise task.retry(exc=exc, countdown=pause, max_retries=MAX_RETRIES) from None


def register_tasks(app: Celery, get_context: Callable[[], StageContext]) -> None:
    """Define the pipeline's tasks on `app`; `get_context` gives the process's context."""

    def send(stages_next: list[str], row_id: str) -> None:
        for stage in stages_next:
            app.send_task(task_name(stage), args=[row_id], queue=STAGE_QUEUES[stage])

    @app.task(name="oceanstream.ingest", bind=True)
    def ingest(self: Task, video_id: str) -> None:
        with retried_through_outages(self):
            for segment_id in stages.run_ingest(get_context(), video_id):
                send(["sample"], segment_id)

    @app.task(name="oceanstream.sample", bind=True)
    def sample(self: Task, segment_id: str) -> None:
        with retried_through_outages(self):
            send(stages.run_sample(get_context(), segment_id), segment_id)

    @app.task(name="oceanstream.faces", bind=True)
    def faces(self: Task, segment_id: str) -> None:
        with retried_through_outages(self):
            send(stages.run_faces(get_context(), segment_id), segment_id)

    @app.task(name="oceanstream.flow", bind=True)
    def flow(self: Task, segment_id: str) -> None:
        with retried_through_outages(self):
            send(stages.run_flow(get_context(), segment_id), segment_id)

    @app.task(name="oceanstream.inference", bind=True)
    def inference(self: Task, segment_id: str) -> None:
        # A batch of one; an outage raises RetryableError, which retries the task.
        with retried_through_outages(self):
            stages.run_inference(get_context(), segment_id)
