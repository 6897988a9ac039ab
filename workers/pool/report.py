"""What the pool says about each batch it settles: a log line, metrics, Flower's events.

One INFO line per batch, e.g. `batch of 12: 11 done, 1 failed in 0.084 s (model 0.031 s)`,
gives its size in messages (segments), each outcome's count and its time (the model calls'
share in brackets). The `oceanstream_inference_videos_total` counter keeps its name; it counts
segment messages by outcome, and `oceanstream_inference_batch_size` counts model rows (one
per person of each segment).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tasks.stages import RETRY

if TYPE_CHECKING:
    from tasks.stages import InferenceBatchReport
    from workers.metrics import InferenceMetrics
    from workers.pool.events import PoolEvents
    from workers.pool.messages import Delivery

log = logging.getLogger("oceanstream.batcher")

OUTCOMES = ("done", "failed", "skipped", "retried")


def outcomes_of(batch: list[Delivery], report: InferenceBatchReport) -> list[str]:
    """Each message's outcome: done, failed, retried, or skipped (nothing to do, a duplicate).

    Messages carry segment ids; a segment's outcome counts once, on its first message.
    """
    outcomes = []
    seen: set[str] = set()
    for delivery in batch:
        status = report.statuses.get(delivery.segment_id)
        if status == RETRY:  # every message of the segment goes back
            outcomes.append("retried")
        elif status in ("done", "failed") and delivery.segment_id not in seen:
            outcomes.append(str(status))
        else:
            outcomes.append("skipped")
        seen.add(delivery.segment_id)
    return outcomes


def batch_line(size: int, counts: dict[str, int], seconds: float, model_s: float | None) -> str:
    """`batch of 12: 11 done, 1 failed in 0.084 s (model 0.031 s)`."""
    parts = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts.get(o))
    model = f" (model {model_s:.3f} s)" if model_s is not None else ""
    return f"batch of {size}: {parts or 'nothing'} in {seconds:.3f} s{model}"


class BatchReporter:
    """Logs, measures and announces (to Flower) each settled batch."""

    def __init__(self, metrics: InferenceMetrics | None, events: PoolEvents | None) -> None:
        self.metrics = metrics
        self.events = events

    def started(self, batch: list[Delivery]) -> None:
        if self.events is not None:
            self.events.batch_started(batch)

    def settled(
        self, batch: list[Delivery], report: InferenceBatchReport, began: float, seconds: float
    ) -> None:
        """A batch that ran: its line, its metrics, each segment's end event."""
        outcomes = outcomes_of(batch, report)
        counts = {o: outcomes.count(o) for o in OUTCOMES}
        model_s = sum(call.seconds for call in report.calls)
        log.info(batch_line(len(batch), counts, seconds, model_s if report.calls else None))
        for segment_id, error in report.errors.items():
            log.info("segment %s: %s", segment_id, error)
        if self.metrics is not None:
            self._observe(batch, report, began, seconds, counts)
        if self.events is not None:
            self.events.batch_finished(batch, outcomes, report.errors, seconds)

    def broke(self, batch: list[Delivery], error: BaseException, seconds: float) -> None:
        """A batch that raised: every message goes back to the queue."""
        log.info(batch_line(len(batch), {"retried": len(batch)}, seconds, None))
        if self.events is not None:
            errors = {d.segment_id: f"{type(error).__name__}: {error}" for d in batch}
            self.events.batch_finished(batch, ["retried"] * len(batch), errors, seconds)

    def _observe(
        self,
        batch: list[Delivery],
        report: InferenceBatchReport,
        began: float,
        seconds: float,
        counts: dict[str, int],
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
        for outcome in ("done", "failed", "skipped"):
            if counts[outcome]:
                metrics.videos.labels(outcome).inc(counts[outcome])
        metrics.batch_seconds.observe(seconds)
