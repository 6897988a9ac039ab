"""Queue lengths come from a cache refreshed on a timer: scrapes never touch Redis."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.redis import RedisServer
from tests.support.services import free_port, wait_for
from workers.celery_app import QUEUES, create_app
from workers.metrics import QueueLengthCollector, start_exporter
from workers.settings import Settings
from workers.signals import start_queue_metrics


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return samples(response.read().decode())


def samples(text: str) -> dict[str, float]:
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def llen_calls(server: redis.Redis) -> int:
    return int(server.info("commandstats").get("cmdstat_llen", {}).get("calls", 0))


def test_scrapes_cost_at_most_one_round_trip_per_refresh(broker: str) -> None:
    server = redis.Redis.from_url(broker)
    create_app(Settings(broker_url=broker)).send_task(
        "oceanstream.faces", args=["v"], queue="faces"
    )
    collector = QueueLengthCollector(broker, QUEUES, refresh_s=0.5)
    per_refresh = len(QUEUES) * len(collector.layout.priority_steps)
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(collector)
    url = f"http://127.0.0.1:{start_exporter(registry, free_port())}/metrics"
    before = llen_calls(server)
    collector.start()
    try:
        wait_for(lambda: "oceanstream_queue_length_age_seconds" in scrape(url), 5, "first read")
        began = time.monotonic()
        for _ in range(60):
            samples = scrape(url)
        elapsed = time.monotonic() - began
        round_trips = (llen_calls(server) - before) / per_refresh
    finally:
        collector.stop()
    assert samples['oceanstream_queue_length{queue="faces"}'] == 1
    assert 0 <= samples["oceanstream_queue_length_age_seconds"] < 2
    # One read at start, then one per elapsed interval; 60 scrapes add none.
    assert 1 <= round_trips <= 2 + elapsed / 0.5, (round_trips, elapsed)


def test_a_scrape_reports_the_last_values_and_their_age_while_redis_is_down(
    redis_server: RedisServer,
) -> None:
    collector = QueueLengthCollector(redis_server.url, QUEUES, refresh_s=3600)

    registry = CollectorRegistry()
    registry.register(collector)
    assert b"oceanstream_queue_length{" not in generate_latest(registry)  # nothing read yet
    collector.refresh()
    redis_server.kill()
    time.sleep(0.3)
    collector.refresh()  # fails: the last values stay, and age
    shown = samples(generate_latest(registry).decode())
    assert shown['oceanstream_queue_length{queue="inference"}'] == 0
    assert shown["oceanstream_queue_length_age_seconds"] >= 0.3


def test_the_exporter_binds_loopback_by_default(broker: str) -> None:
    assert Settings(_env_file=None).metrics_address == "127.0.0.1"  # type: ignore[call-arg]
    port = free_port()
    collector = start_queue_metrics(Settings(broker_url=broker, metrics_port=port))
    assert collector is not None
    try:
        listening = [
            line.split()[1]
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
            if line.split()[3] == "0A"  # LISTEN
        ]
        assert f"0100007F:{port:04X}" in listening  # 127.0.0.1, not 0.0.0.0
        assert f"00000000:{port:04X}" not in listening
    finally:
        collector.stop()
