"""Reconciling the database with the broker: resend lost work and lost callbacks, apply retention.

`Reconciler` is what `oceanstream reconcile` runs each round; `apply_retention` is shared with
the API process's housekeeping thread (`workers.api.background`). The database is the source
of truth: a stage message that is neither waiting on its queue nor held by a worker for less
than `older_than` seconds is taken as lost and sent again; the stage's guard makes a late
copy harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis

from tasks.queues import STAGE_QUEUES, task_name
from tasks.reconcile import find_lost_work
from workers import bootstrap
from workers.broker.kombu_redis import UnsupportedBrokerSetting, layout_of, redis_url
from workers.broker.queued_messages import queued_messages
from workers.celery_app import QUEUES, create_app
from workers.services.callbacks import MAX_BACKOFF_S, QUEUE, TASK, resend_lost
from workers.services.erasure import purge_expired

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import sessionmaker

    from workers.broker.kombu_redis import KombuRedisLayout
    from workers.settings import Settings


def apply_retention(settings: Settings, session_factory: sessionmaker) -> str | None:
    """Erase what is older than OCEANSTREAM_RETENTION_DAYS (when set); a summary line when
    anything was erased, else None."""
    erased = purge_expired(settings, session_factory)
    return erased.summary() if erased.jobs or erased.videos else None


class Reconciler:
    """Opens the database and the broker on first use, so an outage at start is a round
    that failed, like any later one.

    `prepare` runs before the first connection (the CLI creates or migrates the database
    there); `report` receives one line per notable event of a round (callbacks resent,
    retention, a broker whose queues cannot be read).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        prepare: Callable[[], object] | None = None,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.celery: Celery | None = None
        self._prepare = prepare
        self._report = report or (lambda line: None)
        self._redis: Any = None
        self._layout: KombuRedisLayout | None = None

    def run_once(self, older_than: float) -> int:
        """One round; returns how many stage messages were sent again."""
        if self.celery is None:
            self.celery = self._connect()
        in_flight = None
        if self._layout is not None:

            def in_flight() -> set[tuple[str, str]]:
                return self._in_flight(older_than)

        work = find_lost_work(bootstrap.get_context(), older_than, in_flight)
        for stage, row_id in work:
            self.celery.send_task(task_name(stage), args=[row_id], queue=STAGE_QUEUES[stage])
        self._resend_callbacks(older_than)
        erased = apply_retention(self.settings, bootstrap.get_context().session_factory)
        if erased is not None:
            self._report(f"retention: {erased}")
        return len(work)

    def _resend_callbacks(self, older_than: float) -> None:
        """Send again the completion callbacks whose messages were lost."""
        assert self.celery is not None
        on_broker = self._callbacks_on_broker(older_than) if self._layout is not None else None
        resent = resend_lost(
            bootstrap.get_context().session_factory,
            self.celery,
            idle_s=older_than,
            on_broker=on_broker,
        )
        if resent:
            self._report(f"resent {resent} lost callback{'' if resent == 1 else 's'}")

    def _callbacks_on_broker(self, older_than: float) -> set[str]:
        """Job ids with a callback message waiting, or held by a worker (a retry waiting out
        its backoff) for less than the longest backoff, an attempt and `older_than`."""
        assert self._layout is not None
        patience = MAX_BACKOFF_S + self.settings.callback_timeout_s + older_than
        now = time.time()
        return {
            str(message.args[0])
            for message in queued_messages(self._redis, self._layout, [QUEUE])
            if message.task == TASK
            and message.args
            and (not message.held or now - (message.held_since or 0.0) < patience)
        }

    def _connect(self) -> Celery:
        if self._prepare is not None:
            self._prepare()
        bootstrap.configure(self.settings)
        celery = create_app(self.settings)
        try:
            self._layout = layout_of(celery)
        except UnsupportedBrokerSetting as exc:
            self._report(
                f"cannot see which messages are queued ({exc}); resending every idle video's stage"
            )
        else:
            self._redis = redis.Redis.from_url(
                redis_url(self.settings.broker_url.get_secret_value()),
                socket_timeout=10.0,
                socket_connect_timeout=5.0,
            )
        return celery

    def _in_flight(self, older_than: float) -> set[tuple[str, str]]:
        """(stage, video or segment id) of each stage message waiting on its queue, or held
        by a worker for less than `older_than` seconds.

        A message held longer is taken as lost with its worker (killed, its node gone): kombu
        would put it back only after the visibility timeout (12 minutes), so it is resent,
        and the stage's guard makes the late copy harmless.
        """
        assert self._layout is not None
        stage_of = {task_name(stage): stage for stage in STAGE_QUEUES}
        now = time.time()
        return {
            (stage_of[message.task], str(message.args[0]))
            for message in queued_messages(self._redis, self._layout, QUEUES)
            if message.task in stage_of
            and message.queue == STAGE_QUEUES[stage_of[message.task]]
            and message.args
            and (not message.held or now - (message.held_since or 0.0) < older_than)
        }
