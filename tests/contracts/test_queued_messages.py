"""workers/broker/queued_messages.py against real kombu producers and consumers on Redis.

What the reconciler's queue check relies on: a message Celery sends is found waiting on its
queue (at every priority), a message a kombu consumer holds unacknowledged is found held
under its queue's name, an acknowledged one is gone, and another queue's messages are not
reported. A failure here means kombu changed what workers/broker/kombu_redis.py describes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery
from kombu import Consumer, Exchange, Queue

from workers.broker.kombu_redis import BROKER_TRANSPORT_OPTIONS, layout_of
from workers.broker.queued_messages import QueuedMessage, queued_messages

pytestmark = pytest.mark.integration

QUEUES = [Queue(name, Exchange(name), routing_key=name) for name in ("faces", "flow", "other")]
CUSTOM = {"sep": ":p:", "priority_steps": [0, 5], "unacked_key": "held", "unacked_index_key": "hi"}


@pytest.fixture(params=[BROKER_TRANSPORT_OPTIONS, CUSTOM], ids=["pipeline", "custom-options"])
def app(request: pytest.FixtureRequest, broker: str) -> Celery:
    app = Celery("contract", broker=broker, set_as_current=False)
    app.conf.update(
        broker_transport_options=dict(request.param),
        task_queues=QUEUES,
        task_serializer="json",
        accept_content=["json"],
    )
    return app


@pytest.fixture
def client(broker: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(broker)
    yield connection
    connection.close()


def scan(app: Celery, client: redis.Redis) -> set[QueuedMessage]:
    return set(queued_messages(client, layout_of(app), ["faces", "flow"]))


def test_waiting_held_and_acknowledged_messages(app: Celery, client: redis.Redis) -> None:
    top = max(layout_of(app).priority_steps)
    app.send_task("oceanstream.faces", args=["v1"], queue="faces")
    app.send_task("oceanstream.flow", args=["v2"], queue="flow", priority=top)
    app.send_task("oceanstream.other", args=["v3"], queue="other")
    assert scan(app, client) == {
        QueuedMessage("faces", "oceanstream.faces", ("v1",), held=False),
        QueuedMessage("flow", "oceanstream.flow", ("v2",), held=False),
    }
    held = []
    with app.connection_for_read() as connection:
        consumer = Consumer(
            connection, queues=[QUEUES[0]], callbacks=[lambda body, message: held.append(message)]
        )
        consumer.qos(prefetch_count=1)
        with consumer:
            connection.drain_events(timeout=5)
        (message,) = held  # taken by a worker, not acknowledged: being worked on
        found = scan(app, client)
        (taken,) = [m for m in found if m.held]
        assert abs(taken.held_since - time.time()) < 30
        assert found == {
            QueuedMessage("faces", "oceanstream.faces", ("v1",), True, taken.held_since),
            QueuedMessage("flow", "oceanstream.flow", ("v2",), held=False),
        }
        message.ack()
    assert scan(app, client) == {QueuedMessage("flow", "oceanstream.flow", ("v2",), held=False)}


def test_a_message_that_does_not_decode_is_left_out(app: Celery, client: redis.Redis) -> None:
    client.lpush("faces", b"\xff not json")
    layout = layout_of(app)
    client.hset(layout.unacked_key, "tag", "[not a record")
    app.send_task("oceanstream.faces", args=["v1"], queue="faces")
    assert scan(app, client) == {QueuedMessage("faces", "oceanstream.faces", ("v1",), held=False)}
