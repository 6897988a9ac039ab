"""`GET /v1/videos/{id}`'s answer, kept serialized per (tenant, video) and checked on every read.

A stored result is read from five tables and shown as JSON; for a video in a final state it
rarely changes, so one API process keeps the JSON bytes it last sent. It never trusts them
blindly: every read first runs one query, scoped to the caller's tenant, for the video's
result stamp (`db.repository.results.result_stamp`: status, last change, predictions, job
entries, segments). No row (an unknown id, another tenant's video, a video erased through any
API process or the CLI a moment ago) answers 404; a stamp unlike the kept one reads the
result again. So the cache saves the reading and the serializing, never the check, and
erasure is seen at once. Entries are keyed by tenant and video, so no tenant is ever served
another's bytes; a video not yet final is never kept (it changes with every stage).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from core.status import FINAL_STATUSES

if TYPE_CHECKING:
    from prometheus_client import Counter
    from sqlalchemy import Engine
    from sqlalchemy.orm import sessionmaker

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

    def read(self, tenant_id: str, video_id: str) -> bytes | None:
        """The tenant's video's result as JSON bytes; None when the tenant has no such video."""
        from db.repository.results import query_results, result_stamp

        key = (tenant_id, video_id)
        with self._checks.connect() as connection:
            found = result_stamp(session=connection, video_id=video_id, tenant_id=tenant_id)
        if found is None:
            self._drop(key)
            return None
        stamp = found
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.stamp == stamp:
                self._entries.move_to_end(key)
                self._count("cache")
                return entry.body
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
        return body

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
