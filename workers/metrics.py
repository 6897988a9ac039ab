"""Prometheus metrics: what an autoscaler and an operator need from the workers.

Every worker started with `OCEANSTREAM_METRICS_PORT` serves `/metrics` over HTTP:

- `oceanstream_queue_length{queue}`: messages waiting in each pipeline queue (a queue with
  no consumer is the one to scale from zero), read from Redis by a background thread every
  `REFRESH_S` seconds: a scrape reports the last values read and never touches Redis, so
  scrapes, however many, cost the broker one round trip per interval;
- `oceanstream_queue_length_age_seconds`: how old those values are (it grows while Redis
  cannot be read).

The exporter has no authentication: it binds 127.0.0.1 unless `OCEANSTREAM_METRICS_ADDRESS`
says otherwise (a pod binds its own IP).

The inference pool adds, per process:

- `oceanstream_inference_batch_size`: videos per model call (histogram);
- `oceanstream_inference_queue_delay_seconds`: from a video's message being sent (or, if
  the sender gave no time, from the video's move to `inference`) to the start of its batch;
- `oceanstream_inference_batch_wait_seconds`: from a batch's first message being received to
  the batch's start (at most `OCEANSTREAM_MAX_WAIT_MS` by construction);
- `oceanstream_inference_batch_seconds`, `oceanstream_inference_model_call_seconds`: time
  to run a batch (claim, features, model calls, commit) and one model call;
- `oceanstream_inference_videos_total{outcome}`: done, failed, skipped (nothing to do),
  retried, rejected (not an inference message); throughput is its rate;
- `oceanstream_inference_batches_total`, `oceanstream_inference_model_info{version}`.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from workers.broker.kombu_redis import KombuRedisLayout, redis_url

log = logging.getLogger("oceanstream.metrics")

_DELAY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
_CALL_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.25, 0.5, 1.0)


REFRESH_S = 5.0


class QueueLengthCollector(Collector):
    """`oceanstream_queue_length{queue}` from a cache that `start()` refreshes on a timer."""

    def __init__(
        self,
        broker_url: str,
        queues: Sequence[str],
        layout: KombuRedisLayout | None = None,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.broker_url = broker_url
        self.queues = tuple(queues)
        self.layout = layout or KombuRedisLayout()
        self.refresh_s = refresh_s
        self._client: Any = None
        self._last: tuple[dict[str, int], float] | None = None  # (lengths, monotonic time)
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def readable(self) -> bool:
        return self.broker_url.startswith(("redis://", "rediss://", "redis+socket://"))

    def lengths(self) -> dict[str, int]:
        """Each queue's length, read from Redis now in one round trip."""
        import redis

        if self._client is None:
            self._client = redis.Redis.from_url(
                redis_url(self.broker_url), socket_timeout=2.0, socket_connect_timeout=2.0
            )
        pipe = self._client.pipeline(transaction=False)
        for queue in self.queues:
            for name in self.layout.queue_lists(queue):
                pipe.llen(name)
        counts = iter(pipe.execute())
        steps = len(self.layout.priority_steps)
        return {queue: sum(next(counts) for _ in range(steps)) for queue in self.queues}

    def refresh(self) -> None:
        """Read the lengths into the cache; on failure keep the last values (they age)."""
        try:
            self._last = (self.lengths(), time.monotonic())
        except Exception as exc:  # the exporter must outlive a broker outage
            if not self._failing:
                log.warning("cannot read queue lengths from the broker: %s", exc)
            self._failing = True
        else:
            if self._failing:
                log.info("queue lengths are read from the broker again")
            self._failing = False

    def start(self) -> QueueLengthCollector:
        """Refresh now and then every `refresh_s` seconds, from a daemon thread."""
        if self.readable and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="queue-lengths", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _run(self) -> None:
        while True:
            self.refresh()
            if self._stop.wait(self.refresh_s):
                return

    def collect(self) -> Iterable[GaugeMetricFamily]:
        lengths = GaugeMetricFamily(
            "oceanstream_queue_length", "Messages waiting in a pipeline queue.", labels=["queue"]
        )
        age = GaugeMetricFamily(
            "oceanstream_queue_length_age_seconds",
            "Seconds since the queue lengths were last read from the broker.",
        )
        last = self._last
        if last is not None:
            values, read_at = last
            for queue, length in values.items():
                lengths.add_metric([queue], length)
            age.add_metric([], time.monotonic() - read_at)
        yield lengths
        yield age

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return []


class InferenceMetrics:
    """The inference pool's metrics, on a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None, max_batch_size: int = 32) -> None:
        self.registry = registry or CollectorRegistry()
        sizes = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, max_batch_size})
        self.batch_size = Histogram(
            "oceanstream_inference_batch_size",
            "Videos per model call.",
            buckets=[s for s in sizes if s <= max_batch_size],
            registry=self.registry,
        )
        self.queue_delay = Histogram(
            "oceanstream_inference_queue_delay_seconds",
            "From a video's message being sent to the start of its batch.",
            buckets=_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.batch_wait = Histogram(
            "oceanstream_inference_batch_wait_seconds",
            "From a batch's first message being received to the batch's start.",
            buckets=_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "oceanstream_inference_batch_seconds",
            "Time to run one batch: claim, features, model calls, commit.",
            buckets=_DELAY_BUCKETS,
            registry=self.registry,
        )
        self.model_call_seconds = Histogram(
            "oceanstream_inference_model_call_seconds",
            "Time of one padded model call.",
            buckets=_CALL_BUCKETS,
            registry=self.registry,
        )
        self.videos = Counter(
            "oceanstream_inference_videos",
            "Inference messages handled, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.batches = Counter(
            "oceanstream_inference_batches", "Batches processed.", registry=self.registry
        )
        self.model_info = Gauge(
            "oceanstream_inference_model_info",
            "1 for each model version this process has loaded and warmed.",
            ["version"],
            registry=self.registry,
        )
        for outcome in ("done", "failed", "skipped", "retried", "rejected"):
            self.videos.labels(outcome)


class StorageMetrics:
    """`oceanstream_storage_read_bytes_total{stage}`: bytes a stage read from the store.

    Ingest reads a video's header and index, a segment's sampling its index and window: per
    segment, a rate that grows with the length of the videos means some read is not ranged.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.read_bytes = Counter(
            "oceanstream_storage_read_bytes",
            "Bytes read from the artifact store, by stage.",
            ["stage"],
            registry=self.registry,
        )

    def count_read(self, stage: str, count: int) -> None:
        self.read_bytes.labels(stage=stage).inc(count)


@functools.cache
def storage_metrics() -> StorageMetrics:
    """This process's storage counters (built on first use, never at import)."""
    return StorageMetrics()


def start_exporter(registry: CollectorRegistry, port: int, address: str = "127.0.0.1") -> int:
    """Serve `registry` on `http://address:port/metrics` from a daemon thread; returns the port."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=address, registry=registry)
    bound = int(server.server_port)
    log.info("metrics on http://%s:%d/metrics", address, bound)
    return bound
