"""The Celery application, built by a factory from the settings (never at import).

One app serves every process role; a worker's `--queues` decides what it runs. Queues are
declared explicitly so Flower can show their lengths on Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from celery import Celery
from kombu import Exchange, Queue

if TYPE_CHECKING:
    from workers.settings import Settings

QUEUES = ("ingest", "faces", "flow", "inference")
CPU_QUEUES = ("ingest", "faces", "flow")

# (soft, hard) seconds per stage. Decoding a long video is the slowest step; the Redis
# visibility timeout below must stay above the longest hard limit, or a message still being
# worked on would be handed to a second worker.
TIME_LIMITS = {
    "ingest": (300, 360),
    "faces": (180, 240),
    "flow": (180, 240),
    "inference": (120, 180),
}
VISIBILITY_TIMEOUT_S = 2 * max(hard for _, hard in TIME_LIMITS.values())
# kombu's Redis transport options; workers.broker.kombu_redis reads its key names from them.
BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": VISIBILITY_TIMEOUT_S,
    "queue_order_strategy": "priority",
}


def create_app(settings: Settings) -> Celery:
    """A configured Celery app with the pipeline's tasks registered."""
    app = Celery("oceanstream", broker=settings.broker_url.get_secret_value(), set_as_current=False)
    app.conf.update(
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
        broker_transport_options=dict(BROKER_TRANSPORT_OPTIONS),
        task_queues=[Queue(name, Exchange(name), routing_key=name) for name in QUEUES],
        task_default_queue="ingest",
        task_routes={f"oceanstream.{name}": {"queue": name} for name in QUEUES},
        task_annotations={
            f"oceanstream.{name}": {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in TIME_LIMITS.items()
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
