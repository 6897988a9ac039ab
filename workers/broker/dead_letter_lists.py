"""Dead-letter lists, the write side: where a consumer moves a message it can never run.

The consumers (the Celery workers through `workers.broker.kombu_redis` and
`workers.broker.celery_consumer`, the inference pool through its batcher and inbox) call
`dead_letter`; the format of the lists and the operator's side (list, replay, purge) are
described in `workers.services.dead_letters`.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("oceanstream.dead_letters")

KEY_PREFIX = "oceanstream.dead."
#: Records kept per queue; older ones are dropped as new ones arrive.
MAX_DEAD_LETTERS = 10_000
#: Bytes of a payload kept in a record; the rest is dropped (the record keeps its size).
MAX_PAYLOAD_BYTES = 8192
#: Characters of a reason kept in a record (one line).
_REASON_CHARS = 300
DELIVERY_KEY_PREFIX = "oceanstream.deliveries."
#: How long a message's redelivery count is kept after its last redelivery.
DELIVERY_COUNT_TTL_S = 7 * 24 * 3600


def dead_letter_key(queue: str) -> str:
    """The Redis list holding `queue`'s dead letters."""
    return f"{KEY_PREFIX}{queue}"


def dead_letter_record(queue: str, raw: bytes | str, reason: str) -> str:
    """The JSON record of one dead letter (see the module doc)."""
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    size = len(data)
    if size > MAX_PAYLOAD_BYTES:
        data = data[:MAX_PAYLOAD_BYTES]
        text = data.decode("utf-8", "ignore")  # cut on a character boundary
        payload, encoded = text, False
    else:
        try:
            payload, encoded = data.decode("utf-8"), False
        except UnicodeDecodeError:
            payload, encoded = base64.b64encode(data).decode("ascii"), True
    return json.dumps(
        {
            "queue": queue,
            "reason": one_line(reason),
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "payload": payload,
            "base64": encoded,
            "size": size,
        }
    )


def dead_letter(client: Any, queue: str, raw: bytes | str, reason: str) -> None:
    """Move one unreadable message of `queue` aside, logging it once. `client`: redis.Redis."""
    dead_letters(client, queue, [(raw, reason)])


def dead_letters(client: Any, queue: str, messages: Iterable[tuple[bytes | str, str]]) -> int:
    """`dead_letter` for several messages of one queue, in one round trip; returns how many."""
    records = []
    for raw, reason in messages:
        log.error("dead-lettered a message on %s: %s", queue, one_line(reason))
        records.append(dead_letter_record(queue, raw, reason))
    if records:
        key = dead_letter_key(queue)
        pipe = client.pipeline(transaction=True)
        pipe.lpush(key, *records)
        pipe.ltrim(key, 0, MAX_DEAD_LETTERS - 1)
        pipe.execute()
    return len(records)


def count_deliveries(client: Any, tags: list[str]) -> list[int]:
    """Count one more redelivery of each message (by kombu delivery tag), in one round trip.

    Returns each message's deliveries so far, this one included (2 on its first
    redelivery). A first delivery is not counted: only messages kombu marked `redelivered`
    come here, so the counters exist for the few messages that came back.
    """
    if not tags:
        return []
    pipe = client.pipeline(transaction=False)
    for tag in tags:
        key = f"{DELIVERY_KEY_PREFIX}{tag}"
        pipe.incr(key)
        pipe.expire(key, DELIVERY_COUNT_TTL_S)
    counted = pipe.execute()
    return [int(n) + 1 for n in counted[::2]]


def one_line(text: str) -> str:
    """`text` on one line, at most `_REASON_CHARS` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= _REASON_CHARS else line[: _REASON_CHARS - 1] + "…"
