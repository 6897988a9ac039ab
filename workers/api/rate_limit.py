"""The per-key request rate limit, counted in Redis.

The rate limit is a fixed window per API key, counted in Redis so it holds across API
processes: `oceanstream:api:rate:<key id>:<window number>`, expiring with its window (a
one-command Lua script counts and sets the expiry; concurrent requests share one command,
`RateLimiter`). Past the limit the answer is 429 with `Retry-After` (seconds to the next
window). When Redis cannot be reached the request goes through (the limit protects the
service; an outage of the counter must not take the API down with it) and a warning is
logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("oceanstream.api")


@dataclass(frozen=True)
class RateVerdict:
    allowed: bool
    retry_after_s: int


#: Adds ARGV[i + 1] to counter KEYS[i] for each i and returns the new counts; a counter's
#: first count of its window sets its expiry (ARGV[1] seconds). One command, one round trip,
#: atomic (no MULTI/EXEC around INCRBY and EXPIRE).
COUNT_SCRIPT = """
local counts = {}
for i, key in ipairs(KEYS) do
  local added = tonumber(ARGV[i + 1])
  local count = redis.call('INCRBY', key, added)
  if count == added then redis.call('EXPIRE', key, ARGV[1]) end
  counts[i] = count
end
return counts
"""


class RateLimiter:
    """`limit` requests per `window_s` seconds per key, counted in Redis.

    `check_async` is for the API's routes: checks made while a count is on its way to Redis
    wait together and go as one command (`COUNT_SCRIPT`, by its SHA once Redis knows it) on
    the asyncio client, a counter per key with all of its requests added at once. Each
    request still gets its own place in its key's count, so exactly `limit` pass a window
    whatever the concurrency, and a burst of N requests costs one round trip instead of N.
    `check` is for synchronous code: one round trip per check. `batched=False` sends one
    command per check (`OCEANSTREAM_API_READ_PATH_OFF`, to measure what batching is worth).
    """

    def __init__(
        self,
        redis_client: Any,
        limit: int,
        window_s: int,
        async_client: Any = None,
        batched: bool = True,
    ) -> None:
        self.batched = batched
        self.redis = redis_client
        self.async_redis = async_client
        self.limit = limit
        self.window_s = window_s
        self._count = redis_client.register_script(COUNT_SCRIPT)
        self._count_async = (
            None if async_client is None else async_client.register_script(COUNT_SCRIPT)
        )
        # Counter -> the checks waiting for the next command; the task sending them.
        self._waiting: dict[str, list[asyncio.Future[RateVerdict]]] = {}
        self._sender: asyncio.Task[None] | None = None

    def check(self, key_id: str) -> RateVerdict:
        counter, retry_after = self._window(key_id)
        try:
            (count,) = self._count(keys=[counter], args=[self.window_s + 1, 1])
        except Exception as exc:  # redis raises its own connection and timeout errors
            return self._uncounted(exc)
        return RateVerdict(int(count) <= self.limit, retry_after)

    async def check_async(self, key_id: str) -> RateVerdict:
        if self._count_async is None:
            from starlette.concurrency import run_in_threadpool

            return await run_in_threadpool(self.check, key_id)
        if not self.batched:
            counter, retry_after = self._window(key_id)
            try:
                (count,) = await self._count_async(keys=[counter], args=[self.window_s + 1, 1])
            except Exception as exc:  # redis raises its own connection and timeout errors
                return self._uncounted(exc)
            return RateVerdict(int(count) <= self.limit, retry_after)
        counter, _ = self._window(key_id)
        verdict: asyncio.Future[RateVerdict] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(counter, []).append(verdict)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_counts())
        return await verdict

    async def _send_counts(self) -> None:
        """Sends what waits, one command per round, until nothing does: the checks that
        arrive during a round trip make the next round."""
        assert self._count_async is not None
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            counters = list(batch)
            try:
                counts = await self._count_async(
                    keys=counters, args=[self.window_s + 1, *(len(batch[c]) for c in counters)]
                )
            except Exception as exc:  # redis raises its own connection and timeout errors
                uncounted = self._uncounted(exc)
                for waiting in batch.values():
                    _settle(waiting, [uncounted] * len(waiting))
                continue
            for counter, count in zip(counters, counts, strict=True):
                waiting = batch[counter]
                # The i-th waiting check is the (count - len + i + 1)-th request of its window.
                first = int(count) - len(waiting) + 1
                retry_after = self._retry_after(int(counter.rsplit(":", 1)[1]))
                verdicts = [
                    RateVerdict(first + i <= self.limit, retry_after) for i in range(len(waiting))
                ]
                _settle(waiting, verdicts)

    def _window(self, key_id: str) -> tuple[str, int]:
        """The counter of the current window and the seconds to the next one."""
        window = int(time.time() // self.window_s)
        return f"oceanstream:api:rate:{key_id}:{window}", self._retry_after(window)

    def _retry_after(self, window: int) -> int:
        return max(1, int((window + 1) * self.window_s - time.time() + 0.999))

    def _uncounted(self, exc: Exception) -> RateVerdict:
        log.warning("rate limit not counted (Redis unreachable: %s)", type(exc).__name__)
        return RateVerdict(True, 0)

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        if self.async_redis is not None:
            await self.async_redis.aclose()


def _settle(waiting: list[asyncio.Future[RateVerdict]], verdicts: list[RateVerdict]) -> None:
    """Gives each waiting check its verdict; one whose request is gone is skipped."""
    for future, verdict in zip(waiting, verdicts, strict=True):
        if not future.done():
            future.set_result(verdict)
