"""Running a gathered batch (in a runner thread) and settling it (in the consumer thread).

Settling acknowledges each message whose outcome is committed and returns the rest to the
queue after a growing pause (an outage rarely ends at once); `workers.pool.report` logs,
measures and announces what happened.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tasks.celery_tasks import RETRYABLE
from tasks.stages import RETRY, InferenceBatchReport, run_inference_batch

if TYPE_CHECKING:
    from tasks.context import StageContext
    from workers.metrics import InferenceMetrics
    from workers.pool.inbox import RedisInbox
    from workers.pool.messages import Delivery
    from workers.pool.report import BatchReporter

log = logging.getLogger("oceanstream.batcher")

Outcome = tuple[InferenceBatchReport | BaseException, float]


@dataclass
class RunningBatch:
    """A batch handed to a runner thread."""

    batch: list[Delivery]
    began: float  # monotonic
    future: Future[Outcome]


def run_batch(context: StageContext, buckets: Sequence[int], batch: list[Delivery]) -> Outcome:
    """The batch's work, in a runner thread: claim its segments, read their persons'
    features, run the model, commit.

    Returns the report (or the error, for the consumer thread to settle) and its seconds.
    """
    sent = {d.segment_id: d.sent_at for d in batch if d.sent_at is not None}
    started = time.perf_counter()
    try:
        report: InferenceBatchReport | BaseException = run_inference_batch(
            context,
            [d.segment_id for d in batch],
            buckets=buckets,
            sent_at=sent,
            started_at=time.time(),
        )
    except Exception as exc:
        report = exc
    return report, time.perf_counter() - started


class Settler:
    """Settles finished batches; keeps the back-off between requeues of an outage."""

    def __init__(
        self, reporter: BatchReporter, metrics: InferenceMetrics | None, stop: threading.Event
    ) -> None:
        self.reporter = reporter
        self.metrics = metrics
        self._stop = stop
        self._backoff = 0.0

    def settle(self, running: RunningBatch, inbox: RedisInbox) -> None:
        """Acknowledge each message of a finished batch, or return it to the queue."""
        batch, (report, seconds) = running.batch, running.future.result()
        if isinstance(report, BaseException):
            if isinstance(report, RETRYABLE):
                log.warning("inference batch of %d hit an outage: %s", len(batch), report)
            else:
                # Bounded: each delivery is counted; a segment delivered too often is failed.
                log.error("inference batch of %d failed", len(batch), exc_info=report)
            self.reporter.broke(batch, report, seconds)
            self.requeue(batch, inbox)
            return
        retry = [d for d in batch if report.statuses.get(d.segment_id) == RETRY]
        inbox.ack([d.message for d in batch if report.statuses.get(d.segment_id) != RETRY])
        self.reporter.settled(batch, report, running.began, seconds)
        if retry:
            self.requeue(retry, inbox)
        else:
            self._backoff = 0.0

    def requeue(self, deliveries: list[Delivery], inbox: RedisInbox) -> None:
        """Return messages to the queue after a growing pause (an outage rarely ends at once)."""
        self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
        log.warning("%d messages go back to the queue in %.1f s", len(deliveries), self._backoff)
        self._stop.wait(self._backoff)
        inbox.requeue([d.message for d in deliveries])
        if self.metrics is not None:
            self.metrics.videos.labels("retried").inc(len(deliveries))
