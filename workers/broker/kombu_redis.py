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

`DeadLetteringTransport` is kombu's Redis transport with one change, made in its Channel's
`_brpop_read` and `_get` (the two places a consumer pops a payload and decodes it): a
payload kombu cannot turn into a message (not UTF-8, not JSON, not an envelope with a
delivery tag and delivery info, a body that does not decode) is dead-lettered
(`workers.broker.dead_letter_lists`) instead of raising out of the worker's event loop, which
kills the worker and loses the messages it had prefetched. Celery selects it with
`broker_transport` (`TRANSPORT`); `dead_letter_message` does the same for a message the
Celery consumer refuses after kombu delivered it.

Decoding never raises: any exception from it (a `RecursionError` for `[[[[...`, a
`MemoryError` for a huge payload, a `UnicodeError`) dead-letters that payload alone. And no
payload can crash consumers in a loop: kombu marks a message it restores (visibility
timeout, a rejected or abandoned delivery) `redelivered`; each redelivery is counted on the
broker (`workers.broker.dead_letter_lists.count_deliveries`), and a message delivered
`max_deliveries` times without an acknowledgement (transport option, `DEFAULT_MAX_DELIVERIES`)
is dead-lettered instead of being handed to a task again, by this channel and by the
inference pool's inbox alike.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from workers.broker.dead_letter_lists import count_deliveries, dead_letter
from workers.time_limits import VISIBILITY_TIMEOUT_S

# kombu.transport.redis.Channel's defaults (the contract tests compare them).
DEFAULT_SEP = "\x06\x16"
DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
DEFAULT_UNACKED_KEY = "unacked"
DEFAULT_UNACKED_INDEX_KEY = "unacked_index"
#: Deliveries of one message without an acknowledgement before it is dead-lettered instead.
DEFAULT_MAX_DELIVERIES = 5

#: The pipeline's kombu Redis transport options (the app adds `max_deliveries` from the
#: settings); `KombuRedisLayout.from_transport_options` reads the key names from them.
BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": VISIBILITY_TIMEOUT_S,
    "queue_order_strategy": "priority",
}

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
    max_deliveries: int = DEFAULT_MAX_DELIVERIES  # not kombu's: the option `max_deliveries`

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
        max_deliveries = options.get("max_deliveries", DEFAULT_MAX_DELIVERIES)
        if not isinstance(max_deliveries, int) or max_deliveries < 1:
            raise UnsupportedBrokerSetting(
                f"max_deliveries must be a positive integer, got {max_deliveries!r}"
            )
        return cls(
            sep=str(options.get("sep", DEFAULT_SEP)),
            priority_steps=steps,
            unacked_key=str(options.get("unacked_key", DEFAULT_UNACKED_KEY)),
            unacked_index_key=str(options.get("unacked_index_key", DEFAULT_UNACKED_INDEX_KEY)),
            max_deliveries=max_deliveries,
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

    Only JSON bodies are accepted, as the Celery app's `accept_content` says. The tag is
    returned whenever the envelope has one (the take script recorded the message under it),
    so that a message refused for its body is still acknowledged. It never raises: any
    error from decoding (a RecursionError for deeply nested JSON included) is the reason.
    """
    try:
        return _decode_payload(raw)
    except Exception as exc:
        return None, None, {}, f"cannot decode the message: {_error_text(exc)}"


def _decode_payload(raw: str) -> tuple[str | None, Any, dict[str, Any], str | None]:
    try:
        payload = json.loads(raw)
    except Exception as exc:
        return None, None, {}, f"not JSON: {_error_text(exc)}"
    properties = payload.get("properties") if isinstance(payload, dict) else None
    if not isinstance(properties, dict):
        return None, None, {}, "not a message envelope: no properties"
    found = properties.get("delivery_tag")
    tag = found if isinstance(found, str) else None
    headers = payload.get("headers") or {}
    if not isinstance(headers, dict):
        return tag, None, {}, "not a message envelope: headers are not an object"
    content_type = payload.get("content-type")
    if content_type != "application/json":
        return tag, None, headers, f"refused content type {content_type!r} (JSON only)"
    try:
        body = payload.get("body", "")
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        return tag, json.loads(body), headers, None
    except Exception as exc:
        return tag, None, headers, f"cannot decode the message body: {_error_text(exc)}"


def _error_text(exc: BaseException) -> str:
    """An exception as a reason: its message, or its type's name where that says more."""
    text = str(exc)
    if isinstance(exc, ValueError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_redelivered(payload: Any) -> bool:
    """Whether kombu restored this envelope after a delivery that was never acknowledged."""
    if not isinstance(payload, dict):
        return False
    headers = payload.get("headers")
    properties = payload.get("properties")
    info = properties.get("delivery_info") if isinstance(properties, dict) else None
    return (isinstance(headers, dict) and headers.get("redelivered") is True) or (
        isinstance(info, dict) and info.get("redelivered") is True
    )


def too_many_deliveries(deliveries: int) -> str:
    """The dead-letter reason of a message delivered `deliveries` times, never acknowledged."""
    return (
        f"delivered {deliveries} times without an acknowledgement (each consumer that took "
        "it stopped before finishing it); not handed to a task again"
    )


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


# -- payloads no consumer can read ---------------------------------------------------------------

#: Celery's `broker_transport`: kombu's Redis transport whose channel dead-letters poison.
TRANSPORT = "workers.broker.kombu_redis:DeadLetteringTransport"
#: The URL schemes kombu maps to its Redis transport (`kombu.transport.TRANSPORT_ALIASES`).
KOMBU_REDIS_SCHEMES = {
    "redis": "kombu.transport.redis:Transport",
    "rediss": "kombu.transport.redis:Transport",
}


def dead_letter_redis_urls() -> None:
    """In this process, have kombu open `redis://` and `rediss://` URLs with the
    dead-lettering transport.

    For worker processes (set before their consumer connects; pool children inherit it). The
    broker URL keeps its scheme, so what kombu and Celery print of it stays `redis://...`;
    Flower and producers, other processes, keep kombu's own transport. A scheme kombu maps
    elsewhere than this module was checked against is left alone.
    """
    from kombu.transport import TRANSPORT_ALIASES

    for scheme, original in KOMBU_REDIS_SCHEMES.items():
        if TRANSPORT_ALIASES.get(scheme) in (original, TRANSPORT):
            TRANSPORT_ALIASES[scheme] = TRANSPORT


def envelope_problem(payload: Any) -> str | None:
    """Why kombu could not make a message of a decoded JSON payload; None if it can.

    kombu's virtual Message reads `properties.delivery_tag` and `body` (decoded per
    `properties.body_encoding`), and its QoS records `delivery_info.exchange` and
    `.routing_key`; a payload without them raises inside the event loop.
    """
    if not isinstance(payload, dict):
        return f"not a message envelope: a JSON {type(payload).__name__}, not an object"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "not a message envelope: no properties"
    if not isinstance(properties.get("delivery_tag"), str):
        return "not a message envelope: no delivery tag"
    info = properties.get("delivery_info")
    if not isinstance(info, dict) or not all(
        isinstance(info.get(name), str) for name in ("exchange", "routing_key")
    ):
        return "not a message envelope: no delivery info (exchange, routing key)"
    if not isinstance(payload.get("headers") or {}, dict):
        return "not a message envelope: headers are not an object"
    body = payload.get("body")
    if body and properties.get("body_encoding") == "base64":
        if not isinstance(body, str | bytes):
            return "the message body is not base64 text"
        try:
            base64.b64decode(body, validate=True)
        except ValueError:
            return "the message body is not valid base64"
    return None


def payload_problem(item: bytes | str) -> tuple[dict[str, Any] | None, str | None]:
    """(envelope, None) for a payload as popped off a queue list, or (None, why not)."""
    try:
        text = item.decode("utf-8") if isinstance(item, bytes) else item
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (byte {exc.start})"
    except Exception as exc:
        return None, f"not UTF-8 text: {_error_text(exc)}"
    try:
        payload = json.loads(text)
    except Exception as exc:  # RecursionError, MemoryError: whatever it is, this payload alone
        return None, f"not JSON: {_error_text(exc)}"
    try:
        problem = envelope_problem(payload)
    except Exception as exc:
        problem = f"not a message envelope: {_error_text(exc)}"
    return (None, problem) if problem else (payload, None)


class DeadLetteringChannel(kombu_redis.Channel):
    """kombu's Redis Channel that dead-letters a payload it cannot deliver (module doc).

    `_brpop_read` and `_get` are kombu 5.7's, with `loads(bytes_to_str(item))` replaced by
    `_deliverable`; tests/contracts/ checks kombu's methods are still the ones copied here.
    """

    #: The transport option `max_deliveries` (the module doc).
    max_deliveries = DEFAULT_MAX_DELIVERIES
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "max_deliveries")  # type: ignore[assignment]

    def _brpop_read(self, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next
                # iteration will reconnect automatically.
                self.client.connection.disconnect()
                raise
            if dest__item:
                dest, item = dest__item
                dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
                self._queue_cycle.rotate(dest)
                payload = self._deliverable(dest, item)
                if payload is not None:
                    self.connection._deliver(payload, dest)
                return True
            else:
                raise kombu_redis.Empty()
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()

    def _get(self, queue: str, timeout: Any = None) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                while item := client.rpop(self._q_for_pri(queue, pri)):
                    self._maybe_update_queues_expire(client, queue)
                    payload = self._deliverable(queue, item, client)
                    if payload is not None:
                        return payload

            self._maybe_update_queues_expire(client, queue)
            raise kombu_redis.Empty()

    def _deliverable(self, queue: str, item: bytes, client: Any = None) -> dict[str, Any] | None:
        """The envelope of a popped payload, or None once it is dead-lettered."""
        payload, problem = payload_problem(item)
        if payload is not None:
            try:
                self.Message(payload, channel=self)  # what delivering it will do first
            except Exception as exc:
                problem = f"kombu cannot read the message: {type(exc).__name__}: {exc}"
        if payload is not None and problem is None:
            if not is_redelivered(payload):
                return payload
            with self.conn_or_acquire(client) as connection:
                tag = payload["properties"]["delivery_tag"]
                (deliveries,) = count_deliveries(connection, [tag])
            if deliveries <= self.max_deliveries:
                return payload
            problem = too_many_deliveries(deliveries - 1)
        with self.conn_or_acquire(client) as connection:
            dead_letter(connection, queue, item, problem or "")
        return None

    def dead_letter(self, queue: str, raw: bytes | str, reason: str) -> None:
        with self.conn_or_acquire() as client:
            dead_letter(client, queue, raw, reason)


class DeadLetteringTransport(kombu_redis.Transport):
    """kombu's Redis transport with `DeadLetteringChannel`."""

    Channel = DeadLetteringChannel


def dead_letter_message(message: Any, reason: str) -> None:
    """Dead-letter a message kombu delivered (its envelope, as stored) on its queue.

    For a message the Celery consumer refuses: its queue is the routing key (each of the
    app's queues is bound to its own name), its payload kombu's Message keeps as `_raw`.
    """
    info = getattr(message, "delivery_info", None) or {}
    queue = str(info.get("routing_key") or info.get("exchange") or "unknown")
    raw = getattr(message, "_raw", None)
    try:
        text = json.dumps(raw) if raw is not None else bytes_to_str(message.body or b"")
    except Exception:  # a structure too deep to encode again: its body as received
        text = bytes_to_str(message.body or b"")
    channel = message.channel
    if isinstance(channel, DeadLetteringChannel):
        channel.dead_letter(queue, text, reason)
    else:  # another transport: nowhere to put it but the log
        logging.getLogger("oceanstream.dead_letters").error(
            "dropped a message on %s (no dead-letter list on this broker): %s", queue, reason
        )
