"""The inference batcher: a consumer of the `inference` queue that runs segments in batches.

Like Triton's dynamic batcher, it gathers messages until it holds `max_batch_size` of them
or the oldest has waited `max_wait_ms`, then runs them through `run_inference_batch` (one
claim, padded model calls over every person of every segment, one commit) and only then
acknowledges them. Each message names one segment. It reads the same messages the
per-segment Celery task does (`workers.pool.messages`), so producers and the
reconciler do not know which one serves the queue. Each settled batch is logged, measured
and announced to Flower by `workers.pool.report`.

Messages are taken off Redis through `workers.pool.inbox.RedisInbox`: up to a batch per
round trip, recorded as unacknowledged in kombu's own keys, and acknowledged a batch at a time
(kombu's consumer spends three round trips per message, more than the model costs).

Delivery guarantees are the broker's and the database's, as for every stage:

- a message is acknowledged only after its result is committed; a process holds at most
  `batches_in_flight` + 1 batches of unacknowledged messages (those running and the one
  being gathered);
- a process killed mid-batch leaves its messages unacknowledged: they are restored to the
  queue after the visibility timeout (by any consumer of the broker, kombu's or this one),
  and `oceanstream reconcile` resends any segment still waiting in `inference` sooner;
- a redelivered or duplicate message finds its segment already `done` and changes nothing
  (state moves are guarded, predictions are unique per segment person and model version,
  and a video is aggregated once, by the finish that made its last segment final);
- a graceful stop (SIGTERM) finishes the batches in hand and puts whatever was gathered for
  the next one back at the head of the queue.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from core.model.batching import bucket_sizes, compile_buckets
from workers.broker.dead_letter_lists import dead_letters
from workers.broker.kombu_redis import layout_of, redis_url, restore_visible
from workers.pool.inbox import Received, RedisInbox
from workers.pool.messages import Delivery, delivery_of
from workers.pool.report import BatchReporter
from workers.pool.runs import RunningBatch, Settler, run_batch

if TYPE_CHECKING:
    from celery import Celery

    from core.bundles.bundle import ModelBundle
    from tasks.context import StageContext
    from workers.metrics import InferenceMetrics
    from workers.pool.events import PoolEvents

log = logging.getLogger("oceanstream.batcher")

# While a batch runs, how often the gathering loop looks whether it has finished.
_POLL_WHILE_RUNNING_S = 0.002
# How often messages unacknowledged past the visibility timeout are restored to their queue.
_RESTORE_EVERY_S = 60.0


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
        events: PoolEvents | None = None,
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
        # Refuses other brokers, and kombu settings the inbox cannot honour, up front.
        self.redis_url = redis_url(app.conf.broker_url)
        self.layout = layout_of(app)
        self._buffer: list[Delivery] = []
        self.inbox: RedisInbox  # set per broker connection by `serve`
        self._stop = threading.Event()
        self.reporter = BatchReporter(metrics, events)
        self.settler = Settler(self.reporter, metrics, self._stop)
        self._warmed: weakref.WeakSet[ModelBundle] = weakref.WeakSet()
        self._next_refresh = 0.0

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
            seconds = compile_buckets(
                bundle.predict, self.buckets, meta.num_frames, meta.static_dim, meta.dynamic_dim
            )
            self._warmed.add(bundle)
            if self.metrics is not None:
                self.metrics.model_info.labels(version).set(1)
            log.info("model %s warmed for batch sizes %s in %.1f s", version, self.buckets, seconds)
        return bundle

    def refresh_models(self) -> str:
        """Make sure the active model version is loaded and warm; returns it.

        Segments keep their video's version pinned at ingest, so this only moves the compile
        cost of a newly activated version off the path of its first batch. Called between
        batches.
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
        self.inbox = RedisInbox(client, self.queue.name, self.layout)
        next_restore = 0.0
        depth = self.batches_in_flight
        with ThreadPoolExecutor(depth, thread_name_prefix="inference") as runners:
            running: deque[RunningBatch] = deque()  # oldest first
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
                        self.reporter.started(batch)
                        future = runners.submit(run_batch, self.context, self.buckets, batch)
                        running.append(RunningBatch(batch, time.monotonic(), future))
                    for done in finished:  # acknowledged while the next batch runs
                        self.settler.settle(done, self.inbox)
            finally:
                while running:  # a stop request: finish the batches in hand
                    self.settler.settle(running.popleft(), self.inbox)
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
        """Buffer the inference messages among `taken`; dead-letter (and acknowledge) the rest.

        A payload that is not UTF-8, not JSON, not an envelope or not an inference message
        can never run: it goes to the queue's dead-letter list (one log line each), and the
        valid messages of the same take go on.
        """
        now = time.monotonic()
        dropped: list[tuple[Received, str]] = []
        for message in taken:
            try:
                self._buffer.append(delivery_of(message, now))
            except Exception as exc:  # any message at all: none may stop the pool
                reason = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
                dropped.append((message, reason))
        if dropped:
            # Recorded before acknowledged: a crash in between dead-letters it twice at worst.
            dead_letters(self.inbox.client, self.queue.name, [(m.payload, r) for m, r in dropped])
            self.inbox.ack([m for m, _ in dropped])
            if self.metrics is not None:
                self.metrics.videos.labels("rejected").inc(len(dropped))

    def collect(
        self, running: Future[Any] | None = None, *, slots_full: bool = True
    ) -> list[Delivery]:
        """Messages (one segment each) until the batch is full or its oldest waited
        `max_wait_ms`.

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
