"""What the inference pool reads from a message: the Celery task it names and its segment.

The pool reads the same messages the per-segment Celery task does (Celery protocol 2, JSON,
`args=[segment_id]`), so producers and the reconciler do not know which one serves the queue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from workers.pool.inbox import Received

TASK_NAME = "oceanstream.inference"
#: Optional message header: the epoch second the sender sent the message (for queue delay).
SENT_AT_HEADER = "oceanstream_sent_at"


@dataclass
class Delivery:
    """A received inference message and what the batcher needs from it."""

    message: Received
    segment_id: str
    received: float  # monotonic seconds
    sent_at: float | None
    task_id: str | None = None  # the Celery task id, which Flower shows

    @property
    def video_id(self) -> str:
        """The segment id, under the name messages gave it before segments existed."""
        return self.segment_id


#: The longest segment id accepted (ids are 32 hex digits; a huge one would reach the logs).
MAX_ID_CHARS = 200


def segment_id_of(body: Any, headers: dict[str, Any]) -> str:
    """The segment id an `oceanstream.inference` message carries, or ValueError saying why
    not.

    Celery protocol 2 puts the task name in the headers and `[args, kwargs, embed]` in the
    body; protocol 1 put everything in a dict body.
    """
    if isinstance(body, dict):  # protocol 1
        task, args = body.get("task"), body.get("args")
    elif isinstance(body, list | tuple) and len(body) == 3:
        task, args = headers.get("task"), body[0]
    else:
        raise ValueError(f"not a Celery task message: {str(body)[:200]}")
    if task != TASK_NAME:
        raise ValueError(f"expected task {TASK_NAME!r}, got {task!r}")
    if not isinstance(args, list | tuple) or len(args) != 1 or not isinstance(args[0], str):
        raise ValueError(f"expected args [segment_id], got {str(args)[:200]}")
    if len(args[0]) > MAX_ID_CHARS:
        raise ValueError(f"expected a segment id, got text of {len(args[0])} characters")
    return args[0]


#: The name from before segments, when inference messages carried a video id.
video_id_of = segment_id_of


def task_id_of(body: Any, headers: dict[str, Any]) -> str | None:
    """The Celery task id (protocol 2: the `id` header; protocol 1: the body's `id`)."""
    value = body.get("id") if isinstance(body, dict) else headers.get("id")
    return value if isinstance(value, str) else None


def sent_at_of(headers: dict[str, Any]) -> float | None:
    """The sender's epoch second from SENT_AT_HEADER, when it is a finite number."""
    value = headers.get(SENT_AT_HEADER)
    try:
        sent = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return sent if sent is not None and math.isfinite(sent) else None


def delivery_of(message: Received, received: float) -> Delivery:
    """The Delivery of an inference message; ValueError when it is not one."""
    headers = message.headers or {}
    if message.error is not None:
        raise ValueError(message.error)
    segment_id = segment_id_of(message.body, headers)
    return Delivery(
        message, segment_id, received, sent_at_of(headers), task_id_of(message.body, headers)
    )
