"""The batcher's consumer loop against a real redis-server, with SQLite and file storage.

The batcher runs in a thread of the test process (the worker processes are covered by
tests/integration/test_inference_pool.py); messages are sent as producers send them, one
segment id each.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from core.bundles.bundle import build_default_bundle
from db import repository as repo
from tasks.context import StageContext
from tests.inference.helpers import FlakyStore, add_segment, feature_keys, make_context
from tests.support.pool import scrape
from tests.support.redis import RedisServer
from tests.support.services import free_port, wait_for
from workers.celery_app import create_app
from workers.metrics import InferenceMetrics, QueueLengthCollector, start_exporter
from workers.pool.batcher import InferenceBatcher
from workers.pool.messages import SENT_AT_HEADER, segment_id_of
from workers.services.dead_letters import dead_letter_key, parse_record
from workers.settings import Settings

pytestmark = pytest.mark.integration
T = 8


@pytest.fixture(scope="module")
def bundles(default_bundle):
    return {b.metadata.version: b for b in (default_bundle, build_default_bundle(T, 7))}


class Versions:
    """The active version, switchable by a test."""

    def __init__(self, version: str) -> None:
        self.active = version

    def __call__(self, session: object = None) -> str:
        return self.active


@pytest.fixture
def ctx(tmp_path: Path, bundles) -> StageContext:
    return make_context(tmp_path, bundles, Versions(next(iter(bundles))))


class Running:
    """A batcher serving in a thread, and what a test needs around it."""

    def __init__(self, broker: str, ctx: StageContext, **options: float) -> None:
        self.app = create_app(Settings(broker_url=broker))
        self.ctx = ctx
        self.metrics = InferenceMetrics(max_batch_size=int(options.get("max_batch_size", 32)))
        self.batcher = InferenceBatcher(self.app, ctx, metrics=self.metrics, **options)
        self.batcher.refresh_models()
        self.thread = threading.Thread(target=self.batcher.serve, daemon=True)
        self.redis = redis.Redis.from_url(broker)

    def start(self) -> Running:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.batcher.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()

    def send(self, segment_id: object, task: str = "oceanstream.inference") -> None:
        self.app.send_task(
            task, args=[segment_id], queue="inference", headers={SENT_AT_HEADER: time.time()}
        )

    def value(self, name: str, **labels: str) -> float:
        return float(self.metrics.registry.get_sample_value(name, labels) or 0.0)

    def status(self, segment_id: str) -> str:
        with self.ctx.session_factory() as session:
            return repo.get_segment(session=session, segment_id=segment_id).status

    def wait_done(self, ids: list[str], timeout: float = 30) -> None:
        wait_for(lambda: all(self.status(s) == "done" for s in ids), timeout, "segments done")

    def unacked(self) -> int:
        return int(self.redis.hlen("unacked"))

    def wait_settled(self, timeout: float = 5) -> None:
        """Every message acknowledged: a batch is settled just after its results commit."""
        wait_for(
            lambda: self.redis.llen("inference") == 0 and self.unacked() == 0,
            timeout,
            "every message acknowledged",
        )


@pytest.fixture
def running(broker: str, ctx: StageContext) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for batcher in started:
        batcher.stop()


def version_of(ctx: StageContext) -> str:
    return ctx.active_version()


def test_batches_fill_under_load_and_the_rest_flushes_on_the_timer(
    broker: str, ctx: StageContext, running: list[Running]
) -> None:
    pool = Running(broker, ctx, max_batch_size=16, max_wait_ms=300)
    ids = [add_segment(ctx, f"load-{i}", version_of(ctx), seed=i) for i in range(40)]
    for segment_id in ids:
        pool.send(segment_id)  # a backlog before the batcher starts
    running.append(pool.start())
    pool.wait_done(ids)
    wait_for(lambda: pool.value("oceanstream_inference_batches_total") == 3, 5, "3 batches")
    assert pool.value("oceanstream_inference_batch_size_count") == 3
    assert pool.value("oceanstream_inference_batch_size_sum") == 40
    assert pool.value("oceanstream_inference_batch_size_bucket", le="8.0") == 1  # the rest
    assert pool.value("oceanstream_inference_videos_total", outcome="done") == 40
    sizes = sorted(stored_batch(ctx, s) for s in ids)
    assert sizes == [8] * 8 + [16] * 32
    assert pool.redis.llen("inference") == 0 and pool.unacked() == 0


def test_a_batch_is_counted_in_segments_and_its_model_calls_in_person_rows(
    broker: str, ctx: StageContext, running: list[Running]
) -> None:
    """Eight two-person segments fill one batch of eight messages; their 16 person rows
    run as two model calls of the largest bucket (8)."""
    pool = Running(broker, ctx, max_batch_size=8, max_wait_ms=300)
    ids = [add_segment(ctx, f"pair-{i}", version_of(ctx), seed=i, persons=2) for i in range(8)]
    for segment_id in ids:
        pool.send(segment_id)
    running.append(pool.start())
    pool.wait_done(ids)
    wait_for(lambda: pool.value("oceanstream_inference_batches_total") == 1, 5, "1 batch")
    assert pool.value("oceanstream_inference_batch_size_count") == 2
    assert pool.value("oceanstream_inference_batch_size_sum") == 16
    assert pool.value("oceanstream_inference_videos_total", outcome="done") == 8
    assert {stored_batch(ctx, s) for s in ids} == {8}


def stored_batch(ctx: StageContext, segment_id: str) -> int:
    with ctx.session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        return int(segment.timings["inference_batch"])


def test_a_lone_message_waits_max_wait_then_runs(
    broker: str, ctx: StageContext, running: list[Running]
) -> None:
    pool = Running(broker, ctx, max_batch_size=32, max_wait_ms=250)
    running.append(pool.start())
    time.sleep(0.3)  # idle
    segment_id = add_segment(ctx, "alone", version_of(ctx), seed=1)
    sent = time.monotonic()
    pool.send(segment_id)
    pool.wait_done([segment_id], timeout=10)
    elapsed = time.monotonic() - sent
    assert 0.25 <= elapsed < 2.0
    assert stored_batch(ctx, segment_id) == 1
    # The batch is settled (acknowledged, measured) just after its results are committed.
    wait_for(lambda: pool.value("oceanstream_inference_batches_total") == 1, 5, "1 batch")
    waited = pool.value("oceanstream_inference_batch_wait_seconds_sum")
    assert 0.24 <= waited < 0.6
    delay = pool.value("oceanstream_inference_queue_delay_seconds_sum")
    assert 0.25 <= delay < 2.0


def test_messages_that_are_not_inference_tasks_are_dropped(
    broker: str, ctx: StageContext, running: list[Running]
) -> None:
    pool = Running(broker, ctx, max_batch_size=8, max_wait_ms=20)
    running.append(pool.start())
    segment_id = add_segment(ctx, "real", version_of(ctx), seed=2)
    pool.send("some-id", task="oceanstream.ingest")
    pool.send(12345)
    with pool.app.producer_or_acquire() as producer:
        producer.publish(
            b"\x80garbage",
            routing_key="inference",
            exchange="inference",
            content_type="application/x-python-serialize",
        )
    poison = [b"\xff\xfe not UTF-8", b"not JSON", b'{"not": "an envelope"}']
    for raw in poison:
        pool.redis.lpush("inference", raw)
    pool.send(segment_id)
    pool.wait_done([segment_id])
    wait_for(
        lambda: pool.value("oceanstream_inference_videos_total", outcome="rejected") == 6,
        5,
        "six rejections",
    )
    pool.wait_settled()
    # Each is moved aside once, with why, and the pool went on.
    records = [parse_record(r) for r in pool.redis.lrange(dead_letter_key("inference"), 0, -1)]
    assert len(records) == 6 and {r.queue for r in records} == {"inference"}
    assert {r.payload for r in records} >= set(poison)
    reasons = " | ".join(r.reason for r in records)
    for why in ("ingest", "12345", "JSON only", "not UTF-8", "not JSON"):
        assert why in reasons
    assert pool.thread.is_alive()


def test_protocol_one_and_two_bodies_carry_the_segment_id() -> None:
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    assert segment_id_of([["abc"], {}, embed], {"task": "oceanstream.inference"}) == "abc"
    assert segment_id_of({"task": "oceanstream.inference", "args": ["abc"]}, {}) == "abc"
    with pytest.raises(ValueError, match="expected task"):
        segment_id_of([["abc"], {}, embed], {"task": "oceanstream.faces"})
    with pytest.raises(ValueError, match=r"expected args \[segment_id\]"):
        segment_id_of([["a", "b"], {}, embed], {"task": "oceanstream.inference"})


def test_a_newly_activated_version_is_served_without_restart(
    broker: str, ctx: StageContext, bundles, running: list[Running]
) -> None:
    first, second = list(bundles)
    pool = Running(broker, ctx, max_batch_size=8, max_wait_ms=20, model_refresh_s=0.2)
    running.append(pool.start())
    assert pool.value("oceanstream_inference_model_info", version=second) == 0
    ctx.active_version.active = second  # type: ignore[attr-defined]
    wait_for(
        lambda: pool.value("oceanstream_inference_model_info", version=second) == 1,
        20,
        "the new version to be loaded and warmed between batches",
    )
    old = add_segment(ctx, "old", first, seed=3)
    new = add_segment(ctx, "new", second, seed=4)
    pool.send(old)
    pool.send(new)
    pool.wait_done([old, new])
    with ctx.session_factory() as session:
        for segment_id, version, other in ((new, second, first), (old, first, second)):
            video_id = repo.get_segment(session=session, segment_id=segment_id).video_id
            assert repo.get_prediction(session=session, video_id=video_id, model_version=version)
            assert not repo.get_prediction(session=session, video_id=video_id, model_version=other)


def test_an_outage_returns_the_message_and_it_is_served_later(
    broker: str, ctx: StageContext, running: list[Running]
) -> None:
    pool = Running(broker, ctx, max_batch_size=8, max_wait_ms=20)
    fine = add_segment(ctx, "fine", version_of(ctx), seed=5)
    flaky = add_segment(ctx, "flaky", version_of(ctx), seed=6)
    ctx.store.down = set(feature_keys(ctx, flaky))  # type: ignore[attr-defined]
    running.append(pool.start())
    pool.send(fine)
    pool.send(flaky)
    pool.wait_done([fine])
    wait_for(
        lambda: pool.value("oceanstream_inference_videos_total", outcome="retried") >= 1,
        10,
        "a retry",
    )
    assert pool.status(flaky) == "inference"
    ctx.store.down = set()  # type: ignore[attr-defined]
    pool.wait_done([flaky])
    pool.wait_settled()


def test_metrics_endpoint_serves_queue_lengths_and_batch_metrics(
    broker: str, ctx: StageContext
) -> None:
    app = create_app(Settings(broker_url=broker))
    for i in range(5):
        app.send_task("oceanstream.inference", args=[f"v{i}"], queue="inference")
    app.send_task("oceanstream.faces", args=["v"], queue="faces")
    metrics = InferenceMetrics(max_batch_size=16)
    queue_lengths = QueueLengthCollector(broker, ("ingest", "faces", "flow", "inference"))
    queue_lengths.refresh()  # what the collector's timer does every few seconds
    metrics.registry.register(queue_lengths)
    metrics.batch_size.observe(12)
    port = start_exporter(metrics.registry, free_port(), "127.0.0.1")
    samples = scrape(f"http://127.0.0.1:{port}/metrics")
    assert samples['oceanstream_queue_length{queue="inference"}'] == 5
    assert samples['oceanstream_queue_length{queue="faces"}'] == 1
    assert samples['oceanstream_queue_length{queue="ingest"}'] == 0
    assert samples['oceanstream_queue_length{queue="flow"}'] == 0
    assert samples["oceanstream_inference_batch_size_count"] == 1
    assert samples['oceanstream_inference_batch_size_bucket{le="16.0"}'] == 1
    for name in (
        "oceanstream_inference_queue_delay_seconds_count",
        "oceanstream_inference_batch_seconds_count",
        "oceanstream_inference_model_call_seconds_count",
        'oceanstream_inference_videos_total{outcome="done"}',
    ):
        assert name in samples


def test_the_pool_reconnects_after_the_broker_restarts(
    redis_server: RedisServer, ctx: StageContext, running: list[Running]
) -> None:
    pool = Running(redis_server.url, ctx, max_batch_size=8, max_wait_ms=20)
    running.append(pool.start())
    before = add_segment(ctx, "before", version_of(ctx), seed=11)
    pool.send(before)
    pool.wait_done([before])
    redis_server.kill()  # every queued and unacknowledged message is gone with it
    time.sleep(0.5)
    redis_server.start()  # same port, empty
    after = add_segment(ctx, "after", version_of(ctx), seed=12)
    pool.send(after)
    pool.wait_done([after], timeout=60)
    pool.wait_settled()


class CountingStore(FlakyStore):
    """Storage whose reads take a while and that counts how many run at once."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0

    def get_arrays(self, uri: str, *args, **kwargs):  # type: ignore[no-untyped-def,override]
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.02)
            return super().get_arrays(uri, *args, **kwargs)
        finally:
            with self.lock:
                self.active -= 1


@pytest.mark.parametrize("in_flight", [1, 2])
def test_batches_in_flight_overlap_their_storage_and_database_work(
    broker: str, ctx: StageContext, running: list[Running], in_flight: int
) -> None:
    ctx = dataclasses.replace(ctx, store=CountingStore(ctx.store.url))
    ids = [add_segment(ctx, f"overlap-{i}", version_of(ctx), seed=i) for i in range(24)]
    pool = Running(broker, ctx, max_batch_size=8, max_wait_ms=20, batches_in_flight=in_flight)
    for segment_id in ids:
        pool.send(segment_id)  # a backlog: three full batches
    running.append(pool.start())
    pool.wait_done(ids)
    assert ctx.store.most == in_flight  # type: ignore[attr-defined]
    pool.wait_settled()
    wait_for(
        lambda: pool.value("oceanstream_inference_videos_total", outcome="done") == 24,
        5,
        "24 segments counted done",
    )
    assert pool.redis.llen("inference") == 0
