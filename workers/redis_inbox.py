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

The layout is kombu's (queue lists with kombu's priority suffixes, the two unacked keys, the
JSON envelope with a base64 body), so Celery workers, producers, `oceanstream reconcile` and
Flower share the queue unchanged, and either kind of consumer restores the other's messages.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any

# Pop up to ARGV[1] messages from the lists KEYS[3..] (in that order: kombu's priority order)
# and record each as unacknowledged at time ARGV[2] the way kombu's QoS.append does:
# unacked[tag] = [payload, exchange, routing_key], unacked_index[tag] = time.
# Returns a flat list: list key, payload, list key, payload, ...
_TAKE = """
local limit = tonumber(ARGV[1])
local taken = {}
for k = 3, #KEYS do
  while #taken < 2 * limit do
    local raw = redis.call('RPOP', KEYS[k])
    if not raw then break end
    local ok, payload = pcall(cjson.decode, raw)
    local props = ok and type(payload) == 'table' and payload['properties']
    local tag = type(props) == 'table' and props['delivery_tag']
    if type(tag) == 'string' then
      local info = props['delivery_info']
      if type(info) ~= 'table' then info = {} end
      local exchange = type(info['exchange']) == 'string' and info['exchange'] or ''
      local routing_key = type(info['routing_key']) == 'string' and info['routing_key'] or ''
      redis.call('ZADD', KEYS[2], ARGV[2], tag)
      redis.call('HSET', KEYS[1], tag,
        '[' .. raw .. ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(routing_key) .. ']')
    end
    taken[#taken + 1] = KEYS[k]
    taken[#taken + 1] = raw
  end
end
return taken
"""

# Put each message back (ARGV: tag, list key, payload, ...) if it is still unacknowledged.
# KEYS[1], KEYS[2]: unacked hash and index; ARGV[1]: 'front' (consumed next) or 'back'.
_REQUEUE = """
local pushed = 0
for i = 2, #ARGV, 3 do
  local tag, key, raw = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if redis.call('HDEL', KEYS[1], tag) == 1 then
    redis.call('ZREM', KEYS[2], tag)
    if ARGV[1] == 'front' then
      redis.call('RPUSH', key, raw)
    else
      redis.call('LPUSH', key, raw)
    end
    pushed = pushed + 1
  end
end
return pushed
"""

# kombu's Redis transport: priority levels and how a level's list is named.
PRIORITY_STEPS = (0, 3, 6, 9)
PRIORITY_SEPARATOR = "\x06\x16"


@dataclass
class Received:
    """One message taken off the queue: its payload decoded, or why it could not be."""

    key: str  # the list it came from
    raw: str  # the payload as stored, for a requeue
    tag: str | None  # kombu's delivery tag; None when the payload had none
    body: Any = None
    headers: dict[str, Any] | None = None
    error: str | None = None


def decode_payload(raw: str) -> tuple[str | None, Any, dict[str, Any], str | None]:
    """(delivery tag, decoded JSON body, headers, error) of a kombu Redis payload.

    Only JSON bodies are accepted, as the Celery app's `accept_content` says.
    """
    try:
        payload = json.loads(raw)
        properties = payload["properties"]
        tag = properties.get("delivery_tag")
        headers = payload.get("headers") or {}
        content_type = payload.get("content-type")
        if content_type != "application/json":
            return tag, None, headers, f"refused content type {content_type!r} (JSON only)"
        body = payload.get("body", "")
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return tag, json.loads(body), headers, None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, None, {}, f"cannot decode message: {exc}"


class RedisInbox:
    """One queue of a kombu Redis broker, read and settled in batches (see the module doc)."""

    def __init__(
        self,
        client: Any,  # redis.Redis
        queue: str,
        *,
        unacked_key: str = "unacked",
        unacked_index_key: str = "unacked_index",
    ) -> None:
        self.client = client
        self.queue = queue
        self.unacked_key = unacked_key
        self.unacked_index_key = unacked_index_key
        self.keys = [queue] + [f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS[1:]]
        self._take = client.register_script(_TAKE)
        self._requeue = client.register_script(_REQUEUE)

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
            key, raw = _text(key), _text(raw)
            tag, body, headers, error = decode_payload(raw)
            taken.append(Received(key, raw, tag, body, headers, error))
        return taken

    def wait(self, timeout: float) -> None:
        """Block until the queue's main list holds a message or `timeout` seconds pass.

        BLMOVE of a list's tail onto itself leaves the list as it was, so this takes
        nothing: `take` does. (Messages of the other priority levels are seen by the next
        `take`, at most `timeout` later.)
        """
        self.client.blmove(self.queue, self.queue, max(timeout, 0.001), "RIGHT", "RIGHT")

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


def restore_visible(connection: Any, limit: int = 100) -> None:
    """kombu's restore of messages unacknowledged past the visibility timeout, for any queue.

    `connection` is a kombu connection to the broker; kombu's lock keeps concurrent restores
    (this process's and every Celery worker's) from restoring a message twice.
    """
    connection.default_channel.qos.restore_visible(num=limit, interval=1)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
