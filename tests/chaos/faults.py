"""The faults the chaos suite injects, and how it times the recovery from each.

Every fault is made with the real thing: a private PostgreSQL server stopped and started, a
private redis-server killed and started again (losing every queued message), SIGKILL of a
worker process, a stage's workers stopped for minutes, raw bytes pushed onto a queue's list.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from workers.services.dead_letters import producer_list


@dataclass
class Recovery:
    """One fault: when it was made, when its cause went away, when the pipeline recovered."""

    fault: str
    started: float
    cleared: float | None = None
    recovered: float | None = None
    note: str = ""

    @property
    def seconds(self) -> float | None:
        """Time to recovery: from the cause gone (the service back) to the pipeline healed."""
        if self.recovered is None:
            return None
        return self.recovered - (self.cleared if self.cleared is not None else self.started)


@dataclass
class Timeline:
    """The faults of one run, printed as a table at the end."""

    faults: list[Recovery] = field(default_factory=list)

    def begin(self, fault: str) -> Recovery:
        entry = Recovery(fault, time.monotonic())
        self.faults.append(entry)
        return entry

    def table(self) -> str:
        lines = [f"{'fault':<42} {'lasted s':>9} {'recovery s':>11}  note"]
        for entry in self.faults:
            lasted = (entry.cleared or entry.started) - entry.started
            seconds = entry.seconds
            shown = f"{seconds:11.1f}" if seconds is not None else f"{'never':>11}"
            lines.append(f"{entry.fault:<42} {lasted:9.1f} {shown}  {entry.note}")
        return "\n".join(lines)


def poll_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Wait for `predicate`; the monotonic time it first held. TimeoutError past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic()
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def poison_payloads(queue: str) -> list[bytes]:
    """Messages no worker can run, each a different way of being wrong."""
    task = f"oceanstream.{queue}"
    wrong_args = {
        "body": base64.b64encode(json.dumps([[1, 2, 3], {}, {}]).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"task": task, "id": str(uuid.uuid4()), "lang": "py"},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
            "delivery_info": {"exchange": queue, "routing_key": queue},
            "delivery_mode": 2,
            "priority": 0,
        },
    }
    return [
        b"\xff\xfe\x80 not utf-8 \xc3\x28",
        b"this is not json",
        json.dumps({"hello": "no envelope"}).encode(),
        json.dumps(wrong_args).encode(),
    ]


def push_poison(client: object, queue: str) -> int:
    """Push every poison payload onto `queue`'s first list, as a broken producer would."""
    head = producer_list(queue)
    payloads = poison_payloads(queue)
    for payload in payloads:
        client.lpush(head, payload)  # type: ignore[attr-defined]
    return len(payloads)
