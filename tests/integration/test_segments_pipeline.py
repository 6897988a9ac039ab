"""A video as segments x persons through real workers: Redis, PostgreSQL or SQLite, processes.

Each clip is generated (`tests.clips`, `tests.people_clips`) and short segments
(OCEANSTREAM_SEGMENT_SECONDS) cut it into several windows, so a few seconds of 320x240 video
exercise what a long upload does: one sampling message per segment, faces and flow per
segment, inference per segment and person, and the video aggregated once by its last segment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.traits import TRAITS
from db.attention import decode_attention
from tests.clips import write_talking_head
from tests.people_clips import write_edit, write_side_by_side
from tests.support.cluster import Cluster, running_cluster
from tests.support.postgres import POSTGRES_URL, open_postgres
from tests.support.redis import RedisServer, machine_redis_database
from tests.support.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FINAL = ("done", "no_face", "failed")


def submit(cluster: Cluster, *paths: Path) -> str:
    done = cluster.cli("submit", *map(str, paths))
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def video_id(cluster: Cluster, name: str) -> str:
    [(found,)] = cluster.query("SELECT id FROM videos WHERE name = :name", name=name)
    return str(found)


def segments_of(cluster: Cluster, video: str) -> list[tuple]:
    """(index, start_s, end_s, status, persons) of each segment, in order."""
    return cluster.query(
        'SELECT "index", start_s, end_s, status, persons FROM segments '
        'WHERE video_id = :v ORDER BY "index"',
        v=video,
    )


def segment_persons(cluster: Cluster, video: str) -> dict[int, list[int]]:
    """Segment index -> the video-level person numbers of its persons, in their order."""
    rows = cluster.query(
        'SELECT s."index", sp.person FROM segment_persons sp '
        "JOIN segments s ON s.id = sp.segment_id WHERE s.video_id = :v "
        'ORDER BY s."index", sp."index"',
        v=video,
    )
    found: dict[int, list[int]] = {}
    for segment, person in rows:
        found.setdefault(segment, []).append(person)
    return found


def predictions_per_segment_person(cluster: Cluster, video: str) -> list[int]:
    """How many predictions each of the video's segment persons has (0 included)."""
    return [
        int(n)
        for (n,) in cluster.query(
            "SELECT count(p.id) FROM segment_persons sp "
            "JOIN segments s ON s.id = sp.segment_id "
            "LEFT JOIN segment_predictions p ON p.segment_person_id = sp.id "
            "WHERE s.video_id = :v GROUP BY sp.id",
            v=video,
        )
    ]


def scores_per_segment(cluster: Cluster, video: str) -> dict[tuple[int, int], np.ndarray]:
    """(segment index, person index in the segment) -> the five stored scores."""
    columns = ", ".join(f"p.{name}" for name in TRAITS)
    rows = cluster.query(
        f'SELECT s."index", sp."index", {columns} FROM segment_predictions p '
        "JOIN segment_persons sp ON sp.id = p.segment_person_id "
        "JOIN segments s ON s.id = sp.segment_id WHERE s.video_id = :v",
        v=video,
    )
    return {(int(r[0]), int(r[1])): np.array(r[2:], dtype=np.float64) for r in rows}


def assert_stored_once(cluster: Cluster, video: str) -> None:
    """Every segment person has one prediction; the video one headline and one row a person."""
    per_person = predictions_per_segment_person(cluster, video)
    assert per_person and set(per_person) == {1}, per_person
    headline = cluster.query("SELECT count(*) FROM predictions WHERE video_id = :v", v=video)
    assert headline == [(1,)]
    persons = cluster.query(
        "SELECT person, count(*) FROM persons WHERE video_id = :v GROUP BY person", v=video
    )
    assert persons and {n for _, n in persons} == {1}, persons
    linked = {p for ps in segment_persons(cluster, video).values() for p in ps}
    assert {p for p, _ in persons} == linked


@pytest.fixture(scope="module")
def one_second_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One worker for every queue on PostgreSQL, segments of 1 s; shared by the tests that
    only read what their own video became."""
    databases = open_postgres(POSTGRES_URL)
    try:
        url = databases.create("seg").render_as_string(hide_password=False)
        home = tmp_path_factory.mktemp("segments") / "home"
        with (
            machine_redis_database() as broker,
            running_cluster(home, url, broker) as nodes,
        ):
            nodes.extra_env["OCEANSTREAM_SEGMENT_SECONDS"] = "1"
            # Exact windows, so that every shot of the edit is whole segments.
            nodes.extra_env["OCEANSTREAM_SEGMENT_KEYFRAMES"] = "false"
            nodes.start_worker("ingest,faces,flow,inference", concurrency=2)
            yield nodes
    finally:
        databases.drop_all()


def test_edit_of_two_people_and_a_faceless_shot(
    one_second_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = one_second_cluster
    # astronaut 0-2 s (left), cameraman 2-4 s (right), no face 4-5 s, astronaut 5-7 s; 10 fps
    clip = write_edit(tmp_path / "edit.mp4")
    job = submit(cluster, clip)
    assert cluster.wait_job(job, timeout=240) == {"done": 1}
    video = video_id(cluster, "edit.mp4")
    segments = segments_of(cluster, video)
    assert [(i, s, e) for i, s, e, _, _ in segments] == [(i, i, i + 1) for i in range(7)]
    assert [status for _, _, _, status, _ in segments] == ["done"] * 4 + ["no_face"] + ["done"] * 2
    assert [n for *_, n in segments] == [1, 1, 1, 1, 0, 1, 1]

    persons = segment_persons(cluster, video)
    assert sorted(persons) == [0, 1, 2, 3, 5, 6]  # no person in the faceless segment
    astronaut, cameraman, astronaut_again = persons[0], persons[2], persons[5]
    # Within a shot, continuity links a person across the segment boundary.
    assert persons[1] == astronaut and persons[3] == cameraman and persons[6] == astronaut_again
    assert astronaut != cameraman
    # The continuity linker sees only the segment just before: after the faceless segment
    # nobody precedes the astronaut's second shot, so she is a third person (an identity
    # embedding, with FaceRes installed, would find her again).
    assert astronaut_again not in (astronaut, cameraman)
    assert_stored_once(cluster, video)
    rows = cluster.query(
        "SELECT person, segments, first_s, last_s, main FROM persons WHERE video_id = :v "
        "ORDER BY person",
        v=video,
    )
    assert [r[:4] for r in rows] == [(0, 2, 0, 2), (1, 2, 2, 4), (2, 2, 5, 7)]
    # Equal face frames: the main person is the first seen, and the headline is hers.
    assert [bool(r[4]) for r in rows] == [True, False, False]
    columns = ", ".join(TRAITS)
    [main] = cluster.query(f"SELECT {columns} FROM persons WHERE video_id = :v AND main", v=video)
    [headline] = cluster.query(f"SELECT {columns} FROM predictions WHERE video_id = :v", v=video)
    assert headline == pytest.approx(main, abs=1e-12)


def test_two_people_side_by_side_get_their_own_scores_and_maps(
    one_second_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = one_second_cluster
    # 1.5 s: at most 1.5 windows of 1 s, so one segment
    clip = write_side_by_side(tmp_path / "pair.mp4", seconds=1.5, seed=3)
    job = submit(cluster, clip)
    assert cluster.wait_job(job, timeout=240) == {"done": 1}
    video = video_id(cluster, "pair.mp4")
    [segment] = segments_of(cluster, video)
    assert segment[3:] == ("done", 2)
    assert segment_persons(cluster, video) == {0: [0, 1]}
    assert_stored_once(cluster, video)
    columns = ", ".join(f"p.{name}" for name in TRAITS)
    rows = cluster.query(
        f'SELECT sp."index", {columns}, p.attention_data, p.attention_shape, p.attention_dtype '
        "FROM segment_predictions p JOIN segment_persons sp ON sp.id = p.segment_person_id "
        'JOIN segments s ON s.id = sp.segment_id WHERE s.video_id = :v ORDER BY sp."index"',
        v=video,
    )
    assert [r[0] for r in rows] == [0, 1]
    scores = [np.array(r[1:6], dtype=np.float64) for r in rows]
    assert np.abs(scores[0] - scores[1]).max() > 1e-4
    maps = [decode_attention(bytes(r[6]), r[7], r[8]) for r in rows]
    assert [list(m.shape) for m in maps] == [[2, 4, 8, 8]] * 2
    assert not np.allclose(maps[0], maps[1])
    assert np.allclose(maps[0].sum(axis=-1), 1.0, atol=1e-2)  # softmax rows

    shown = cluster.cli("results", "--video", "pair.mp4", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    [result] = json.loads(shown.stdout)
    assert [p["person"] for p in result["persons"]] == [0, 1]
    assert [len(s["persons"]) for s in result["segments"]] == [2]


def child_pids(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def faces_deliveries(cluster: Cluster, video: str) -> list[tuple[str, int, bool]]:
    """(status, faces deliveries, faces_ready) of each segment of the video."""
    rows = cluster.query(
        "SELECT status, deliveries, faces_ready FROM segments WHERE video_id = :v", v=video
    )
    return [
        (status, int((json.loads(d) if isinstance(d, str) else d or {}).get("faces", 0)), bool(r))
        for status, d, r in rows
    ]


@pytest.fixture
def long_clips(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    return [
        write_talking_head(folder / f"long_{i}.mp4", seconds=12, fps=15, seed=40 + i)
        for i in range(2)
    ]


def test_faces_worker_killed_and_redis_restarted_mid_video(
    tmp_path: Path, postgres_database: str, redis_server: RedisServer, long_clips: list[Path]
) -> None:
    with running_cluster(
        tmp_path / "home", postgres_database, redis_server.url, stop=signal.SIGKILL
    ) as cluster:
        cluster.extra_env["OCEANSTREAM_SEGMENT_SECONDS"] = "2"
        cluster.start_worker("ingest,flow,inference")
        faces = [cluster.start_worker("faces") for _ in range(2)]

        # 1. SIGKILL the faces children while a segment's faces task is running: it has been
        # delivered (counted) and has not finished.
        first = submit(cluster, long_clips[0])
        video = video_id(cluster, "long_0.mp4")

        def mid_faces() -> bool:
            return any(
                status == "extracting" and n == 1 and not ready
                for status, n, ready in faces_deliveries(cluster, video)
            )

        wait_for(mid_faces, 60, "a segment in the middle of faces", every=0.005)
        killed = [pid for worker in faces for pid in child_pids(worker.pid)]
        assert killed, "the faces workers have no children"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        assert cluster.wait_job(first, timeout=240) == {"done": 1}
        statuses = faces_deliveries(cluster, video)
        assert [s for s, _, _ in statuses] == ["done"] * 6
        # The killed delivery was counted, and the message came again to a new child.
        assert max(n for _, n, _ in statuses) >= 2, statuses
        assert_stored_once(cluster, video)

        # 2. Restart Redis (every queued message lost) with some segments final and some not.
        second = submit(cluster, long_clips[1])
        video = video_id(cluster, "long_1.mp4")

        def part_done() -> bool:
            final = [s for _, _, _, s, _ in segments_of(cluster, video) if s in FINAL]
            return 0 < len(final) < 6

        wait_for(part_done, 60, "some segments final", every=0.01)
        redis_server.kill()
        redis_server.start()
        time.sleep(2.0)  # the workers reconnect
        waiting = [s for _, _, _, s, _ in segments_of(cluster, video) if s not in FINAL]
        assert waiting, "every segment finished before Redis was restarted"
        swept = cluster.cli("reconcile", "--older-than", "0")
        assert swept.returncode == 0, swept.stderr
        # Messages queued for the unfinished segments were lost with Redis: some are resent.
        resent = re.search(r"resent (\d+)", swept.stderr)
        assert resent and int(resent.group(1)) > 0, swept.stderr
        assert cluster.wait_job(second, timeout=240) == {"done": 1}, swept.stderr
        assert [s for _, _, _, s, _ in segments_of(cluster, video)] == ["done"] * 6
        assert_stored_once(cluster, video)


@pytest.fixture
def sqlite_cluster(tmp_path: Path, shared_redis_url: str) -> Iterator[Cluster]:
    url = f"sqlite:///{tmp_path / 'home' / 'oceanstream.db'}"
    with running_cluster(tmp_path / "home", url, shared_redis_url) as nodes:
        nodes.extra_env["OCEANSTREAM_SEGMENT_SECONDS"] = "2"
        yield nodes


def test_analyze_and_workers_give_the_same_segment_scores(
    sqlite_cluster: Cluster, tmp_path: Path
) -> None:
    clip = write_talking_head(tmp_path / "talk.mp4", seconds=6, fps=15, seed=11)
    # In process, on a SQLite database of its own (the same content would be de-duplicated).
    local_home = tmp_path / "local"
    local_home.mkdir()
    local = Cluster(
        home=local_home,
        database_url=f"sqlite:///{local_home / 'oceanstream.db'}",
        broker_url=sqlite_cluster.broker_url,
        extra_env={"OCEANSTREAM_SEGMENT_SECONDS": "2"},
    )
    analyzed = local.cli("analyze", str(clip), "--json")
    assert analyzed.returncode == 0, analyzed.stderr
    [result] = json.loads(analyzed.stdout)
    in_process = {
        (segment["index"], i): np.array([p["traits"][t] for t in TRAITS])
        for segment in result["segments"]
        for i, p in enumerate(segment["persons"])
    }
    # Boundaries on the clip's keyframes (mp4v: every 12 frames, 0.8 s): 2 s moves to 1.6 s
    # (the earlier of two equally near), 4 s is one.
    assert [s["start_s"] for s in result["segments"]] == [0, 1.6, 4]

    sqlite_cluster.start_worker("ingest,faces,flow,inference")
    job = submit(sqlite_cluster, clip)
    assert sqlite_cluster.wait_job(job, timeout=240) == {"done": 1}
    distributed = scores_per_segment(sqlite_cluster, video_id(sqlite_cluster, "talk.mp4"))
    assert sorted(distributed) == sorted(in_process) == [(0, 0), (1, 0), (2, 0)]
    for key, scores in in_process.items():
        np.testing.assert_allclose(distributed[key], scores, atol=1e-5, err_msg=str(key))
