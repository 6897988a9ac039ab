"""kombu's Redis transport layout: the one module that knows it (checked against kombu 5.7).

kombu keeps a queue on Redis as one list per priority level (`queue`, then `queue` + `sep` +
step for the other steps), records a delivered message as unacknowledged in a hash
(`unacked_key`: tag -> JSON `[payload, exchange, routing_key]`) and a sorted set
(`unacked_index_key`: tag -> delivery time), and stores each message as a JSON envelope
(`properties.delivery_tag`, `properties.delivery_info`, `content-type`, `body` with
`properties.body_encoding`). None of this is kombu's public API: the names are read from the
app's transport options with kombu's defaults, settings this module cannot honour are
refused up front, and tests/contracts/test_kombu_redis_layout.py fails when a kombu upgrade
changes any of it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# kombu.transport.redis.Channel's defaults (the contract tests compare them).
DEFAULT_SEP = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
DEFAULT_UNACKED_KEY = "unacked"
DEFAULT_UNACKED_INDEX_KEY = "unacked_index"

# redis-py URL scheme of each kombu Redis broker scheme.
_SCHEMES = {"redis": "redis", "rediss": "rediss", "redis+socket": "unix"}


class UnsupportedBrokerSetting(ValueError):
    """A broker or transport option the inbox cannot honour; the message says which."""


@dataclass(frozen=True)
class KombuRedisLayout:
    """Where kombu keeps a queue's messages and its unacknowledged deliveries."""

    sep: str = DEFAULT_SEP
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    unacked_key: str = DEFAULT_UNACKED_KEY
    unacked_index_key: str = DEFAULT_UNACKED_INDEX_KEY

    @classmethod
    def from_transport_options(cls, options: Mapping[str, Any] | None) -> KombuRedisLayout:
        """The layout the app's `broker_transport_options` give kombu; refuses what it can't use."""
        options = dict(options or {})
        if options.get("global_keyprefix"):
            raise UnsupportedBrokerSetting(
                "the broker transport option global_keyprefix is not supported by the "
                f"inference pool (got {options['global_keyprefix']!r}); remove it"
            )
        if options.get("ack_emulation", True) is False:
            raise UnsupportedBrokerSetting(
                "the inference pool needs kombu's ack emulation (ack_emulation=True)"
            )
        steps = tuple(options.get("priority_steps", DEFAULT_PRIORITY_STEPS))
        if (
            not steps
            or list(steps) != sorted(set(steps))
            or not all(isinstance(s, int) for s in steps)
        ):
            raise UnsupportedBrokerSetting(
                f"priority_steps must be increasing integers, got {options['priority_steps']!r}"
            )
        return cls(
            sep=str(options.get("sep", DEFAULT_SEP)),
            priority_steps=steps,
            unacked_key=str(options.get("unacked_key", DEFAULT_UNACKED_KEY)),
            unacked_index_key=str(options.get("unacked_index_key", DEFAULT_UNACKED_INDEX_KEY)),
        )

    def queue_lists(self, queue: str) -> list[str]:
        """The Redis lists of `queue`, in the order kombu consumes them (kombu's `_q_for_pri`)."""
        return [f"{queue}{self.sep}{step}" if step else queue for step in self.priority_steps]


def layout_of(app: Any) -> KombuRedisLayout:
    """The layout of a Celery app's broker: UnsupportedBrokerSetting if not a usable Redis."""
    redis_url(app.conf.broker_url)
    return KombuRedisLayout.from_transport_options(app.conf.broker_transport_options)


def redis_url(broker_url: str) -> str:
    """The redis-py URL of a kombu Redis broker URL; UnsupportedBrokerSetting for any other."""
    scheme, sep, rest = broker_url.partition("://")
    if scheme in _SCHEMES and sep:
        return f"{_SCHEMES[scheme]}://{rest}"
    raise UnsupportedBrokerSetting(
        f"the inference pool consumes from a Redis broker (redis://, rediss://, "
        f"redis+socket://), not {scheme + sep if sep else 'a URL without a scheme'}"
    )


def decode_payload(raw: str) -> tuple[str | None, Any, dict[str, Any], str | None]:
    """(delivery tag, decoded JSON body, headers, error) of a message as kombu stores it.

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


def restore_visible(connection: Any, limit: int = 100) -> None:
    """kombu's restore of messages unacknowledged past the visibility timeout, for any queue.

    `connection` is a kombu connection to the broker; kombu's lock keeps concurrent restores
    (this process's and every Celery worker's) from restoring a message twice.
    """
    connection.default_channel.qos.restore_visible(num=limit, interval=1)


# Pop up to ARGV[1] messages from the lists KEYS[3..] (in that order: kombu's priority order)
# and record each as unacknowledged at time ARGV[2] the way kombu's QoS.append does:
# KEYS[1][tag] = [payload, exchange, routing_key], KEYS[2][tag] = time.
# Returns a flat list: list key, payload, list key, payload, ...
TAKE_SCRIPT = """
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
# KEYS[1], KEYS[2]: unacked hash and index; ARGV[1]: 'front' (consumed next) or 'back'
# (kombu pushes with LPUSH and pops with RPOP/BRPOP, so the right end is the front).
REQUEUE_SCRIPT = """
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
