"""The inference batcher: a consumer of the `inference` queue that runs videos in batches.

Like Triton's dynamic batcher, it gathers messages until it holds `max_batch_size` of them
or the oldest has waited `max_wait_ms`, then runs them through `run_inference_batch` (one
claim, padded model calls, one commit) and only then acknowledges them. It reads the same
messages the per-video Celery task does (Celery protocol 2, JSON, `args=[video_id]`), so
producers and the reconciler do not know which one serves the queue.

Messages are taken off Redis through `workers.redis_inbox.RedisInbox`: up to a batch per
round trip, recorded as unacknowledged in kombu's own keys, and acknowledged a batch at a time
(kombu's consumer spends three round trips per message, more than the model costs).

Delivery guarantees are the broker's and the database's, as for every stage:

- a message is acknowledged only after its result is committed; a process holds at most
  `batches_in_flight` + 1 batches of unacknowledged messages (those running and the one
  being gathered);
- a process killed mid-batch leaves its messages unacknowledged: they are restored to the
  queue after the visibility timeout (by any consumer of the broker, kombu's or this one),
  and `oceanstream reconcile` resends any video still waiting in `inference` sooner;
- a redelivered or duplicate message finds its video already `done` and changes nothing
  (state moves are guarded, predictions are unique per video and model version);
- a graceful stop (SIGTERM) finishes the batches in hand and puts whatever was gathered for
  the next one back at the head of the queue.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.batching import bucket_sizes, warm_up
from tasks.celery_tasks import RETRYABLE
from tasks.stages import RETRY, InferenceBatchReport, run_inference_batch
from workers.redis_inbox import Received, RedisInbox, restore_visible

if TYPE_CHECKING:
    from celery import Celery

    from core.bundle import ModelBundle
    from tasks.context import StageContext
    from workers.metrics import InferenceMetrics

log = logging.getLogger("oceanstream.batcher")

TASK_NAME = "oceanstream.inference"
#: Optional message header: the epoch second the sender sent the message (for queue delay).
SENT_AT_HEADER = "oceanstream_sent_at"


# While a batch runs, how often the gathering loop looks whether it has finished.
_POLL_WHILE_RUNNING_S = 0.002
# How often messages unacknowledged past the visibility timeout are restored to their queue.
_RESTORE_EVERY_S = 60.0


@dataclass
class Delivery:
    """A received inference message and what the batcher needs from it."""

    message: Received
    video_id: str
    received: float  # monotonic seconds
    sent_at: float | None


@dataclass
class _Running:
    """A batch handed to a runner thread."""

    batch: list[Delivery]
    began: float  # monotonic
    future: Future[Any]


def video_id_of(body: Any, headers: dict[str, Any]) -> str:
    """The video id an `oceanstream.inference` message carries, or ValueError saying why not.

    Celery protocol 2 puts the task name in the headers and `[args, kwargs, embed]` in the
    body; protocol 1 put everything in a dict body.
    """
    if isinstance(body, dict):  # protocol 1
        task, args = body.get("task"), body.get("args")
    elif isinstance(body, list | tuple) and len(body) == 3:
        task, args = headers.get("task"), body[0]
    else:
        raise ValueError(f"not a Celery task message: {str(body)[:200]}")
    if task != TASK_NAME:
        raise ValueError(f"expected task {TASK_NAME!r}, got {task!r}")
    if not isinstance(args, list | tuple) or len(args) != 1 or not isinstance(args[0], str):
        raise ValueError(f"expected args [video_id], got {args!r}")
    return args[0]


def _sent_at(headers: dict[str, Any]) -> float | None:
    value = headers.get(SENT_AT_HEADER)
    try:
        sent = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return sent if sent is not None and math.isfinite(sent) else None


class InferenceBatcher:
    """Consumes the inference queue in batches until `stop()`; one per process (device)."""

    def __init__(
        self,
        app: Celery,
        context: StageContext,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 20.0,
        metrics: InferenceMetrics | None = None,
        model_refresh_s: float = 5.0,
        batches_in_flight: int = 2,
        queue: str = "inference",
    ) -> None:
        if batches_in_flight < 1:
            raise ValueError(f"batches_in_flight must be at least 1, got {batches_in_flight}")
        self.app = app
        self.context = context
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.buckets = bucket_sizes(max_batch_size)
        self.metrics = metrics
        self.model_refresh_s = model_refresh_s
        self.batches_in_flight = batches_in_flight
        self.queue = next(q for q in app.conf.task_queues if q.name == queue)
        self.redis_url = redis_url(app.conf.broker_url)  # refuses other brokers up front
        self._buffer: list[Delivery] = []
        self.inbox: RedisInbox  # set per broker connection by `serve`
        self._stop = threading.Event()
        self._warmed: weakref.WeakSet[ModelBundle] = weakref.WeakSet()
        self._next_refresh = 0.0
        self._backoff = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batches in hand, then return from `serve` (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def warm_model(self, version: str) -> ModelBundle:
        """Load `version` (cached per process) and compile every bucket's shape once."""
        bundle = self.context.load_bundle(version)
        if bundle not in self._warmed:
            meta = bundle.metadata
            seconds = warm_up(
                bundle.predict, self.buckets, meta.num_frames, meta.static_dim, meta.dynamic_dim
            )
            self._warmed.add(bundle)
            if self.metrics is not None:
                self.metrics.model_info.labels(version).set(1)
            log.info("model %s warmed for batch sizes %s in %.1f s", version, self.buckets, seconds)
        return bundle

    def refresh_models(self) -> str:
        """Make sure the active model version is loaded and warm; returns it.

        Videos keep the version pinned at ingest, so this only moves the compile cost of a
        newly activated version off the path of its first batch. Called between batches.
        """
        self._next_refresh = time.monotonic() + self.model_refresh_s
        version = self.context.active_version()
        self.warm_model(version)
        return version

    def serve(self) -> None:
        """Consume until `stop()`, reconnecting (with back-off) when the broker goes away."""
        import redis

        errors = (redis.ConnectionError, redis.TimeoutError)
        delay = 1.0
        while not self.stopping:
            client = redis.Redis.from_url(self.redis_url)
            try:
                self._consume(client)
                delay = 1.0
            except errors as exc:
                # Unacknowledged: restored after the visibility timeout, or by `reconcile`.
                self._buffer.clear()
                log.warning("broker connection lost (%s); reconnecting in %.0f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                client.close()

    def _consume(self, client: Any) -> None:
        """Gather the next batch while earlier ones run; settle each in this thread.

        The broker is used from this thread only. Runner threads, `batches_in_flight` of
        them, do the batches' database, storage and model work: while one batch waits on
        the database or storage, the next one's work goes on (compiled model calls and
        sessions are safe across threads; rows are locked in id order, so overlapping
        batches cannot deadlock).
        """
        self.inbox = RedisInbox(client, self.queue.name)
        next_restore = 0.0
        depth = self.batches_in_flight
        with ThreadPoolExecutor(depth, thread_name_prefix="inference") as runners:
            running: deque[_Running] = deque()  # oldest first
            try:
                while not self.stopping:
                    if time.monotonic() >= self._next_refresh:
                        # Also under load: warming another version's shapes runs beside the
                        # batches in hand (compiled calls are thread-safe), once per version.
                        self._refresh_quietly()
                    if time.monotonic() >= next_restore:
                        self._restore_quietly()
                        next_restore = time.monotonic() + _RESTORE_EVERY_S
                    oldest = running[0].future if running else None
                    batch = self.collect(oldest, slots_full=len(running) >= depth)
                    finished = []
                    while running and running[0].future.done():
                        finished.append(running.popleft())
                    if batch:
                        if len(running) >= depth:
                            wait([running[0].future])
                            finished.append(running.popleft())
                        future = runners.submit(self._run, batch)
                        running.append(_Running(batch, time.monotonic(), future))
                    for done in finished:  # acknowledged while the next batch runs
                        self._settle(done)
            finally:
                while running:  # a stop request: finish the batches in hand
                    self._settle(running.popleft())
                if self._buffer:  # gathered for a batch that will not run here
                    self.inbox.requeue([d.message for d in self._buffer], front=True)
                    self._buffer.clear()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh_models()
        except Exception as exc:  # serving the pinned versions goes on regardless
            log.warning("cannot load the active model version: %s", exc)

    def _restore_quietly(self) -> None:
        try:
            with self.app.connection_for_read() as connection:
                self.queue(connection.default_channel).declare()  # the binding restores use
                restore_visible(connection, limit=10 * self.max_batch_size)
        except Exception as exc:  # the next round, or any other consumer, will do it
            log.warning("cannot restore unacknowledged messages: %s", exc)

    # -- gathering ---------------------------------------------------------------------------

    def _accept(self, taken: list[Received]) -> None:
        """Buffer the inference messages among `taken`; drop (acknowledge) the others."""
        now = time.monotonic()
        dropped = []
        for message in taken:
            headers = message.headers or {}
            try:
                if message.error is not None:
                    raise ValueError(message.error)
                video_id = video_id_of(message.body, headers)
            except ValueError as exc:
                # Nothing can be done with it; the database still knows every video's state.
                log.error("dropping a message on %s: %s", self.queue.name, exc)
                dropped.append(message)
                continue
            self._buffer.append(Delivery(message, video_id, now, _sent_at(headers)))
        if dropped:
            self.inbox.ack(dropped)
            if self.metrics is not None:
                self.metrics.videos.labels("rejected").inc(len(dropped))

    def collect(
        self, running: Future[Any] | None = None, *, slots_full: bool = True
    ) -> list[Delivery]:
        """Messages until the batch is full or its oldest waited `max_wait_ms`.

        `running` is the oldest batch still in hand. While it is at work and no slot is free
        for another (`slots_full`), gathering goes on past that deadline: the next batch
        could not start earlier anyway, and a fuller batch costs little more than a small
        one. With nothing received it returns an empty list after at most a second (at once
        when the running batch has finished, so it is settled without delay), so the loop
        can notice a stop request or a new model version.
        """
        idle_until = time.monotonic() + min(1.0, self.model_refresh_s)
        while not self.stopping and len(self._buffer) < self.max_batch_size:
            self._accept(self.inbox.take(self.max_batch_size - len(self._buffer)))
            if len(self._buffer) >= self.max_batch_size:
                break
            now = time.monotonic()
            if self._buffer:
                timeout = self._buffer[0].received + self.max_wait_s - now
                if slots_full and running is not None and not running.done():
                    timeout = _POLL_WHILE_RUNNING_S  # no slot yet: gather on
                elif timeout <= 0:
                    break
            elif running is not None and running.done():
                break
            else:
                timeout = idle_until - now
                if running is not None:  # look again soon, to settle it when it ends
                    timeout = min(timeout, _POLL_WHILE_RUNNING_S)
                if timeout <= 0:
                    break
            self.inbox.wait(timeout)
        batch, self._buffer = self._buffer, []
        return batch

    # -- processing --------------------------------------------------------------------------

    def _run(self, batch: list[Delivery]) -> tuple[InferenceBatchReport | BaseException, float]:
        """The batch's work, in a runner thread: claim, features, model, commit.

        Returns the report (or the error, for the consumer thread to settle) and its seconds.
        """
        sent = {d.video_id: d.sent_at for d in batch if d.sent_at is not None}
        started = time.perf_counter()
        try:
            report: InferenceBatchReport | BaseException = run_inference_batch(
                self.context,
                [d.video_id for d in batch],
                buckets=self.buckets,
                sent_at=sent,
                started_at=time.time(),
            )
        except Exception as exc:
            report = exc
        return report, time.perf_counter() - started

    def _settle(self, running: _Running) -> None:
        """Acknowledge each message of a finished batch, or return it to the queue."""
        batch, (report, seconds) = running.batch, running.future.result()
        if isinstance(report, RETRYABLE):
            log.warning("inference batch of %d hit an outage: %s", len(batch), report)
            self._requeue(batch)
            return
        if isinstance(report, BaseException):
            # Bounded: each delivery is counted, and a video delivered too often is failed.
            log.error("inference batch of %d failed", len(batch), exc_info=report)
            self._requeue(batch)
            return
        retry = [d for d in batch if report.statuses.get(d.video_id) == RETRY]
        self.inbox.ack([d.message for d in batch if report.statuses.get(d.video_id) != RETRY])
        for video_id, error in report.errors.items():
            log.info("video %s: %s", video_id, error)
        if retry:
            self._requeue(retry)
        else:
            self._backoff = 0.0
        if self.metrics is not None:
            self._observe(batch, report, running.began, seconds)

    def _requeue(self, deliveries: list[Delivery]) -> None:
        """Return messages to the queue after a growing pause (an outage rarely ends at once)."""
        self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
        log.warning("%d messages go back to the queue in %.1f s", len(deliveries), self._backoff)
        self._stop.wait(self._backoff)
        self.inbox.requeue([d.message for d in deliveries])
        if self.metrics is not None:
            self.metrics.videos.labels("retried").inc(len(deliveries))

    def _observe(
        self, batch: list[Delivery], report: InferenceBatchReport, began: float, seconds: float
    ) -> None:
        metrics = self.metrics
        assert metrics is not None
        metrics.batches.inc()
        metrics.batch_wait.observe(max(0.0, began - batch[0].received))
        for call in report.calls:
            metrics.batch_size.observe(call.rows)
            metrics.model_call_seconds.observe(call.seconds)
        for delay in report.queue_delays.values():
            metrics.queue_delay.observe(delay)
        outcomes = {"done": 0, "failed": 0, "skipped": 0}
        seen: set[str] = set()
        for delivery in batch:
            status = report.statuses.get(delivery.video_id)
            if delivery.video_id in seen:  # a second message for the same video
                status = None
            seen.add(delivery.video_id)
            if status in ("done", "failed"):
                outcomes[status] += 1
            elif status is None:
                outcomes["skipped"] += 1
        for outcome, count in outcomes.items():
            if count:
                metrics.videos.labels(outcome).inc(count)
        metrics.batch_seconds.observe(seconds)


def redis_url(broker_url: str) -> str:
    """The redis-py URL of a kombu Redis broker URL; ValueError for any other broker."""
    scheme, sep, rest = broker_url.partition("://")
    if scheme in ("redis", "rediss"):
        return broker_url
    if scheme == "redis+socket":
        return f"unix://{rest}"
    raise ValueError(
        f"the inference pool consumes from a Redis broker (redis://, rediss://, "
        f"redis+socket://), not {scheme + sep or broker_url!r}"
    )
