"""The inference batcher: a consumer of the `inference` queue that runs videos in batches.

Like Triton's dynamic batcher, it gathers messages until it holds `max_batch_size` of them
or the oldest has waited `max_wait_ms`, then runs them through `run_inference_batch` (one
claim, padded model calls, one commit) and only then acknowledges them. It reads the same
messages the per-video Celery task does (Celery protocol 2, JSON, `args=[video_id]`), so
producers and the reconciler do not know which one serves the queue.

Delivery guarantees are the broker's and the database's, as for every stage:

- a message is acknowledged only after its result is committed; the prefetch window is one
  batch, so a process holds at most `max_batch_size` unacknowledged messages;
- a process killed mid-batch leaves its messages unacknowledged: Redis hands them out again
  after the visibility timeout, and `oceanstream reconcile` resends any video still waiting
  in `inference` sooner;
- a redelivered or duplicate message finds its video already `done` and changes nothing
  (state moves are guarded, predictions are unique per video and model version);
- a graceful stop (SIGTERM) finishes the batch in hand; kombu returns whatever was
  prefetched and not processed to the queue when the channel closes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import weakref
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.batching import bucket_sizes, warm_up
from tasks.celery_tasks import RETRYABLE
from tasks.stages import RETRY, InferenceBatchReport, run_inference_batch

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


@dataclass
class Delivery:
    """A received inference message and what the batcher needs from it."""

    message: Any  # kombu.Message
    video_id: str
    received: float  # monotonic seconds
    sent_at: float | None


@dataclass
class _Running:
    """A batch handed to the runner thread."""

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
        queue: str = "inference",
    ) -> None:
        self.app = app
        self.context = context
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.buckets = bucket_sizes(max_batch_size)
        self.metrics = metrics
        self.model_refresh_s = model_refresh_s
        self.queue = next(q for q in app.conf.task_queues if q.name == queue)
        self._buffer: list[Delivery] = []
        self._stop = threading.Event()
        self._warmed: weakref.WeakSet[ModelBundle] = weakref.WeakSet()
        self._next_refresh = 0.0
        self._backoff = 0.0

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the batch in hand, then return from `serve` (safe from a signal handler)."""
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
        delay = 1.0
        while not self.stopping:
            with self.app.connection_for_read() as connection:
                errors = (*connection.connection_errors, *connection.channel_errors)
                try:
                    self._consume(connection)
                    delay = 1.0
                except errors as exc:
                    self._buffer.clear()  # unacknowledged: the broker hands them out again
                    log.warning("broker connection lost (%s); reconnecting in %.0f s", exc, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, 30.0)

    def _consume(self, connection: Any) -> None:
        """Gather the next batch while the previous one runs; settle each in this thread.

        kombu channels are not thread-safe, so receiving and acknowledging stay in this
        thread; one runner thread does the batch's database, storage and model work. The
        prefetch window is two batches: the one running and the one being gathered.
        """
        from kombu import Consumer

        channel = connection.channel()
        consumer = Consumer(
            channel,
            queues=[self.queue],
            callbacks=[self._on_message],
            on_decode_error=self._on_decode_error,
            accept=["json"],
            prefetch_count=2 * self.max_batch_size,
        )
        with consumer, ThreadPoolExecutor(1, thread_name_prefix="inference") as runner:
            running: _Running | None = None
            try:
                while not self.stopping:
                    if time.monotonic() >= self._next_refresh:
                        # Also under load: warming another version's shapes runs beside the
                        # batch in hand (compiled calls are thread-safe), once per version.
                        self._refresh_quietly()
                    batch = self.collect(connection, running.future if running else None)
                    finished = None
                    if running is not None and (batch or running.future.done()):
                        wait([running.future])
                        finished, running = running, None
                    if batch:
                        running = _Running(batch, time.monotonic(), runner.submit(self._run, batch))
                    if finished is not None:  # acknowledged while the next batch runs
                        self._settle(finished)
            finally:
                if running is not None:  # a stop request: finish the batch in hand
                    self._settle(running)

    def _refresh_quietly(self) -> None:
        try:
            self.refresh_models()
        except Exception as exc:  # serving the pinned versions goes on regardless
            log.warning("cannot load the active model version: %s", exc)

    # -- gathering ---------------------------------------------------------------------------

    def _on_message(self, body: Any, message: Any) -> None:
        headers = message.headers or {}
        try:
            video_id = video_id_of(body, headers)
        except ValueError as exc:
            self._reject(message, str(exc))
            return
        self._buffer.append(Delivery(message, video_id, time.monotonic(), _sent_at(headers)))

    def _on_decode_error(self, message: Any, exc: Exception) -> None:
        self._reject(message, f"cannot decode message: {exc}")

    def _reject(self, message: Any, why: str) -> None:
        # Nothing can be done with it; the database still knows every video's state.
        log.error("dropping a message on %s: %s", self.queue.name, why)
        message.ack()
        if self.metrics is not None:
            self.metrics.videos.labels("rejected").inc()

    def collect(self, connection: Any, running: Future[Any] | None = None) -> list[Delivery]:
        """Messages until the batch is full or its oldest waited `max_wait_ms`.

        While the `running` batch is still at work, gathering goes on past that deadline:
        the next batch could not start earlier anyway, and a fuller batch costs little
        more than a small one. With nothing received it returns an empty list after at
        most a second (at once when the running batch has finished, so it is settled
        without delay), so the loop can notice a stop request or a new model version.
        """
        idle_until = time.monotonic() + min(1.0, self.model_refresh_s)
        while not self.stopping and len(self._buffer) < self.max_batch_size:
            busy = running is not None and not running.done()
            if self._buffer:
                timeout = self._buffer[0].received + self.max_wait_s - time.monotonic()
            elif running is not None and not busy:
                break
            else:
                timeout = idle_until - time.monotonic()
            if busy:
                timeout = _POLL_WHILE_RUNNING_S
            elif timeout <= 0:
                break
            with contextlib.suppress(TimeoutError):
                connection.drain_events(timeout=timeout)
        batch, self._buffer = self._buffer, []
        return batch

    # -- processing --------------------------------------------------------------------------

    def _run(self, batch: list[Delivery]) -> tuple[InferenceBatchReport | BaseException, float]:
        """The batch's work, in the runner thread: claim, features, model, commit.

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
        for delivery in batch:
            if report.statuses.get(delivery.video_id) != RETRY:
                delivery.message.ack()
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
        for delivery in deliveries:
            delivery.message.requeue()
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
