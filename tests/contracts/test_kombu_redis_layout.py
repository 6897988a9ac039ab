"""kombu's Redis layout as workers/broker/kombu_redis.py describes it, checked against kombu.

Real kombu producers and consumers on a real redis-server: a message kombu publishes is taken
by the inbox; a message kombu's consumer holds unacknowledged is recorded exactly as the inbox
records one; kombu restores what the inbox took; kombu's defaults and option names are the
module's. A failure here means kombu changed: read its transport/redis.py before re-pinning.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Iterator
from typing import ClassVar

import pytest
import redis
from celery import Celery
from kombu import Consumer, Exchange, Queue
from kombu.transport import redis as kombu_redis_transport

from workers.broker.kombu_redis import (
    DEFAULT_PRIORITY_STEPS,
    DEFAULT_SEP,
    DEFAULT_UNACKED_INDEX_KEY,
    DEFAULT_UNACKED_KEY,
    KombuRedisLayout,
    UnsupportedBrokerSetting,
    layout_of,
    restore_visible,
)
from workers.pool.inbox import RedisInbox

pytestmark = pytest.mark.integration

QUEUE = Queue("inference", Exchange("inference"), routing_key="inference")
# Every option the layout reads, set away from kombu's defaults.
CUSTOM = {
    "sep": ":p:",
    "priority_steps": [0, 5],
    "unacked_key": "held",
    "unacked_index_key": "held_index",
    "visibility_timeout": 1,
}


def app_for(broker: str, options: dict[str, object]) -> Celery:
    app = Celery("contract", broker=broker, set_as_current=False)
    app.conf.update(
        broker_transport_options=options,
        task_queues=[QUEUE],
        task_serializer="json",
        accept_content=["json"],
    )
    return app


@pytest.fixture(params=[{}, CUSTOM], ids=["defaults", "custom-options"])
def app(request: pytest.FixtureRequest, broker: str) -> Celery:
    return app_for(broker, dict(request.param))


@pytest.fixture
def client(broker: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(broker, decode_responses=True)
    yield connection
    connection.close()


def test_kombu_channel_defaults_and_option_names_are_the_modules() -> None:
    channel = kombu_redis_transport.Channel
    assert channel.sep == DEFAULT_SEP
    assert tuple(channel.priority_steps) == DEFAULT_PRIORITY_STEPS
    assert channel.unacked_key == DEFAULT_UNACKED_KEY
    assert channel.unacked_index_key == DEFAULT_UNACKED_INDEX_KEY
    assert channel.global_keyprefix == "" and channel.ack_emulation is True
    read = {"sep", "priority_steps", "unacked_key", "unacked_index_key", "global_keyprefix"}
    assert read | {"ack_emulation"} <= set(channel.from_transport_options)
    # The list of a priority level: kombu's own naming, for every step.
    layout = KombuRedisLayout()
    names = [channel._q_for_pri(_PriorityOnly(), "inference", p) for p in DEFAULT_PRIORITY_STEPS]
    assert names == layout.queue_lists("inference")
    # The value kombu's QoS records per unacknowledged delivery.
    source = inspect.getsource(kombu_redis_transport.QoS.append)
    assert "dumps([message._raw, EX, RK])" in source


class _PriorityOnly:
    """Just enough of a Channel for kombu's `_q_for_pri` and `priority`."""

    sep = DEFAULT_SEP
    priority_steps: ClassVar[list[int]] = list(DEFAULT_PRIORITY_STEPS)

    def priority(self, n: int) -> int:
        return kombu_redis_transport.Channel.priority(self, n)  # type: ignore[arg-type]


def test_the_inbox_takes_what_kombu_publishes_at_every_priority(
    app: Celery, client: redis.Redis
) -> None:
    layout = layout_of(app)
    steps = layout.priority_steps
    for priority in steps:
        app.send_task(
            "oceanstream.inference", args=[f"p{priority}"], queue="inference", priority=priority
        )
    for name in layout.queue_lists("inference"):
        assert client.llen(name) == 1, f"kombu no longer writes priority lists as {name!r}"
    taken = RedisInbox(client, "inference", layout).take(10)
    assert [m.body[0] for m in taken] == [[f"p{p}"] for p in steps]  # kombu's order
    assert all(m.tag and m.error is None for m in taken)
    assert client.hlen(layout.unacked_key) == len(steps)
    assert client.zcard(layout.unacked_index_key) == len(steps)


def test_kombu_records_an_unacknowledged_delivery_as_the_inbox_does(
    app: Celery, client: redis.Redis
) -> None:
    layout = layout_of(app)
    app.send_task("oceanstream.inference", args=["by-kombu"], queue="inference")
    app.send_task("oceanstream.inference", args=["by-inbox"], queue="inference")
    held = []
    with app.connection_for_read() as connection:
        consumer = Consumer(connection, queues=[QUEUE], callbacks=[lambda b, m: held.append(m)])
        consumer.qos(prefetch_count=1)
        with consumer:
            connection.drain_events(timeout=5)
        (message,) = held  # never acknowledged
        kombu_tag = message.delivery_tag
        (inbox_message,) = RedisInbox(client, "inference", layout).take(5)
        records = client.hgetall(layout.unacked_key)
        assert set(records) == {kombu_tag, inbox_message.tag}
        by_kombu = json.loads(records[kombu_tag])
        by_inbox = json.loads(records[inbox_message.tag])
        payload = json.loads(inbox_message.raw)
        info = payload["properties"]["delivery_info"]
        assert by_inbox == [payload, info["exchange"], info["routing_key"]]
        assert [type(v) for v in by_kombu] == [dict, str, str]
        delivered = message.delivery_info
        assert by_kombu[1:] == [delivered["exchange"], delivered["routing_key"]] == by_inbox[1:]
        assert by_kombu[0]["properties"]["delivery_tag"] == kombu_tag
        assert set(by_kombu[0]) == set(by_inbox[0])
        scores = dict(client.zrange(layout.unacked_index_key, 0, -1, withscores=True))
        assert set(scores) == {kombu_tag, inbox_message.tag}
        assert all(abs(score - time.time()) < 60 for score in scores.values())


def test_kombu_restores_what_the_inbox_took_and_the_inbox_takes_it_again(
    broker: str, client: redis.Redis
) -> None:
    app = app_for(broker, CUSTOM)
    layout = layout_of(app)
    app.send_task("oceanstream.inference", args=["lost"], queue="inference", priority=5)
    inbox = RedisInbox(client, "inference", layout)
    (taken,) = inbox.take(5)
    assert taken.key == f"inference{CUSTOM['sep']}5"
    time.sleep(1.2)  # past the visibility timeout of 1 s
    with app.connection_for_read() as connection:
        QUEUE(connection.default_channel).declare()
        restore_visible(connection)
    assert client.hlen(layout.unacked_key) == 0
    assert client.llen(taken.key) == 1, "kombu restored the message to another list"
    (again,) = inbox.take(5)
    assert again.tag == taken.tag and again.body[0] == ["lost"]


def test_a_message_kombu_keeps_restoring_is_refused_after_max_deliveries(
    broker: str, client: redis.Redis
) -> None:
    """A batch that kills its pool process comes back a bounded number of times."""
    app = app_for(broker, {**CUSTOM, "max_deliveries": 2})
    layout = layout_of(app)
    assert layout.max_deliveries == 2
    app.send_task("oceanstream.inference", args=["crashes"], queue="inference")
    inbox = RedisInbox(client, "inference", layout)
    seen = []
    for _ in range(3):
        (taken,) = inbox.take(5)  # and the process dies: no ack
        seen.append(taken.error)
        time.sleep(1.2)  # past the visibility timeout of 1 s
        with app.connection_for_read() as connection:
            QUEUE(connection.default_channel).declare()
            restore_visible(connection)
    assert seen[:2] == [None, None]
    assert seen[2] == (
        "delivered 2 times without an acknowledgement (each consumer that took it stopped "
        "before finishing it); not handed to a task again"
    )
    assert client.get(f"oceanstream.deliveries.{taken.tag}") == "2"
    assert 0 < client.ttl(f"oceanstream.deliveries.{taken.tag}") <= 7 * 24 * 3600


def test_settings_the_inbox_cannot_honour_are_refused(broker: str) -> None:
    with pytest.raises(UnsupportedBrokerSetting, match="max_deliveries"):
        layout_of(app_for(broker, {"max_deliveries": 0}))
    with pytest.raises(UnsupportedBrokerSetting, match="global_keyprefix"):
        layout_of(app_for(broker, {"global_keyprefix": "tenant:"}))
    with pytest.raises(UnsupportedBrokerSetting, match="ack_emulation"):
        layout_of(app_for(broker, {"ack_emulation": False}))
    with pytest.raises(UnsupportedBrokerSetting, match="priority_steps"):
        layout_of(app_for(broker, {"priority_steps": [9, 0]}))
    with pytest.raises(UnsupportedBrokerSetting, match="Redis broker"):
        layout_of(app_for("amqp://guest@localhost//", {}))
    with pytest.raises(UnsupportedBrokerSetting, match="Redis broker"):
        layout_of(app_for("sentinel://localhost:26379", {}))
