"""One read for many: concurrent requests that need the same answer wait for one task.

A popular key whose check has expired, or a popular result that has just changed, would
otherwise send every request in flight to the thread pool and the database at once, each
doing the same work (a stall of a tenth of a second at 50 concurrent requests).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


async def shared(
    flights: dict[Hashable, asyncio.Task[Any]],
    key: Hashable,
    start: Callable[[], Coroutine[Any, Any, T]],
) -> T:
    """`start()`'s result, run once for all the callers asking for `key` while it runs.

    `flights` holds the tasks in flight (one dict per kind of work, used from one event
    loop). A caller that goes away does not cancel the others' task."""
    flight = flights.get(key)
    if flight is None:
        flight = asyncio.get_running_loop().create_task(start())
        flights[key] = flight
        flight.add_done_callback(lambda done: _landed(flights, key, done))
    result: T = await asyncio.shield(flight)
    return result


def _landed(
    flights: dict[Hashable, asyncio.Task[Any]], key: Hashable, task: asyncio.Task[Any]
) -> None:
    if flights.get(key) is task:
        del flights[key]
    if not task.cancelled():
        task.exception()  # seen, even when every caller has gone
