"""The read path's batching and caching, on a real PostgreSQL database and a real Redis.

Concurrent result checks share one query (`AsyncStamps`), concurrent rate counts share one
Redis command (`RateLimiter.check_async`), a recent key check is kept, and a result's ETag is
the same however its stamp was read. Each must answer exactly what one request at a time
would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from db.repository import tenants
from db.repository.results import result_stamp
from tests.support.postgres import POSTGRES_URL, open_postgres
from tests.support.redis import machine_redis_database
from tests.support.rows import add_video
from tests.support.services import free_port
from workers.api import auth
from workers.api.metrics import ApiMetrics
from workers.api.rate_limit import RateLimiter
from workers.api.result_cache import (
    APPLICATION_NAME,
    Answer,
    AsyncStamps,
    ResultCache,
    StampsUnavailable,
    read_uncached,
)
from workers.services.tenants import create_key

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    databases = open_postgres(POSTGRES_URL)
    try:
        url = databases.create("reads")
        upgrade_database(url)
        engine = make_engine(url)
        yield engine
        engine.dispose()
    finally:
        databases.drop_all()


@pytest.fixture(scope="module")
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture(scope="module")
def videos(factory: sessionmaker[Session]) -> dict[str, tuple[str, str]]:
    """Three videos: two of the default tenant, one of tenant "other": name -> (id, tenant)."""
    with factory.begin() as session:
        other = tenants.get_or_create_tenant(session=session, name="other", webhook_secret="s")
        mine, theirs = add_video(session, "mine"), add_video(session, "also-mine")
        foreign, _ = repo.get_or_create_video(
            session=session,
            content_hash="f" * 64,
            name="foreign.mp4",
            source_path="/data/foreign.mp4",
            size_bytes=1000,
            tenant_id=other.id,
        )
        return {
            "mine": (mine.id, mine.tenant_id),
            "also-mine": (theirs.id, theirs.tenant_id),
            "foreign": (foreign.id, other.id),
        }


def test_checks_made_together_share_one_query_and_match_one_at_a_time(
    engine: Engine, factory: sessionmaker[Session], videos: dict[str, tuple[str, str]]
) -> None:
    mine, default = videos["mine"]
    foreign, other = videos["foreign"]
    asks = [
        (mine, default),
        (videos["also-mine"][0], default),
        (foreign, other),
        (foreign, default),  # another tenant's video: no stamp
        (mine, other),
        ("0" * 32, default),  # nobody's
    ] * 5

    async def check_all() -> tuple[list[tuple[object, ...] | None], int]:
        stamps = AsyncStamps(engine)
        try:
            found = await asyncio.gather(*(stamps.fetch(v, t) for v, t in asks))
            return list(found), stamps.queries
        finally:
            await stamps.aclose()

    found, queries = asyncio.run(check_all())
    with engine.connect() as connection:
        expected = [result_stamp(session=connection, video_id=v, tenant_id=t) for v, t in asks]
    assert found == expected
    assert [stamp is None for stamp in found[:6]] == [False, False, False, True, True, True]
    assert queries < len(asks) / 4, queries  # one for the first check, one for the rest


def test_a_check_whose_connection_dies_fails_alone_and_the_next_one_reconnects(
    engine: Engine, factory: sessionmaker[Session], videos: dict[str, tuple[str, str]]
) -> None:
    mine, default = videos["mine"]

    async def run() -> None:
        stamps = AsyncStamps(engine)
        try:
            assert await stamps.fetch(mine, default) is not None
            assert end_checks_connection(engine) == 1
            with pytest.raises(StampsUnavailable):
                await stamps.fetch(mine, default)
            assert await stamps.fetch(mine, default) is not None  # a new connection
        finally:
            await stamps.aclose()

    asyncio.run(run())


def test_reads_at_once_agree_and_every_way_of_reading_gives_one_etag(
    engine: Engine, factory: sessionmaker[Session], videos: dict[str, tuple[str, str]]
) -> None:
    """Batched checks on the event loop, checks in a thread after the connection broke, and
    the uncached read: one ETag, and `If-None-Match` naming it leaves the JSON out."""
    mine, default = videos["mine"]
    cache = ResultCache(factory, ApiMetrics().result_reads)

    async def run() -> list[Answer | None]:
        try:
            answers = await asyncio.gather(*(cache.read_async(default, mine) for _ in range(20)))
            etag = answers[0].etag if answers[0] else ""
            answers.append(await cache.read_async(default, mine, etag))  # batched check: 304
            assert end_checks_connection(engine) == 1
            answers.append(await cache.read_async(default, mine, f'W/{etag}, "x"'))  # a thread
            answers.append(await cache.read_async(other_tenant, mine, etag))
            assert end_checks_connection(engine) == 1  # the last check had reconnected
            return answers
        finally:
            await cache.aclose()

    other_tenant = videos["foreign"][1]
    answers = asyncio.run(run())
    assert answers[-1] is None  # another tenant's read, checked in a thread too
    read = [answer for answer in answers[:20] if answer is not None]
    assert len(read) == 20 and len({(a.etag, a.body) for a in read}) == 1
    assert read[0].body is not None and read[0].etag.startswith('"')
    assert answers[20] == answers[21] == Answer(read[0].etag, None)
    uncached = read_uncached(factory, default, mine, None)
    assert uncached == read[0]
    assert read_uncached(factory, default, mine, "*") == Answer(read[0].etag, None)
    assert read_uncached(factory, other_tenant, mine, None) is None


def end_checks_connection(engine: Engine) -> int:
    """Terminates the result checks' connection (as a database restart would); how many."""
    with engine.connect() as admin:
        ended = admin.exec_driver_sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE application_name = '{APPLICATION_NAME}' AND datname = current_database()"
        ).all()
        admin.commit()
    return len(ended)


@pytest.fixture
def counter() -> Iterator[tuple[str, redis.Redis]]:
    """The machine's Redis on a database of this test's own: its URL and a client."""
    with machine_redis_database() as url:
        client = redis.Redis.from_url(url)
        yield url, client
        client.flushdb()
        client.close()


def limiter_on(url: str, limit: int, *, batched: bool = True) -> RateLimiter:
    import redis.asyncio

    return RateLimiter(
        redis.Redis.from_url(url),
        limit,
        60,
        async_client=redis.asyncio.Redis.from_url(url, single_connection_client=batched),
        batched=batched,
    )


def test_a_burst_of_rate_checks_is_one_command_and_exactly_the_limit_passes(
    counter: tuple[str, redis.Redis],
) -> None:
    url, counter_db = counter
    limiter = limiter_on(url, limit=7)
    evals_before = _script_calls(counter_db)

    async def burst() -> list[tuple[str, bool]]:
        try:
            asks = ["busy"] * 30 + ["quiet"] * 3
            verdicts = await asyncio.gather(*(limiter.check_async(key) for key in asks))
            return [(key, v.allowed) for key, v in zip(asks, verdicts, strict=True)]
        finally:
            await limiter.aclose()

    verdicts = asyncio.run(burst())
    assert sum(allowed for key, allowed in verdicts if key == "busy") == 7
    assert all(allowed for key, allowed in verdicts if key == "quiet")
    counts = {
        key.decode().split(":")[3]: int(counter_db.get(key)) for key in counter_db.scan_iter()
    }
    assert counts == {"busy": 30, "quiet": 3}
    assert all(0 < counter_db.ttl(key) <= 61 for key in counter_db.scan_iter())
    assert _script_calls(counter_db) - evals_before <= 3  # 33 checks, not 33 commands
    # The synchronous check counts on the same counters.
    assert limiter.check("quiet").allowed and not limiter.check("busy").allowed


def test_unbatched_rate_checks_send_a_command_each_and_pass_exactly_the_limit(
    counter: tuple[str, redis.Redis],
) -> None:
    url, counter_db = counter
    limiter = limiter_on(url, limit=4, batched=False)
    evals_before = _script_calls(counter_db)

    async def burst() -> list[bool]:
        try:
            verdicts = await asyncio.gather(*(limiter.check_async("k") for _ in range(12)))
            return [v.allowed for v in verdicts]
        finally:
            await limiter.aclose()

    assert sum(asyncio.run(burst())) == 4
    assert _script_calls(counter_db) - evals_before == 12


def test_rate_checks_pass_with_one_warning_per_command_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limiter = limiter_on(f"redis://127.0.0.1:{free_port()}/0", limit=1)

    async def burst() -> list[bool]:
        try:
            verdicts = await asyncio.gather(*(limiter.check_async("k") for _ in range(10)))
            return [v.allowed for v in verdicts]
        finally:
            await limiter.aclose()

    with caplog.at_level(logging.WARNING, logger="oceanstream.api"):
        assert asyncio.run(burst()) == [True] * 10
    warnings = [r for r in caplog.records if "rate limit not counted" in r.getMessage()]
    assert 1 <= len(warnings) <= 2


def _script_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(
        int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("evalsha", "eval")
    )


def test_a_kept_key_check_answers_a_burst_without_reading(
    factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = create_key(factory, "burst").key
    reads: list[str] = []
    real = auth.authenticate

    def counted(session_factory: sessionmaker, presented: str) -> object:
        reads.append(presented)
        return real(session_factory, presented)

    monkeypatch.setattr(auth, "authenticate", counted)
    keys = auth.KeyCache(ttl_s=60)

    async def burst() -> list[object]:
        first = await keys.authenticate_async(factory, key)
        rest = await asyncio.gather(*(keys.authenticate_async(factory, key) for _ in range(25)))
        return [first, *rest]

    callers = asyncio.run(burst())
    assert len(reads) == 1
    assert keys.authenticate(factory, "oceanstream_not-a-key") is None
    assert len({caller.tenant_id for caller in callers}) == 1  # type: ignore[attr-defined]
