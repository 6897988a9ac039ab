"""Dead letters: messages no consumer can read, moved aside per queue for an operator.

A payload that is not UTF-8, not JSON, not a kombu envelope, or not a task message its
queue's consumer accepts (unknown task, arguments that do not fit) can never succeed: left
on the queue it would crash or loop a worker. Every consumer (the Celery workers through
`workers.broker.kombu_redis` and `workers.broker.celery_consumer`, the inference pool through
`workers.pool.batcher`) calls `dead_letter` (`workers.broker.dead_letter_lists`, the write side)
instead, which logs one line with the queue and the reason and pushes a record onto that
queue's dead-letter list.

The list of queue `q` is the Redis list `oceanstream.dead.q` (`dead_letter_key`), in the
broker's database, outside kombu's key names (`q`, `q` + separator + priority, `unacked*`,
`_kombu.*`). The newest record is at the head; each list keeps the newest
`MAX_DEAD_LETTERS` records, and a record keeps at most `MAX_PAYLOAD_BYTES` of its payload,
so a flood of bad or huge messages cannot fill Redis (a list holds at most about
`MAX_DEAD_LETTERS` x `MAX_PAYLOAD_BYTES`, 80 MB). A record is JSON: `{"queue", "reason",
"time" (ISO 8601, UTC), "payload", "base64", "size"}`, where `payload` is the raw message as
text, or base64 of its bytes when they are not UTF-8 (`base64: true`), and `size` its length
in bytes as received; a record whose `size` is larger than its payload was cut short. `replay`
pushes payloads back onto their queue exactly as they were received, and leaves out (removes)
a payload that was cut short: no valid task message is that large.

The lists live in the broker's Redis: a Redis without persistence (no RDB snapshot, no AOF)
loses them when it restarts, as it loses the queues. The log line of each dead letter stays.

`count_deliveries` counts the redeliveries of a message on the broker (keys
`oceanstream.deliveries.<delivery tag>`, expiring after `DELIVERY_COUNT_TTL_S`), so that every
consumer can dead-letter a message that keeps coming back unacknowledged
(`workers.broker.kombu_redis`).
"""

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis

from workers.broker.dead_letter_lists import (
    DELIVERY_COUNT_TTL_S as DELIVERY_COUNT_TTL_S,
)
from workers.broker.dead_letter_lists import (
    DELIVERY_KEY_PREFIX as DELIVERY_KEY_PREFIX,
)
from workers.broker.dead_letter_lists import (
    KEY_PREFIX as KEY_PREFIX,
)
from workers.broker.dead_letter_lists import (
    MAX_DEAD_LETTERS as MAX_DEAD_LETTERS,
)
from workers.broker.dead_letter_lists import (
    MAX_PAYLOAD_BYTES as MAX_PAYLOAD_BYTES,
)
from workers.broker.dead_letter_lists import (
    count_deliveries as count_deliveries,
)
from workers.broker.dead_letter_lists import (
    dead_letter as dead_letter,
)
from workers.broker.dead_letter_lists import (
    dead_letter_key as dead_letter_key,
)
from workers.broker.dead_letter_lists import (
    dead_letter_record as dead_letter_record,
)
from workers.broker.dead_letter_lists import (
    dead_letters as dead_letters,
)
from workers.broker.dead_letter_lists import (
    one_line as one_line,
)
from workers.broker.kombu_redis import BROKER_TRANSPORT_OPTIONS, KombuRedisLayout, redis_url
from workers.services.errors import UsageError

# -- reading, replaying, purging (the operator's side) -----------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """One record of a dead-letter list."""

    queue: str
    reason: str
    time: str
    payload: bytes  # as received (its first MAX_PAYLOAD_BYTES when `truncated`)
    size: int | None = None  # bytes received; None for records written before sizes were kept

    @property
    def truncated(self) -> bool:
        return self.size is not None and self.size > len(self.payload)

    def preview(self, width: int = 60) -> str:
        """The payload's start, with control and non-ASCII characters escaped for a terminal."""
        text = self.payload[: width * 4].decode("utf-8", "backslashreplace")
        escaped = text.encode("ascii", "backslashreplace").decode("ascii")
        escaped = "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped)
        return escaped if len(escaped) <= width else escaped[: width - 1] + "…"

    def to_json(self) -> dict[str, Any]:
        try:
            payload, encoded = self.payload.decode("utf-8"), False
        except UnicodeDecodeError:
            payload, encoded = base64.b64encode(self.payload).decode("ascii"), True
        return {
            "queue": self.queue,
            "reason": self.reason,
            "time": self.time,
            "payload": payload,
            "base64": encoded,
            "size": len(self.payload) if self.size is None else self.size,
        }


def parse_record(record: bytes | str) -> DeadLetter:
    """A stored record; ValueError when it is not one `dead_letter_record` wrote."""
    try:
        data = json.loads(record)
        payload = data["payload"]
        raw = base64.b64decode(payload, validate=True) if data["base64"] else payload.encode()
        size = data.get("size")
        return DeadLetter(
            str(data["queue"]),
            str(data["reason"]),
            str(data["time"]),
            raw,
            size if isinstance(size, int) else None,
        )
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error) as exc:
        raise ValueError(f"not a dead-letter record: {exc}") from exc


def check_queue(queue: str, queues: Iterable[str]) -> str:
    """`queue` if it is one of `queues`, else UsageError."""
    known = list(queues)
    if queue not in known:
        raise UsageError(f"unknown queue {queue!r}; choose from {', '.join(known)}")
    return queue


def counts(client: Any, queues: Iterable[str]) -> dict[str, int]:
    """How many dead letters each queue holds."""
    names = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in names:
        pipe.llen(dead_letter_key(queue))
    return dict(zip(names, (int(n) for n in pipe.execute()), strict=True))


def entries(client: Any, queue: str, limit: int = 20) -> list[DeadLetter | None]:
    """The newest `limit` dead letters of `queue`, newest first (None: an unreadable record)."""
    found: list[DeadLetter | None] = []
    for record in client.lrange(dead_letter_key(queue), 0, max(limit, 1) - 1):
        try:
            found.append(parse_record(record))
        except ValueError:
            found.append(None)
    return found


@dataclass(frozen=True)
class Replayed:
    replayed: int
    unreadable: int  # records that were not dead letters, removed
    truncated: int = 0  # records of payloads cut short (over MAX_PAYLOAD_BYTES), removed


def replay(client: Any, queue: str, queue_list: str, limit: int | None = None) -> Replayed:
    """Push the oldest `limit` (all: None) dead letters of `queue` back onto `queue_list`.

    `queue_list` is the Redis list the queue's producers push to (kombu's list of the
    lowest priority: `workers.broker.kombu_redis.KombuRedisLayout.queue_lists(queue)[0]`).
    They go behind the messages waiting there, oldest first, and leave the dead-letter list
    in the same transaction (WATCHed: a record written meanwhile is not lost).
    """
    key = dead_letter_key(queue)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                count = int(pipe.llen(key)) if limit is None else max(limit, 0)
                records = pipe.lrange(key, -count, -1) if count else []
                payloads, unreadable, truncated = [], 0, 0
                for record in reversed(records):  # oldest first
                    try:
                        letter = parse_record(record)
                    except ValueError:
                        unreadable += 1
                        continue
                    if letter.truncated:
                        truncated += 1
                    else:
                        payloads.append(letter.payload)
                pipe.multi()
                if records:
                    pipe.ltrim(key, 0, -len(records) - 1)
                if payloads:
                    pipe.lpush(queue_list, *payloads)
                pipe.execute()
                return Replayed(len(payloads), unreadable, truncated)
            except redis.WatchError:
                continue


def purge(client: Any, queue: str) -> int:
    """Delete `queue`'s dead letters; returns how many there were."""
    key = dead_letter_key(queue)
    pipe = client.pipeline(transaction=True)
    pipe.llen(key)
    pipe.delete(key)
    held, _ = pipe.execute()
    return int(held)


# -- what the CLI needs from the settings ------------------------------------------------------


def broker_client(settings: Any) -> Any:
    """A redis.Redis on the configured broker (UnsupportedBrokerSetting if not Redis)."""
    return redis.Redis.from_url(redis_url(settings.broker_url.get_secret_value()))


def producer_list(queue: str) -> str:
    """The Redis list producers push `queue`'s messages to (kombu's lowest priority)."""
    return KombuRedisLayout.from_transport_options(BROKER_TRANSPORT_OPTIONS).queue_lists(queue)[0]
