"""Which Celery messages are on a Redis broker now: waiting on a queue, or taken and held.

The reconciler asks this before it resends a video's stage, so that a stage stopped for
minutes finds one message per video when it comes back, not one per sweep.

It relies on the contract of `workers.broker.kombu_redis`, the one module that knows kombu's
Redis layout, and on nothing else of kombu: a queue is the lists
`KombuRedisLayout.queue_lists(queue)`, a message delivered to a consumer and not yet
acknowledged is a value of the hash `layout.unacked_key` (`[payload, exchange,
routing_key]`; the pipeline's queues each have a direct exchange whose routing key is the
queue's name), and `decode_payload` reads a stored message. tests/contracts/
test_queued_messages.py checks the scan against real kombu producers and consumers.

A scan reads every message of the queues named, in one round trip: meant for a periodic
sweep, not for a hot path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from workers.broker.kombu_redis import KombuRedisLayout, decode_payload


@dataclass(frozen=True)
class QueuedMessage:
    """One Celery message found on the broker."""

    queue: str
    task: str | None  # Celery's `task` header
    args: tuple[Any, ...]
    held: bool  # taken by a consumer and not acknowledged (being worked on, or its ETA)
    held_since: float | None = None  # epoch seconds it was taken, for a held message


def queued_messages(
    client: Any, layout: KombuRedisLayout, queues: Iterable[str]
) -> list[QueuedMessage]:
    """The messages waiting on `queues` or held unacknowledged from them, read now.

    `client` is a redis-py client of the broker. A message that cannot be decoded is left
    out (the consumer that takes it rejects it).
    """
    names = list(dict.fromkeys(queues))
    pipe = client.pipeline(transaction=False)
    for queue in names:
        for key in layout.queue_lists(queue):
            pipe.lrange(key, 0, -1)
    pipe.hgetall(layout.unacked_key)
    pipe.zrange(layout.unacked_index_key, 0, -1, withscores=True)
    results = pipe.execute()
    taken_at = {_text(tag): float(score) for tag, score in results.pop()}
    held_records = results.pop()
    found: list[QueuedMessage] = []
    lists = iter(results)
    for queue in names:
        for _ in layout.queue_lists(queue):
            for raw in next(lists):
                message = _message(queue, _text(raw), held=False)
                if message is not None:
                    found.append(message)
    wanted = set(names)
    for tag, record in held_records.items():
        routing_key, raw = _held(_text(record))
        if routing_key in wanted and raw is not None:
            message = _message(routing_key, raw, held=True, since=taken_at.get(_text(tag)))
            if message is not None:
                found.append(message)
    return found


def _message(queue: str, raw: str, held: bool, since: float | None = None) -> QueuedMessage | None:
    _, body, headers, error = decode_payload(raw)
    if error is not None:
        return None
    # Celery's message protocol 2: the body is [args, kwargs, embed].
    args = body[0] if isinstance(body, list) and body and isinstance(body[0], list) else []
    task = headers.get("task")
    name = task if isinstance(task, str) else None
    return QueuedMessage(queue, name, tuple(args), held, since)


def _held(record: str) -> tuple[str | None, str | None]:
    """(routing key, stored message) of an unacknowledged record."""
    try:
        payload, _exchange, routing_key = json.loads(record)
    except (ValueError, TypeError):
        return None, None
    return str(routing_key), json.dumps(payload)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
