"""`oceanstream watch` handing segments to real workers: PostgreSQL, Redis, one worker per
queue, a live MPEG-TS stream over TCP."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clips import write_h264
from tests.support.cluster import Cluster
from tests.support.streams import TcpStream, start_watch, wait_connected

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.waits]


def test_segments_go_to_the_workers_and_their_results_come_back_while_streaming(
    tmp_path: Path,
    cluster: Cluster,
) -> None:
    clip = write_h264(tmp_path / "talking.mp4", seconds=8, fps=15, preset="veryfast")
    cluster.extra_env.update(OCEANSTREAM_SEGMENT_SECONDS="2", OCEANSTREAM_WATCH_RECONNECT_S="2")
    for queue in ("faces", "flow", "inference"):
        cluster.start_worker(queue)
    stream = TcpStream(clip).start()
    try:
        watch = start_watch(cluster.env, stream.url, "--name", "studio")
        wait_connected(stream, 120)
        ended = stream.wait(60)
        assert watch.finish(180) == 0, watch.stderr
    finally:
        stream.kill()
    assert [line["index"] for _, line in watch.lines] == [0, 1, 2, 3]
    assert watch.lines[0][0] < ended  # a result before the stream ended
    assert all(line["status"] == "done" for _, line in watch.lines)
    [(video_id, status, kind)] = cluster.query(
        "SELECT v.id, v.status, j.kind FROM videos v JOIN job_videos e ON e.video_id = v.id "
        "JOIN jobs j ON j.id = e.job_id WHERE v.name = 'studio'"
    )
    assert (status, kind) == ("done", "submit")
    rows = cluster.query(
        'SELECT "index", start_s, end_s, status FROM segments WHERE video_id = :v ORDER BY "index"',
        v=video_id,
    )
    assert rows == [(i, 2.0 * i, 2.0 * i + 2, "done") for i in range(4)]
    [(persons,)] = cluster.query("SELECT count(*) FROM persons WHERE video_id = :v", v=video_id)
    assert persons == 1
