"""Celery worker and task events from the inference pool, so Flower shows it like a worker.

The pool is no Celery worker (it takes messages through `RedisInbox`), so nothing would tell
Flower it exists. `PoolEvents` sends what a Celery worker sends, through Celery's public
event dispatcher (`app.events.Dispatcher`):

- `worker-online` at start, `worker-heartbeat` every `heartbeat_s` seconds (from a thread of
  its own, with the number of videos in hand as `active`), `worker-offline` at stop;
- per video, `task-received` and `task-started` when its batch starts, then
  `task-succeeded` (result `'done'`, or `'skipped'` when there was nothing to do),
  `task-failed` (the video failed; its error is the exception) or `task-retried` (an
  outage; the message goes back to the queue), each with the message's task id and the task name
  `oceanstream.inference`. A batch's task events go out as one message.

Events are monitoring only: when the broker cannot take them they are dropped, with one
warning per outage, and the pool goes on. Remote control (`inspect`, rate limits, revokes,
shutdown) is not answered by the pool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    from workers.pool.messages import Delivery

log = logging.getLogger("oceanstream.batcher")

SOFTWARE = "oceanstream-inference-pool"
_RECONNECT_EVERY_S = 5.0


def pool_hostname() -> str:
    """The node name the pool reports: `inference-pool-<pid>@<host>` (one per process)."""
    return f"inference-pool-{os.getpid()}@{socket.gethostname()}"


class PoolEvents:
    """Sends the pool's worker and task events; safe from the consumer and heartbeat threads."""

    def __init__(self, app: Celery, hostname: str | None = None, heartbeat_s: float = 2.0) -> None:
        self.app = app
        self.hostname = hostname or pool_hostname()
        self.heartbeat_s = heartbeat_s
        self.active = 0  # videos in hand (in running batches)
        self.processed = 0
        self._lock = threading.Lock()
        self._dispatcher: Any = None
        self._connection: Any = None
        self._retry_at = 0.0
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the worker --------------------------------------------------------------------------

    def start(self) -> None:
        """`worker-online`, then heartbeats from a daemon thread until `stop`."""
        self._send("worker-online", **self._worker_fields())
        self._thread = threading.Thread(target=self._beat, name="pool-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """`worker-offline`, and the broker connection closed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.heartbeat_s + 5)
        self._send("worker-offline", **self._worker_fields())
        with self._lock:
            self._close()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._send("worker-heartbeat", **self._worker_fields())

    def _worker_fields(self) -> dict[str, Any]:
        from celery import __version__

        return {
            "freq": self.heartbeat_s,
            "active": self.active,
            "processed": self.processed,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "sw_ident": SOFTWARE,
            "sw_ver": __version__,
            "sw_sys": platform.system(),
        }

    # -- the tasks ---------------------------------------------------------------------------

    def batch_started(self, batch: Iterable[Delivery]) -> None:
        """`task-received` and `task-started` for each video of a batch about to run."""
        batch = list(batch)
        self.active += len(batch)
        events: list[tuple[str, dict[str, Any]]] = []
        for d in batch:
            if d.task_id is None:
                continue
            events.append(
                (
                    "task-received",
                    {
                        "uuid": d.task_id,
                        "name": "oceanstream.inference",
                        "args": repr([d.video_id]),
                        "kwargs": "{}",
                        "root_id": d.task_id,
                        "parent_id": None,
                        "retries": 0,
                        "eta": None,
                        "expires": None,
                    },
                )
            )
            events.append(("task-started", {"uuid": d.task_id}))  # the dispatcher adds pid
        self._send_tasks(events)

    def batch_finished(
        self,
        batch: list[Delivery],
        outcomes: list[str],
        errors: dict[str, str],
        runtime: float,
    ) -> None:
        """Each message's end: its outcome (done, failed, skipped or retried), in batch order."""
        self.active = max(0, self.active - len(batch))
        self.processed += len(batch)
        events: list[tuple[str, dict[str, Any]]] = []
        for d, outcome in zip(batch, outcomes, strict=True):
            if d.task_id is None:
                continue
            error = errors.get(d.video_id, "")
            if outcome == "retried":
                events.append(("task-retried", {"uuid": d.task_id, "exception": error}))
            elif outcome == "failed":
                events.append(
                    ("task-failed", {"uuid": d.task_id, "exception": error, "traceback": ""})
                )
            else:
                fields = {"uuid": d.task_id, "result": repr(outcome), "runtime": runtime}
                events.append(("task-succeeded", fields))
        self._send_tasks(events)

    # -- sending -----------------------------------------------------------------------------

    def _send_tasks(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        """A batch's task events as one message (Celery's buffered `task.multi`)."""
        if not events:
            return
        with self._lock:
            dispatcher = self._ready()
            if dispatcher is None:
                return
            try:
                for kind, fields in events:
                    dispatcher.send(kind, **fields)
                dispatcher.flush()
                self._failing = False
            except Exception as exc:
                self._failed(exc)

    def _send(self, kind: str, **fields: Any) -> None:
        with self._lock:
            dispatcher = self._ready()
            if dispatcher is None:
                return
            try:
                dispatcher.send(kind, **fields)
                self._failing = False
            except Exception as exc:
                self._failed(exc)

    def _ready(self) -> Any:
        """The dispatcher, made again after a failure (at most every few seconds)."""
        if self._dispatcher is None and time.monotonic() >= self._retry_at:
            try:
                self._connection = self.app.connection_for_write()
                self._dispatcher = self.app.events.Dispatcher(
                    self._connection,
                    hostname=self.hostname,
                    enabled=True,
                    buffer_while_offline=False,
                    buffer_group=["task"],
                    buffer_limit=1_000_000,  # flushed per batch
                )
            except Exception as exc:
                self._failed(exc)
        return self._dispatcher

    def _failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("cannot send events for Flower (%s); they are dropped meanwhile", exc)
        self._failing = True
        self._retry_at = time.monotonic() + _RECONNECT_EVERY_S
        self._close()

    def _close(self) -> None:
        dispatcher, connection = self._dispatcher, self._connection
        self._dispatcher = self._connection = None
        for closable in (dispatcher, connection):
            if closable is not None:
                with contextlib.suppress(Exception):  # already broken: nothing to release
                    closable.close()
