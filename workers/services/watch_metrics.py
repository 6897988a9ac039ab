"""The Prometheus metrics of `oceanstream watch`, in a registry of the watcher's own (served
on `OCEANSTREAM_METRICS_PORT` when it is set)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 45, 60, 90, 120, 300, 600)


class WatchMetrics:
    """The watcher's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.latency = Histogram(
            "oceanstream_watch_segment_latency_seconds",
            "From the end of a segment's window in the stream to its stored result.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.segments = Counter(
            "oceanstream_watch_segments_total",
            "Segments of watched sources by outcome (cut, done, no_face, failed).",
            ["outcome"],
            registry=self.registry,
        )
        self.behind = Gauge(
            "oceanstream_watch_behind_seconds",
            "How long the oldest segment without a result has waited past its window's end.",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "oceanstream_watch_backlog_segments",
            "Segments cut and not yet final.",
            registry=self.registry,
        )
        self.gaps = Counter(
            "oceanstream_watch_gaps_total",
            "Times a watched source dropped and came back.",
            registry=self.registry,
        )
