"""What the dead-lettering transport and consumer assume of kombu and Celery, checked on them.

`DeadLetteringChannel` replaces two methods of kombu's Redis Channel with copies that differ
in one line; `DeadLetteringConsumer` and `CheckedRequest` override Celery hooks by name and
signature; `dead_letter_message` reads kombu's virtual Message. A failure here means kombu
or Celery changed: re-read their source before re-pinning (pyproject.toml).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Iterator

import pytest
import redis
from celery.worker.consumer import Consumer as CeleryConsumer
from celery.worker.request import Request
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis_transport

from workers.broker.kombu_redis import (
    TRANSPORT,
    DeadLetteringChannel,
    DeadLetteringTransport,
    dead_letter_message,
)
from workers.services.dead_letters import dead_letter_key, parse_record

pytestmark = pytest.mark.integration

QUEUE = Queue("ingest", Exchange("ingest"), routing_key="ingest")

# sha256 of kombu 5.7's sources of the methods DeadLetteringChannel copies.
KOMBU_SOURCES = {
    "_brpop_read": "c42518699709f2df90f55a048fe6346612ae5527e5c4a6819f2c0920dc62088f",
    "_get": "be26a9f1eb4cf8da2aa65f4815a1709bf80b4434b064d3d7146872d318ad506c",
}


@pytest.fixture
def client(broker: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(broker)
    yield connection
    connection.close()


def poison() -> list[bytes]:
    return [
        b"\xff\xfe\x00",
        b"not json",
        b'{"no": "envelope"}',
        b"[1, 2]",
        b"[" * 5000,  # RecursionError in json.loads
        b'{"properties": ' + b"[" * 5000,
    ]


def dead(client: redis.Redis, queue: str = "ingest") -> list[bytes]:
    return [parse_record(r).payload for r in client.lrange(dead_letter_key(queue), 0, -1)]


def test_kombu_still_has_the_methods_the_channel_copies() -> None:
    for name, digest in KOMBU_SOURCES.items():
        source = inspect.getsource(getattr(kombu_redis_transport.Channel, name))
        assert hashlib.sha256(source.encode()).hexdigest() == digest, (
            f"kombu's Channel.{name} changed: port the change to DeadLetteringChannel.{name}"
        )
        assert "loads(bytes_to_str(item))" in source
    assert DeadLetteringTransport.Channel is DeadLetteringChannel
    assert issubclass(DeadLetteringTransport, kombu_redis_transport.Transport)
    # The methods the copies call are still kombu's.
    for name in ("_flush_brpop_reauth", "_maybe_update_queues_expire", "conn_or_acquire"):
        assert callable(getattr(kombu_redis_transport.Channel, name))


def test_a_consumer_gets_the_valid_messages_and_the_poison_is_dead_lettered(
    broker: str, client: redis.Redis
) -> None:
    """The event-loop path (BRPOP, `_brpop_read`), as a Celery worker consumes."""
    received: list[object] = []
    with Connection(broker, transport=TRANSPORT) as connection:
        producer = Producer(connection)
        producer.publish({"n": 1}, exchange=QUEUE.exchange, routing_key="ingest", declare=[QUEUE])
        for raw in poison():
            client.lpush("ingest", raw)
        producer.publish({"n": 2}, exchange=QUEUE.exchange, routing_key="ingest")

        def on_message(body: object, message: object) -> None:
            received.append(body)
            message.ack()  # type: ignore[attr-defined]

        with Consumer(connection, queues=[QUEUE], callbacks=[on_message]):
            for _ in range(10):
                if len(received) == 2:
                    break
                connection.drain_events(timeout=2)
    assert received == [{"n": 1}, {"n": 2}]
    assert sorted(dead(client)) == sorted(poison())
    assert client.hlen("unacked") == 0 and client.llen("ingest") == 0


def test_a_synchronous_get_skips_the_poison(broker: str, client: redis.Redis) -> None:
    """The polling path (`_get`), as `basic_get` and kombu's SimpleQueue read."""
    with Connection(broker, transport=TRANSPORT) as connection:
        queue = connection.SimpleQueue(QUEUE)
        for raw in poison():
            client.lpush("ingest", raw)
        queue.put({"n": 3})
        message = queue.get(timeout=2)
        assert message.payload == {"n": 3}
        message.ack()
        queue.close()
    assert sorted(dead(client)) == sorted(poison())


def test_a_message_rejected_back_onto_its_queue_is_dead_lettered_after_max_deliveries(
    broker: str, client: redis.Redis
) -> None:
    """A crash loop is impossible: the third delivery of a message requeued twice (a
    Celery pool child killed by it, `task_reject_on_worker_lost`) is dead-lettered instead."""
    deliveries: list[object] = []
    with Connection(
        broker, transport=TRANSPORT, transport_options={"max_deliveries": 2}
    ) as connection:
        Producer(connection).publish(
            {"n": 5}, exchange=QUEUE.exchange, routing_key="ingest", declare=[QUEUE]
        )
        (stored,) = client.lrange("ingest", 0, -1)

        def on_message(body: object, message: object) -> None:
            deliveries.append(body)
            message.reject(requeue=True)  # type: ignore[attr-defined]

        with Consumer(connection, queues=[QUEUE], callbacks=[on_message]):
            for _ in range(4):
                try:
                    connection.drain_events(timeout=1)
                except TimeoutError:
                    break
    assert deliveries == [{"n": 5}, {"n": 5}]
    (record,) = client.lrange(dead_letter_key("ingest"), 0, -1)
    letter = parse_record(record)
    assert letter.reason.startswith("delivered 2 times without an acknowledgement")
    assert (
        json.loads(letter.payload)["properties"]["delivery_tag"]
        == (json.loads(stored)["properties"]["delivery_tag"])
    )
    assert client.llen("ingest") == 0 and client.hlen("unacked") == 0


def test_a_delivered_message_keeps_its_envelope_and_queue(broker: str, client: redis.Redis) -> None:
    """`dead_letter_message` stores kombu's `_raw` envelope under its routing key."""
    with Connection(broker, transport=TRANSPORT) as connection:
        Producer(connection).publish(
            {"n": 4}, exchange=QUEUE.exchange, routing_key="ingest", declare=[QUEUE]
        )
        stored = json.loads(client.lindex("ingest", 0))
        held = []
        with Consumer(connection, queues=[QUEUE], callbacks=[lambda b, m: held.append(m)]):
            connection.drain_events(timeout=2)
        (message,) = held
        assert message._raw == stored
        dead_letter_message(message, "refused")
        message.reject()
    (record,) = dead(client)
    assert json.loads(record) == stored
    assert client.hlen("unacked") == 0


def test_the_celery_hooks_overridden_keep_their_signatures() -> None:
    hooks = {
        "on_decode_error": ["self", "message", "exc"],
        "on_unknown_message": ["self", "body", "message"],
        "on_unknown_task": ["self", "body", "message", "exc"],
        "on_invalid_task": ["self", "body", "message", "exc"],
        "create_task_handler": ["self", "promise"],
    }
    for name, params in hooks.items():
        assert list(inspect.signature(getattr(CeleryConsumer, name)).parameters) == params
    source = inspect.getsource(CeleryConsumer.create_task_handler)
    # Celery refuses a request whose construction raises these through on_invalid_task.
    assert "except (InvalidTaskError, ContentDisallowed) as exc:" in source
    assert "return on_invalid_task(payload, message, exc)" in source
    request = inspect.signature(Request.__init__).parameters
    assert list(request)[:2] == ["self", "message"]
    assert {"args", "kwargs", "task"} <= {n for n, _ in inspect.getmembers(Request)}


def test_kombu_maps_the_redis_schemes_to_its_redis_transport() -> None:
    """`dead_letter_redis_urls` swaps these entries; a kombu that maps them elsewhere would be
    left alone silently, so the mapping is pinned here."""
    from kombu.transport import TRANSPORT_ALIASES

    from workers.broker.kombu_redis import KOMBU_REDIS_SCHEMES, TRANSPORT

    for scheme, original in KOMBU_REDIS_SCHEMES.items():
        assert TRANSPORT_ALIASES[scheme] in (original, TRANSPORT)
