"""`GET /v1/videos/{id}`'s answer, kept serialized per (tenant, video) and checked on every read,
with an `ETag` from the result's stamp (`If-None-Match` naming it is answered 304).

A stored result is read from five tables and shown as JSON; for a video in a final state it
rarely changes, so one API process keeps the JSON bytes it last sent. It never trusts them
blindly: every read first runs one query, scoped to the caller's tenant, for the video's
result stamp (`db.repository.results.result_stamp`: status, last change, predictions, job
entries, segments), which is also the answer's ETag, the same in every API process. No row
(an unknown id, another tenant's video, a video erased through any API process or the CLI a
moment ago) answers 404; a stamp unlike the kept one reads the
result again. So the cache saves the reading and the serializing, never the check, and
erasure is seen at once. Entries are keyed by tenant and video, so no tenant is ever served
another's bytes; a video not yet final is never kept (it changes with every stage).

On PostgreSQL the check runs on the event loop (`AsyncStamps`: a psycopg connection of its
own, the checks of the reads that arrive together in one prepared query), so a read answered
from the cache or with 304 takes no thread; only reading a result anew goes to the thread
pool. On SQLite, or while that connection fails, the whole read runs in the thread pool.
`read_uncached` is the read without the cache (`OCEANSTREAM_API_READ_PATH_OFF`, for
benchmarks).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from core.status import FINAL_STATUSES
from db.repository.results import query_results, result_stamp, result_stamps_select

if TYPE_CHECKING:
    from prometheus_client import Counter
    from sqlalchemy import Engine
    from sqlalchemy.orm import sessionmaker

log = logging.getLogger("oceanstream.api")

_FINAL = frozenset(status.value for status in FINAL_STATUSES)


def _check_engine(session_factory: sessionmaker) -> Engine:
    """The engine the stamp is read with: on PostgreSQL in autocommit, so a check is one
    statement (no BEGIN and ROLLBACK round trips; one statement sees one snapshot anyway).
    SQLite keeps its own transaction handling (`db.engine`)."""
    engine: Engine = session_factory.kw["bind"]
    if engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def dump_json(content: Any) -> bytes:
    """JSON as the API's other answers are written (Starlette's `JSONResponse` settings)."""
    return json.dumps(
        content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")
    ).encode("utf-8")


def result_etag(stamp: tuple[Any, ...]) -> str:
    """A result's strong ETag: a digest of its stamp, times as UTC, so every API process and
    both ways of reading the stamp give the same tag for the same result."""

    def canonical(value: Any) -> Any:
        if isinstance(value, datetime):
            if value.tzinfo is not None:
                value = value.astimezone(UTC).replace(tzinfo=None)
            return value.isoformat()
        return value

    text = repr(tuple(canonical(value) for value in stamp))
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` header names `etag` (weak comparison, as RFC 9110 asks for
    this header) or is `*`."""
    if not if_none_match:
        return False
    tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in tags or etag in tags


@dataclass(frozen=True)
class Answer:
    """A read's answer: the result's ETag and its JSON, or no JSON when the reader's copy
    (`If-None-Match`) is current."""

    etag: str
    body: bytes | None


def read_uncached(
    session_factory: sessionmaker, tenant_id: str, video_id: str, if_none_match: str | None
) -> Answer | None:
    """The read without a cache: the stamp, then (unless the reader's copy is current) the
    result, in one session. None when the tenant has no such video."""
    with session_factory() as session:
        stamp = result_stamp(session=session, video_id=video_id, tenant_id=tenant_id)
        if stamp is None:
            return None
        etag = result_etag(stamp)
        if etag_matches(if_none_match, etag):
            return Answer(etag, None)
        rows = query_results(session=session, video_id=video_id)
    return Answer(etag, dump_json(rows[0].to_dict())) if rows else None


@dataclass(frozen=True)
class _Entry:
    stamp: tuple[Any, ...]
    body: bytes


class ResultCache:
    """The JSON of up to `size` final results and `max_bytes` bytes in all (the least
    recently read dropped first; a result over `max_bytes / 8` is never kept)."""

    def __init__(
        self,
        session_factory: sessionmaker,
        reads: Counter | None = None,
        size: int = 2048,
        max_bytes: int = 64 << 20,
        batched_checks: bool = True,
    ) -> None:
        """`reads`: a counter labelled by `source` (`cache` or `database`), counted per read."""
        self.session_factory = session_factory
        self.reads = reads
        self.size = size
        self.max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._checks = _check_engine(session_factory)
        engine = session_factory.kw["bind"]
        postgresql = engine.dialect.name == "postgresql"
        self.stamps = AsyncStamps(engine) if postgresql and batched_checks else None

    async def aclose(self) -> None:
        if self.stamps is not None:
            await self.stamps.aclose()

    def read(
        self, tenant_id: str, video_id: str, if_none_match: str | None = None
    ) -> Answer | None:
        """The tenant's video's result, or None when the tenant has no such video; its JSON
        is left out when `if_none_match` names its ETag."""
        with self._checks.connect() as connection:
            stamp = result_stamp(session=connection, video_id=video_id, tenant_id=tenant_id)
        return self._answer(tenant_id, video_id, stamp, if_none_match)

    async def read_async(
        self, tenant_id: str, video_id: str, if_none_match: str | None = None
    ) -> Answer | None:
        """As `read`; a kept or unchanged result whose stamp `AsyncStamps` checks takes no
        thread."""
        if self.stamps is not None:
            try:
                stamp = await self.stamps.fetch(video_id, tenant_id)
            except StampsUnavailable:
                pass
            else:
                if stamp is None:
                    self._drop((tenant_id, video_id))
                    return None
                etag = result_etag(stamp)
                if etag_matches(if_none_match, etag):
                    return Answer(etag, None)
                body = self._kept((tenant_id, video_id), stamp)
                if body is not None:
                    return Answer(etag, body)
                return await run_in_threadpool(self._answer, tenant_id, video_id, stamp)
        return await run_in_threadpool(self.read, tenant_id, video_id, if_none_match)

    def _kept(self, key: tuple[str, str], stamp: tuple[Any, ...] | None) -> bytes | None:
        """The kept JSON when its stamp is `stamp`."""
        if stamp is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.stamp != stamp:
                return None
            self._entries.move_to_end(key)
        self._count("cache")
        return entry.body

    def _answer(
        self,
        tenant_id: str,
        video_id: str,
        stamp: tuple[Any, ...] | None,
        if_none_match: str | None = None,
    ) -> Answer | None:
        """The result whose stamp was just read as `stamp`: current at the reader, kept, or
        read and maybe kept."""
        key = (tenant_id, video_id)
        if stamp is None:
            self._drop(key)
            return None
        etag = result_etag(stamp)
        if etag_matches(if_none_match, etag):
            return Answer(etag, None)
        body = self._kept(key, stamp)
        if body is not None:
            return Answer(etag, body)
        # Read after the stamp: a change in between leaves a stamp older than the bytes, so
        # the next read finds it stale and reads again (never the other way round).
        with self.session_factory() as session:
            rows = query_results(session=session, video_id=video_id)
        if not rows:  # erased between the two reads
            self._drop(key)
            return None
        body = dump_json(rows[0].to_dict())
        self._count("database")
        if stamp[0] in _FINAL and len(body) <= self.max_bytes // 8:
            self._keep(key, _Entry(stamp, body))
        else:
            self._drop(key)
        return Answer(etag, body)

    def _count(self, source: str) -> None:
        if self.reads is not None:
            self.reads.labels(source).inc()

    def __len__(self) -> int:
        return len(self._entries)

    def _keep(self, key: tuple[str, str], entry: _Entry) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += len(entry.body) - (0 if old is None else len(old.body))
            self._entries[key] = entry
            while len(self._entries) > self.size or self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= len(dropped.body)

    def _drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old.body)


#: How the checks' connection shows in `pg_stat_activity` (unless the URL names one).
APPLICATION_NAME = "oceanstream-api-checks"


class StampsUnavailable(Exception):
    """`AsyncStamps` could not read the stamp (no connection, or it broke)."""


class AsyncStamps:
    """Result stamps read on the event loop, the checks of concurrent reads in one query.

    A read's check waits while a query is on its way; when it comes back, everything that
    waited goes as the next query (`db.repository.results.result_stamps_select`: the stamps
    of the videos whose id is in an array, prepared once). So a burst of N reads costs one
    round trip and one statement, not N. A row counts for a read only when its tenant is the
    reader's, so another tenant's video is no row, as in `result_stamp`.

    One psycopg async connection of its own (`APPLICATION_NAME`), in autocommit (one
    statement, no BEGIN), opened on first use. When it fails, the checks in flight raise
    `StampsUnavailable` (their reads go to a thread instead) and the next query opens a new
    one. Used from one event loop.
    """

    def __init__(self, engine: Engine, connect_timeout_s: float = 5.0) -> None:
        from sqlalchemy.dialects import postgresql

        self.connect_timeout_s = connect_timeout_s
        self._sql = str(result_stamps_select().compile(dialect=postgresql.dialect()))
        args, params = engine.dialect.create_connect_args(engine.url)
        params.setdefault("application_name", APPLICATION_NAME)
        self._connect_args = (args, params)
        self._connection: Any = None
        # video id -> (tenant id, the read's future) of each read waiting for the next query
        self._waiting: dict[str, list[tuple[str, asyncio.Future[Any]]]] = {}
        self._sender: asyncio.Task[None] | None = None
        self.queries = 0  # statements sent, for the tests and the curious

    async def fetch(self, video_id: str, tenant_id: str) -> tuple[Any, ...] | None:
        """The tenant's video's stamp, as `result_stamp` reads it; raises `StampsUnavailable`."""
        stamp: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(video_id, []).append((tenant_id, stamp))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        result: tuple[Any, ...] | None = await stamp
        return result

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, {}
            try:
                rows = await self._query(list(batch))
            except StampsUnavailable as exc:
                for waiting in batch.values():
                    for _, stamp in waiting:
                        if not stamp.done():
                            stamp.set_exception(exc)
                continue
            for video_id, waiting in batch.items():
                row = rows.get(video_id)
                for tenant_id, stamp in waiting:
                    if not stamp.done():
                        mine = row is not None and row[1] == tenant_id
                        stamp.set_result(tuple(row[2:]) if row is not None and mine else None)

    async def _query(self, video_ids: list[str]) -> dict[str, Any]:
        import psycopg

        try:
            if self._connection is None:
                args, params = self._connect_args
                self._connection = await asyncio.wait_for(
                    psycopg.AsyncConnection.connect(*args, **params, autocommit=True),
                    self.connect_timeout_s,
                )
            cursor = await self._connection.execute(
                self._sql, {"video_ids": video_ids}, prepare=True
            )
            rows = await cursor.fetchall()
        except (OSError, TimeoutError, psycopg.Error) as exc:
            log.warning("result check failed on its connection (%s); reading in threads", exc)
            await self._close()
            raise StampsUnavailable(str(exc)) from exc
        except BaseException:  # cancelled mid-statement: the connection's state is unknown
            await self._close()
            raise
        self.queries += 1
        return {row[0]: row for row in rows}

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def aclose(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        await self._close()
