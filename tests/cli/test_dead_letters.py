"""`oceanstream dead-letters list|replay|purge`, the real command on a redis-server of its own.

Records are written by `dead_letter`, as the workers write them; what the command prints of
them (reasons, payload previews) comes from the broker and must print literally.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cli.helpers import assert_one_line_error, oceanstream
from tests.support.redis import RedisServer, own_redis_server
from tests.support.services import free_port
from workers.services.dead_letters import (
    MAX_DEAD_LETTERS,
    MAX_PAYLOAD_BYTES,
    dead_letter,
    dead_letter_key,
    dead_letters,
    parse_record,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with own_redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(server.url)
    connection.flushdb()
    yield connection
    connection.close()


def run(home: Path, server: RedisServer, *args: str):  # type: ignore[no-untyped-def]
    return oceanstream(
        home, "dead-letters", *args, env={"OCEANSTREAM_BROKER_URL": server.url}, timeout=60
    )


def test_records_keep_the_bytes_the_queue_and_why_and_the_list_is_capped(
    client: redis.Redis,
) -> None:
    dead_letter(client, "ingest", b"\xff\x00binary", "not UTF-8\ntext")
    dead_letter(client, "ingest", "plain text", "not JSON")
    newest, oldest = (json.loads(r) for r in client.lrange(dead_letter_key("ingest"), 0, -1))
    assert newest["payload"] == "plain text" and newest["base64"] is False
    assert oldest["base64"] is True and oldest["reason"] == "not UTF-8 text"
    assert parse_record(json.dumps(oldest)).payload == b"\xff\x00binary"
    assert newest["queue"] == "ingest" and newest["time"].endswith("+00:00")
    assert dead_letter_key("ingest") == "oceanstream.dead.ingest"
    dead_letters(client, "flow", ((f"m{i}", "x") for i in range(MAX_DEAD_LETTERS + 5)))
    assert client.llen(dead_letter_key("flow")) == MAX_DEAD_LETTERS
    assert parse_record(client.lindex(dead_letter_key("flow"), 0)).payload == b"m10004"


def test_a_huge_payload_is_kept_cut_short_and_not_replayed(
    tmp_path: Path, server: RedisServer, client: redis.Redis
) -> None:
    huge = b"x" * (16 * 1024 * 1024)
    dead_letter(client, "flow", huge, "not JSON")
    dead_letter(client, "flow", b"small", "not JSON")
    assert client.memory_usage(dead_letter_key("flow")) < 4 * MAX_PAYLOAD_BYTES
    small, cut = (parse_record(r) for r in client.lrange(dead_letter_key("flow"), 0, -1))
    assert cut.payload == huge[:MAX_PAYLOAD_BYTES] and cut.size == len(huge) and cut.truncated
    assert small.payload == b"small" and not small.truncated
    listed = run(tmp_path, server, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout) < 4 * MAX_PAYLOAD_BYTES
    assert json.loads(listed.stdout)["flow"]["entries"][1]["size"] == len(huge)
    replayed = run(tmp_path, server, "replay", "--queue", "flow")
    assert replayed.stdout.strip() == (
        "replayed 1 message onto flow (1 payload too large to replay (kept cut short) removed)"
    )
    assert client.lrange("flow", 0, -1) == [b"small"]


def test_list_counts_every_queue_and_prints_data_literally(
    tmp_path: Path, server: RedisServer, client: redis.Redis
) -> None:
    dead_letter(client, "ingest", b"[bold red]boom[/] :x: \x1b[31m\xff", "reason [red]x[/] :x:")
    dead_letter(client, "inference", "{}", "not a message envelope: no properties")
    done = run(tmp_path, server, "list")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "ingest: 1  faces: 0  flow: 0  inference: 1"
    assert "reason [red]x[/] :x:" in done.stdout
    assert "[bold red]boom[/] :x: \\x1b[31m\\xff" in done.stdout
    assert "\x1b" not in done.stdout and "❌" not in done.stdout

    one = run(tmp_path, server, "list", "--queue", "inference", "--json")
    assert one.returncode == 0, one.stderr
    report = json.loads(one.stdout)
    assert list(report) == ["inference"] and report["inference"]["count"] == 1
    (entry,) = report["inference"]["entries"]
    assert entry["payload"] == "{}" and entry["reason"].startswith("not a message envelope")


def test_replay_pushes_the_oldest_back_on_their_queue_and_purge_empties_it(
    tmp_path: Path, server: RedisServer, client: redis.Redis
) -> None:
    for index in range(3):
        dead_letter(client, "faces", f"payload-{index}", "no task 'x' is registered")
    dead_letter(client, "faces", b"\xfe\xff", "not UTF-8 text")
    client.lpush("faces", "waiting")
    done = run(tmp_path, server, "replay", "--queue", "faces", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "replayed 2 messages onto faces"
    # Behind the message waiting there, oldest first (consumers pop from the right).
    assert client.lrange("faces", 0, -1)[::-1] == [b"waiting", b"payload-0", b"payload-1"]
    rest = run(tmp_path, server, "replay", "--queue", "faces")
    assert rest.stdout.strip() == "replayed 2 messages onto faces"
    assert client.lrange("faces", 0, 1) == [b"\xfe\xff", b"payload-2"]  # the bytes as received
    assert client.llen(dead_letter_key("faces")) == 0

    dead_letter(client, "flow", "x", "y")
    dead_letter(client, "flow", "x", "y")
    purged = run(tmp_path, server, "purge", "--queue", "flow")
    assert purged.stdout.strip() == "purged 2 dead letters of flow"
    assert client.exists(dead_letter_key("flow")) == 0


def test_an_unknown_queue_is_a_usage_error(tmp_path: Path, server: RedisServer) -> None:
    done = run(tmp_path, server, "replay", "--queue", "[red]nope[/]")
    assert_one_line_error(done, 2, "unknown queue '[red]nope[/]'", "ingest, faces, flow")


def test_an_unreachable_broker_is_one_line_and_exit_1(tmp_path: Path) -> None:
    broker = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    for args in (["list"], ["replay", "--queue", "ingest"], ["purge", "--queue", "ingest"]):
        done = oceanstream(
            tmp_path, "dead-letters", *args, env={"OCEANSTREAM_BROKER_URL": broker}, timeout=60
        )
        assert_one_line_error(done, 1, "cannot reach the broker at redis://", "***@127.0.0.1")
        assert "s3cret" not in done.stderr + done.stdout and "Traceback" not in done.stderr
