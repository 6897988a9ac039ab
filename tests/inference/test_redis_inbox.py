"""`RedisInbox` against a real redis-server, with Celery producing and kombu restoring.

The inbox must keep kombu's layout exactly: a message it takes and never acknowledges has to
come back through kombu's own restore, and Celery's producers must not notice it exists.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import redis
from celery import Celery

from workers.broker.kombu_redis import DEFAULT_SEP, redis_url, restore_visible
from workers.celery_app import create_app
from workers.pool.inbox import RedisInbox
from workers.pool.messages import video_id_of
from workers.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def app(broker: str) -> Celery:
    return create_app(Settings(broker_url=broker))


@pytest.fixture
def client(broker: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(broker)
    yield connection
    connection.close()


def send(app: Celery, video_id: str, **options: object) -> None:
    app.send_task("oceanstream.inference", args=[video_id], queue="inference", **options)


def inbox_for(client: redis.Redis) -> RedisInbox:
    return RedisInbox(client, "inference")


def ids(taken: list) -> list[str]:
    return [video_id_of(m.body, m.headers) for m in taken]


def test_takes_in_sending_order_up_to_the_limit_and_records_each_as_unacked(
    app: Celery, client: redis.Redis
) -> None:
    for i in range(5):
        send(app, f"v{i}")
    inbox = inbox_for(client)
    first = inbox.take(3)
    assert ids(first) == ["v0", "v1", "v2"]
    assert client.llen("inference") == 2
    assert inbox.unacked() == 3 and client.zcard("unacked_index") == 3
    assert all(m.tag and m.error is None for m in first)
    assert ids(inbox.take(10)) == ["v3", "v4"]
    assert inbox.take(10) == []
    inbox.ack(first)
    assert inbox.unacked() == 2 and client.zcard("unacked_index") == 2


def test_kombu_restores_what_was_taken_and_never_acknowledged(
    app: Celery, client: redis.Redis
) -> None:
    send(app, "lost")
    inbox = inbox_for(client)
    (taken,) = inbox.take(5)
    assert client.llen("inference") == 0
    time.sleep(1.1)
    # A consumer that died holding it: kombu's restore (any worker runs it) puts it back.
    app.conf.broker_transport_options = {"visibility_timeout": 1}
    with app.connection_for_read() as connection:
        restore_visible(connection)
    assert client.llen("inference") == 1 and inbox.unacked() == 0
    # The stale holder putting it back now must not queue it a second time.
    assert inbox.requeue([taken]) == 0
    assert client.llen("inference") == 1
    (again,) = inbox.take(5)
    assert ids([again]) == ["lost"] and again.tag == taken.tag


def test_requeue_puts_messages_at_the_front_or_the_back(app: Celery, client: redis.Redis) -> None:
    for name in ("a", "b", "c"):
        send(app, name)
    inbox = inbox_for(client)
    a, b = inbox.take(2)
    assert inbox.requeue([a]) == 1  # behind "c", as kombu's reject(requeue=True) does
    assert inbox.requeue([b], front=True) == 1  # next to be taken, as after a stop
    assert ids(inbox.take(10)) == ["b", "c", "a"]


def test_higher_priority_lists_are_taken_after_the_default_one(
    app: Celery, client: redis.Redis
) -> None:
    send(app, "low", priority=6)
    send(app, "plain")
    assert client.llen(f"inference{DEFAULT_SEP}6") == 1
    taken = inbox_for(client).take(10)
    assert ids(taken) == ["plain", "low"]  # kombu's order: priority 0 first
    assert taken[1].key == f"inference{DEFAULT_SEP}6"


def test_undecodable_payloads_are_returned_with_why(app: Celery, client: redis.Redis) -> None:
    client.lpush("inference", b"not json at all")
    with app.producer_or_acquire() as producer:
        producer.publish(
            b"\x80pickle",
            routing_key="inference",
            exchange="inference",
            content_type="application/x-python-serialize",
            declare=[q for q in app.conf.task_queues if q.name == "inference"],
        )
    broken, pickled = inbox_for(client).take(10)
    assert broken.tag is None and "not JSON" in (broken.error or "")
    assert pickled.tag and "JSON only" in (pickled.error or "")
    assert client.hlen("unacked") == 1  # the one with a tag, until it is acknowledged


def test_bytes_that_are_not_utf8_come_back_with_why_and_the_rest_of_the_take_too(
    app: Celery, client: redis.Redis
) -> None:
    send(app, "before")
    client.lpush("inference", b"\xff\xfe\x00 binary")
    send(app, "after")
    # JSON that Redis's cjson reads (so the take recorded it under its tag) but Python won't.
    enveloped = client.lindex("inference", 0).replace(b'"py"', b'"p\xff"')
    client.lset("inference", 0, enveloped)
    first, binary, bad_utf8 = inbox_for(client).take(10)
    assert ids([first]) == ["before"]
    assert binary.tag is None and binary.undecodable == b"\xff\xfe\x00 binary"
    assert binary.payload == b"\xff\xfe\x00 binary" and "not UTF-8" in (binary.error or "")
    assert bad_utf8.tag and bad_utf8.payload == enveloped and "not UTF-8" in (bad_utf8.error or "")
    assert client.hlen("unacked") == 2  # `before` and the tagged one, until acknowledged
    inbox_for(client).ack([bad_utf8])
    assert client.hlen("unacked") == 1


def test_an_envelope_refused_for_its_body_keeps_its_tag(app: Celery, client: redis.Redis) -> None:
    send(app, "x")
    payload = json.loads(client.lindex("inference", 0))
    payload["body"] = "bm90IGpzb24="  # base64 of `not json`
    client.lset("inference", 0, json.dumps(payload))
    (taken,) = inbox_for(client).take(1)
    assert taken.tag == payload["properties"]["delivery_tag"] and taken.error
    inbox_for(client).ack([taken])  # so acknowledging it forgets kombu's record
    assert client.hlen("unacked") == 0


def test_wait_returns_when_a_message_arrives_and_takes_nothing(
    app: Celery, client: redis.Redis
) -> None:
    inbox = inbox_for(client)
    began = time.monotonic()
    inbox.wait(0.2)
    assert 0.15 < time.monotonic() - began < 2
    send(app, "x")
    began = time.monotonic()
    inbox.wait(5)
    assert time.monotonic() - began < 1
    assert client.llen("inference") == 1


def test_only_redis_brokers_are_accepted() -> None:
    assert redis_url("redis://h:1/2") == "redis://h:1/2"
    assert redis_url("redis+socket:///run/redis.sock") == "unix:///run/redis.sock"
    with pytest.raises(ValueError, match="Redis broker"):
        redis_url("amqp://guest@localhost//")
    # A URL without a scheme is not quoted: it may carry a password.
    with pytest.raises(ValueError, match="without a scheme") as refused:
        redis_url("user:s3cret@localhost:6379")
    assert "s3cret" not in str(refused.value)
