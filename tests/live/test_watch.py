"""`oceanstream watch` on a real live source: ffmpeg serving a generated talking head in real
time as MPEG-TS over TCP, the watcher analysing it in its own process (`--in-process`)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.traits import TRAITS
from tests.clips import write_h264
from tests.support.services import ROOT, free_port
from tests.support.streams import (
    HlsStream,
    TcpStream,
    UdpStream,
    env_for,
    start_watch,
    wait_connected,
)

pytestmark = [pytest.mark.slow, pytest.mark.waits]

#: Watcher start-up (Python, TensorFlow, the model warmed) on a busy two-core host.
START_S = 180


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10 s of a talking head at 15 fps: five windows of 2 s."""
    path = tmp_path_factory.mktemp("live") / "talking.mp4"
    return write_h264(path, seconds=10, fps=15, preset="veryfast")


def _query(home: Path, sql: str, **params: object) -> list[tuple]:
    engine = sa.create_engine(f"sqlite:///{home / 'oceanstream.db'}", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def _scrape(port: int) -> dict[str, str]:
    """The watcher's Prometheus metrics: name{labels} -> value."""
    from urllib.request import urlopen

    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )


def _scores(segment: dict) -> list[float]:
    [person] = segment["persons"]
    return [person["traits"][name] for name in TRAITS]


def test_segments_arrive_while_the_stream_runs_and_match_the_file(
    tmp_path: Path, clip: Path
) -> None:
    port = free_port()
    env = env_for(tmp_path / "home", OCEANSTREAM_METRICS_PORT=str(port))
    stream = TcpStream(clip).start()
    try:
        watch = start_watch(env, stream.url, "--name", "interview", "--in-process")
        watch.wait_lines(1, START_S)
        metrics = _scrape(port)
        ended = stream.wait(60)
        assert watch.finish(120) == 0, watch.stderr
    finally:
        stream.kill()
    # The latency histogram counts the first result while the stream still runs.
    assert float(metrics["oceanstream_watch_segment_latency_seconds_count"]) >= 1
    assert float(metrics['oceanstream_watch_segments_total{outcome="cut"}']) >= 1
    live = [line for _, line in watch.lines]
    assert [s["index"] for s in live] == [0, 1, 2, 3, 4]
    # Results come while the stream runs: the first well before its end.
    assert watch.lines[0][0] < ended - 2.0
    assert {s["video"] for s in live} == {"interview"} and len({s["video_id"] for s in live}) == 1

    analyzed = subprocess.run(
        [sys.executable, "-m", "workers.cli", "analyze", str(clip), "--json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert analyzed.returncode == 0, analyzed.stderr
    [result] = json.loads(analyzed.stdout)
    from_file = result["segments"]
    assert [(s["start_s"], s["end_s"], s["status"]) for s in live] == [
        (s["start_s"], s["end_s"], s["status"]) for s in from_file
    ]
    # The stream carries the file's own packets (-c copy), so each segment decodes the same
    # frames: only the float arithmetic of two model runs may differ.
    for streamed, stored in zip(live, from_file, strict=True):
        assert _scores(streamed) == pytest.approx(_scores(stored), abs=1e-4)
    [(status, error)] = _query(
        tmp_path / "home", "SELECT status, error FROM videos WHERE name = 'interview'"
    )
    assert (status, error) == ("done", None)


def test_sigterm_mid_stream_leaves_the_video_final_and_a_restart_continues_it(
    tmp_path: Path, clip: Path
) -> None:
    home = tmp_path / "home"
    stream = TcpStream(clip).start()
    try:
        watch = start_watch(env_for(home), stream.url, "--name", "cut", "--in-process")
        watch.wait_lines(2, START_S)
        assert stream.process is not None and stream.process.poll() is None  # mid-stream
        watch.process.send_signal(signal.SIGTERM)
        assert watch.finish(120) == 0, watch.stderr
    finally:
        stream.kill()
    [(video_id, status)] = _query(home, "SELECT id, status FROM videos WHERE name = 'cut'")
    assert status == "done"
    segments = _query(
        home,
        'SELECT "index", status, end_s FROM segments WHERE video_id = :v ORDER BY "index"',
        v=video_id,
    )
    assert 2 <= len(segments) <= 4
    assert all(s == "done" for _, s, _ in segments)
    assert [index for index, _, _ in segments] == [s["index"] for _, s in watch.lines]

    # Started again under the same name, the watch continues the video after a gap.
    again = TcpStream(clip).start()
    try:
        watch = start_watch(env_for(home), again.url, "--name", "cut", "--in-process")
        wait_connected(again, START_S)
        again.wait(60)
        assert watch.finish(120) == 0, watch.stderr
    finally:
        again.kill()
    assert _query(home, "SELECT count(*) FROM videos") == [(1,)]
    [(status, timings)] = _query(
        home, "SELECT status, timings FROM videos WHERE id = :v", v=video_id
    )
    assert status == "done" and json.loads(timings)["gaps"] == 1
    rows = _query(
        home,
        'SELECT "index", start_s, end_s, status, timings FROM segments WHERE video_id = :v '
        'ORDER BY "index"',
        v=video_id,
    )
    assert [r[0] for r in rows] == list(range(len(segments) + 5))
    resumed = rows[len(segments)]
    assert resumed[1] >= rows[len(segments) - 1][2] and resumed[1] % 2 == 0
    assert json.loads(resumed[4])["gap_before_s"] == pytest.approx(
        resumed[1] - rows[len(segments) - 1][2]
    )
    assert all(r[3] == "done" for r in rows)
    # Persons are linked across both watches: one person, seen in every segment.
    [(persons, segments_seen)] = _query(
        home, "SELECT count(*), max(segments) FROM persons WHERE video_id = :v", v=video_id
    )
    assert (persons, segments_seen) == (1, len(rows))


def test_a_source_that_never_opens_fails_with_one_line_and_exit_1(tmp_path: Path) -> None:
    from tests.support.redis import REDIS_URL

    home = tmp_path / "home"
    env = env_for(home, OCEANSTREAM_WATCH_RECONNECT_S="1", OCEANSTREAM_BROKER_URL=REDIS_URL)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", "watch", f"tcp://127.0.0.1:{free_port()}"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open tcp://127.0.0.1:")
    assert "Connection refused" in lines[0] and "tried for 1 s" in lines[0]
    assert time.monotonic() - started < START_S
    assert _query(home, "SELECT count(*) FROM videos") == [(0,)]


def test_a_server_back_within_the_reconnect_window_gives_one_video_with_a_gap(
    tmp_path: Path, clip: Path
) -> None:
    home = tmp_path / "home"
    env = env_for(home, OCEANSTREAM_WATCH_RECONNECT_S="8")
    first = TcpStream(clip).start()
    second = TcpStream(clip, port=first.port)
    try:
        watch = start_watch(env, first.url, "--name", "flaky", "--in-process")
        watch.wait_lines(1, START_S)
        first.kill()  # mid-stream
        time.sleep(1.0)
        second.start()
        wait_connected(second, 30)
        second.wait(60)
        assert watch.finish(120) == 0, watch.stderr
    finally:
        first.kill()
        second.kill()
    [(video_id, status, timings)] = _query(
        home, "SELECT id, status, timings FROM videos WHERE name = 'flaky'"
    )
    assert status == "done"
    timings = json.loads(timings)
    assert timings["gaps"] == 1 and timings["gap_s"] > 0
    segments = _query(
        home,
        'SELECT start_s, end_s, timings FROM segments WHERE video_id = :v ORDER BY "index"',
        v=video_id,
    )
    after = [i for i, (_, _, t) in enumerate(segments) if "gap_before_s" in json.loads(t)]
    assert len(after) == 1 and after[0] >= 1
    gap = json.loads(segments[after[0]][2])["gap_before_s"]
    assert segments[after[0]][0] == pytest.approx(segments[after[0] - 1][1] + gap), segments
    # The second connection streamed the whole clip again: five more windows.
    assert len(segments) - after[0] == 5


def test_an_mpegts_stream_over_udp_is_watched(tmp_path: Path, clip: Path) -> None:
    home = tmp_path / "home"
    # UDP has no end: the watch ends when it is stopped (here, once every window is in).
    stream = UdpStream(clip)
    watch = start_watch(
        env_for(home, OCEANSTREAM_WATCH_RECONNECT_S="30"), stream.url, "--name", "udp",
        "--in-process",
    )  # fmt: skip
    try:
        stream.wait_bound(START_S)
        stream.start()
        watch.wait_lines(5, 120)
        watch.process.send_signal(signal.SIGTERM)
        assert watch.finish(120) == 0, watch.stderr
    finally:
        stream.kill()
        if watch.process.poll() is None:
            watch.process.kill()
    lines = [line for _, line in watch.lines]
    assert [(s["index"], s["start_s"]) for s in lines] == [(i, 2.0 * i) for i in range(5)]
    assert [s["end_s"] for s in lines[:4]] == [2.0, 4.0, 6.0, 8.0]
    # UDP has no end of stream: the last frames still in the sender's and the demuxer's
    # buffers when it stops may never come, and the last window may end a frame or two short.
    assert 10.0 - 3 / 15 <= lines[4]["end_s"] <= 10.0
    assert all(s["status"] == "done" for s in lines)
    assert _query(home, "SELECT status FROM videos WHERE name = 'udp'") == [("done",)]


def test_a_live_hls_playlist_over_http_is_watched(tmp_path: Path, clip: Path) -> None:
    home = tmp_path / "home"
    stream = HlsStream(clip, tmp_path / "hls").start()
    try:
        watch = start_watch(
            env_for(home, OCEANSTREAM_WATCH_RECONNECT_S="10"), stream.url, "--name", "hls",
            "--in-process",
        )  # fmt: skip
        watch.wait_lines(3, START_S)
        watch.process.send_signal(signal.SIGTERM)
        assert watch.finish(120) == 0, watch.stderr
    finally:
        stream.kill()
    lines = [line for _, line in watch.lines]
    # The playlist is joined where it stands: its windows start at 0 on the video's timeline.
    assert [(s["index"], s["start_s"]) for s in lines[:3]] == [(0, 0.0), (1, 2.0), (2, 4.0)]
    assert all(s["status"] == "done" for s in lines)
    [(status,)] = _query(home, "SELECT status FROM videos WHERE name = 'hls'")
    assert status == "done"
