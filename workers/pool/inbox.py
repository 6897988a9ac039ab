"""Take messages off a Celery queue on Redis many at a time, with kombu's delivery bookkeeping.

kombu's Redis transport hands a consumer one message per BRPOP and then records it as
unacknowledged (one more round trip), and each acknowledgement is another: three round trips
and a pass through kombu's event loop per message. For the inference batcher, which settles
tens of messages at once, that costs more than the model. `RedisInbox` does the same work per
batch:

- `take(n)`: one Lua script pops up to `n` messages and records each in kombu's `unacked`
  hash and `unacked_index` sorted set, atomically (kombu's BRPOP-then-record leaves a window
  in which a crash loses the message; here there is none);
- `ack(deliveries)`: one pipelined round trip removes them from both;
- `requeue(deliveries)`: puts them back on their queue, each only if it is still
  unacknowledged (so a message already restored elsewhere is not queued twice);
- `restore_visible()`: kombu's own restore of messages unacknowledged for longer than the
  visibility timeout (a consumer that died), run periodically as kombu's consumers do.

A payload that is not UTF-8, not JSON or not an envelope is returned like any other, with
`error` saying why (and `undecodable` holding bytes that are not UTF-8): the caller
dead-letters and acknowledges it; the rest of the take is unaffected. Decoding never raises,
whatever the payload (`decode_payload`). So is a message kombu restored `redelivered` more
times than the layout's `max_deliveries` allows (its redeliveries are counted on the broker,
`workers.broker.dead_letter_lists.count_deliveries`): a batch that kills its pool process comes
back a bounded number of times, then its messages are dead-lettered, never run again.

The layout is kombu's (queue lists with kombu's priority suffixes, the two unacked keys, the
JSON envelope with a base64 body), as `workers.broker.kombu_redis` describes it: the only
module that knows it, with names read from the app's transport options. Celery workers,
producers, `oceanstream reconcile` and Flower thus share the queue unchanged, and either kind
of consumer restores the other's messages.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from workers.broker.dead_letter_lists import count_deliveries
from workers.broker.kombu_redis import (
    REQUEUE_SCRIPT,
    TAKE_SCRIPT,
    KombuRedisLayout,
    decode_payload,
    restore_visible,
    too_many_deliveries,
)

__all__ = ["Received", "RedisInbox", "decode_payload", "restore_visible"]


@dataclass
class Received:
    """One message taken off the queue: its payload decoded, or why it could not be."""

    key: str  # the list it came from
    raw: str  # the payload as stored, for a requeue
    tag: str | None  # kombu's delivery tag; None when the payload had none
    body: Any = None
    headers: dict[str, Any] | None = None
    error: str | None = None
    undecodable: bytes | None = None  # the payload's bytes when they are not UTF-8

    @property
    def payload(self) -> bytes | str:
        """The payload exactly as it was stored (for a dead-letter list)."""
        return self.undecodable if self.undecodable is not None else self.raw


class RedisInbox:
    """One queue of a kombu Redis broker, read and settled in batches (see the module doc)."""

    def __init__(
        self,
        client: Any,  # redis.Redis
        queue: str,
        layout: KombuRedisLayout | None = None,
    ) -> None:
        self.client = client
        self.queue = queue
        self.layout = layout or KombuRedisLayout()
        self.unacked_key = self.layout.unacked_key
        self.unacked_index_key = self.layout.unacked_index_key
        self.keys = self.layout.queue_lists(queue)
        self._take = client.register_script(TAKE_SCRIPT)
        self._requeue = client.register_script(REQUEUE_SCRIPT)

    def take(self, limit: int) -> list[Received]:
        """Up to `limit` messages, now recorded as unacknowledged (none waiting: empty)."""
        if limit <= 0:
            return []
        flat = self._take(
            keys=[self.unacked_key, self.unacked_index_key, *self.keys],
            args=[limit, repr(time.time())],
        )
        taken = []
        for key, raw in zip(flat[::2], flat[1::2], strict=True):
            key = _text(key)
            try:
                text = _text(raw)
            except UnicodeDecodeError as exc:  # no consumer can read it: the caller moves it aside
                refused = f"not UTF-8 text (byte {exc.start})"
                text = raw.decode(errors="replace")
                taken.append(Received(key, text, _tag_of(raw), None, {}, refused, raw))
                continue
            tag, body, headers, error = decode_payload(text)
            taken.append(Received(key, text, tag, body, headers, error))
        self._count_redeliveries(taken)
        return taken

    def _count_redeliveries(self, taken: list[Received]) -> None:
        """Refuse (`error`) the messages delivered more than `max_deliveries` times."""
        back = [
            r
            for r in taken
            if r.error is None and r.tag is not None and (r.headers or {}).get("redelivered")
        ]
        counted = count_deliveries(self.client, [r.tag for r in back if r.tag is not None])
        for received, deliveries in zip(back, counted, strict=True):
            if deliveries > self.layout.max_deliveries:
                received.error = too_many_deliveries(deliveries - 1)

    def wait(self, timeout: float) -> None:
        """Block until the queue's first list holds a message or `timeout` seconds pass.

        BLMOVE of a list's tail onto itself leaves the list as it was, so this takes
        nothing: `take` does. (Messages of the other priority levels are seen by the next
        `take`, at most `timeout` later.)
        """
        first = self.keys[0]
        self.client.blmove(first, first, max(timeout, 0.001), "RIGHT", "RIGHT")

    def ack(self, received: list[Received]) -> None:
        """Forget these messages: their work is committed. One round trip."""
        tags = [r.tag for r in received if r.tag is not None]
        if not tags:
            return
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self.unacked_index_key, *tags)
        pipe.hdel(self.unacked_key, *tags)
        pipe.execute()

    def requeue(self, received: list[Received], *, front: bool = False) -> int:
        """Put messages back on their queue: `front` to be taken next, else behind the rest.

        A message no longer unacknowledged (restored after the visibility timeout meanwhile)
        is not pushed again. Returns how many were put back.
        """
        args: list[str] = ["front" if front else "back"]
        for r in received:
            if r.tag is not None:
                args += [r.tag, r.key, r.raw]
        if len(args) == 1:
            return 0
        return int(self._requeue(keys=[self.unacked_key, self.unacked_index_key], args=args))

    def unacked(self) -> int:
        return int(self.client.hlen(self.unacked_key))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _tag_of(raw: bytes) -> str | None:
    """The delivery tag of a payload that is JSON with invalid UTF-8 in it (the take script
    recorded it as unacknowledged under that tag), so acknowledging it forgets the record."""
    tag, _, _, _ = decode_payload(raw.decode(errors="replace"))
    return tag
