"""The Celery application, built by a factory from the settings (never at import).

One app serves every process role; a worker's `--queues` decides what it runs. Queues are
declared explicitly so Flower can show their lengths on Redis.

A worker survives any message: its consumer and task requests are
`workers.broker.celery_consumer`'s, which dead-letter what Celery refuses, and a worker reads
Redis through `workers.broker.kombu_redis.DeadLetteringTransport`.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from celery import Celery
from kombu import Exchange, Queue

from tasks.queues import STAGE_QUEUES, task_name
from workers.broker.celery_consumer import CheckedTask
from workers.broker.kombu_redis import (
    BROKER_TRANSPORT_OPTIONS,
    dead_letter_redis_urls,
    redis_url,
)
from workers.time_limits import stage_time_limits

if TYPE_CHECKING:
    from workers.settings import Settings

QUEUES = ("ingest", "faces", "flow", "inference")
CPU_QUEUES = ("ingest", "faces", "flow")


def use_worker_transport(conf: Any) -> None:
    """Have a worker's consumer read a Redis broker through the dead-lettering transport.

    Only workers, and through kombu's URL schemes (`dead_letter_redis_urls`), so the broker
    URL and the worker's banner keep `redis://`. Another broker keeps its own transport.
    """
    try:
        redis_url(str(conf.broker_url))
    except ValueError:
        return
    dead_letter_redis_urls()


def create_app(settings: Settings) -> Celery:
    """A configured Celery app with the pipeline's tasks registered."""
    app = Celery(
        "oceanstream",
        broker=settings.broker_url.get_secret_value(),
        set_as_current=False,
        task_cls=CheckedTask,
    )
    app.conf.update(
        # A worker consumer that dead-letters the messages Celery refuses (the module doc);
        # a worker also reads Redis through the dead-lettering transport (`use_worker_transport`).
        worker_consumer="workers.broker.celery_consumer:DeadLetteringConsumer",
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        # Late acknowledgement: a message is removed only after its task finished, so a
        # worker that dies mid-task leaves it to be delivered again.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool child loads TensorFlow and warms its models before it reports up; the
        # default 4 s would have the parent kill every replacement child in a loop.
        worker_proc_alive_timeout=180,
        worker_max_tasks_per_child=None,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            **BROKER_TRANSPORT_OPTIONS,
            "max_deliveries": settings.max_deliveries,
        },
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue="ingest",
        task_routes={task_name(stage): {"queue": q} for stage, q in STAGE_QUEUES.items()},
        task_annotations={
            f"oceanstream.{name}": {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in stage_time_limits(settings.stage_time_limits).items()
        },
        worker_send_task_events=True,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        broker_heartbeat=0,
    )
    from tasks.celery_tasks import register_tasks
    from tasks.extract import register_extract_task
    from workers.bootstrap import get_context

    register_tasks(app, get_context)
    register_extract_task(app, get_context)
    return app


def __getattr__(name: str) -> Celery:
    """`workers.celery_app.app`: the app of the environment's settings, built on first use.

    The target of Celery's own command line for operators (`celery -A workers.celery_app
    inspect ping`, `... inspect active_queues`, `... control ...`); importing this module
    still builds nothing. Workers are started with `oceanstream worker`, which sets up each
    process first.
    """
    if name == "app":
        return _app_from_environment()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@cache
def _app_from_environment() -> Celery:
    from workers.settings import Settings

    return create_app(Settings())
