"""A result's persons and segments, read on SQLite and PostgreSQL from rows the segment
repository functions wrote, in a bounded number of queries."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, sessionmaker

from core.traits import TRAITS
from core.video.segments import plan_segments
from db import repository as repo
from db.repository.results import job_segment_counts
from tests.support.rows import add_video
from tests.support.timeline_data import LEFT, MODEL, StoredVideos, populate

Factory = sessionmaker[Session]


@pytest.fixture
def stored(session_factory: Factory) -> StoredVideos:
    return populate(session_factory)


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT"):  # not SQLite's BEGIN IMMEDIATE
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def by_id(session_factory: Factory, job_id: str) -> dict[str, repo.ResultRow]:
    with session_factory() as session:
        return {row.video_id: row for row in repo.query_results(session=session, job_id=job_id)}


def test_the_json_result_lists_persons_and_segments(
    session_factory: Factory, stored: StoredVideos
) -> None:
    rows = by_id(session_factory, stored.job_id)
    interview = rows[stored.interview].to_dict()
    assert interview["status"] == "done"
    assert interview["duration_s"] == 90.0
    assert interview["error"] == "segment 5 (75-90 s): cannot decode frames 1875-2250"
    # Continuity links A across segments 0-2 (person 0) and B (person 1); after the
    # faceless segment A is a new person 2.
    persons = interview["persons"]
    assert [(p["person"], p["faces_found"], p["segments"]) for p in persons] == [
        (0, 16 + 15 + 12, 3),
        (1, 9 + 14, 2),
        (2, 16, 1),
    ]
    assert [(p["first_s"], p["last_s"]) for p in persons] == [(0.0, 45.0), (15.0, 45.0), (60, 75)]
    assert set(persons[0]) == {
        "person",
        "traits",
        "spread",
        "faces_found",
        "segments",
        "first_s",
        "last_s",
    }
    # The top-level traits are the person with most face frames, weighted by face frames.
    a = [stored.scores[k] for k in ((0, 0), (1, 0), (2, 1))]
    weights = [16, 15, 12]
    expected = [sum(w * s[i] for w, s in zip(weights, a, strict=True)) / 43 for i in range(5)]
    assert list(interview["traits"].values()) == pytest.approx(expected)
    assert persons[0]["traits"] == interview["traits"]
    assert list(persons[2]["spread"].values()) == [0.0] * 5  # one segment: no spread

    segments = interview["segments"]
    assert [(s["index"], s["start_s"], s["end_s"], s["status"]) for s in segments] == [
        (i, start, end, status)
        for i, ((start, end), status) in enumerate(
            zip(
                [(s.start_s, s.end_s) for s in plan_segments(90.0)],
                ["done", "done", "done", "no_face", "done", "failed"],
                strict=True,
            )
        )
    ]
    assert [[p["person"] for p in s["persons"]] for s in segments] == [
        [0],
        [0, 1],
        [1, 0],
        [],
        [2],
        [],
    ]
    assert segments[5]["error"] == "cannot decode frames 1875-2250"
    assert segments[2]["persons"][0] == {
        "person": 1,
        "traits": dict(zip(TRAITS, stored.scores[(2, 0)], strict=True)),
        "faces_found": 14,
    }


def test_a_one_person_clip_reads_as_before_and_old_rows_have_no_details(
    session_factory: Factory, stored: StoredVideos
) -> None:
    rows = by_id(session_factory, stored.job_id)
    clip = rows[stored.clip]
    assert len(clip.persons) == 1 and len(clip.segments) == 1
    assert clip.traits == clip.persons[0].traits == clip.segments[0].persons[0].traits
    assert clip.faces_found == 13 and clip.frames == 16
    whole = rows[stored.whole].to_dict()
    assert (whole["persons"], whole["segments"], whole["status"]) == ([], [], "done")
    assert whole["traits"] == dict(zip(TRAITS, [0.5, 0.4, 0.6, 0.5, 0.3], strict=True))


def test_a_running_video_shows_its_segments_before_any_aggregate(
    session_factory: Factory, stored: StoredVideos
) -> None:
    with session_factory.begin() as session:
        video = add_video(session, "running")
        repo.pin_model_version(session=session, video_id=video.id, version=MODEL)
        first, _ = repo.create_segments(
            session=session, video_id=video.id, segments=plan_segments(30.0)
        )
        (person_id,) = repo.save_segment_persons(
            session=session,
            segment_id=first,
            persons=[repo.SegmentPersonRecord(0, 8, LEFT, LEFT)],
        )
        repo.save_segment_prediction(
            session=session,
            segment_person_id=person_id,
            model_version=MODEL,
            scores=[0.3] * 5,
            model_trained=False,
            attention=None,
        )
        video_id = video.id
    with session_factory() as session:
        (row,) = repo.query_results(session=session, video=video_id)
    assert (row.traits, row.persons, row.details_version) == (None, (), MODEL)
    assert [s.status for s in row.segments] == ["pending", "pending"]
    (seen,) = row.segments[0].persons
    assert (seen.person, seen.traits, seen.faces_found) == (None, dict.fromkeys(TRAITS, 0.3), 8)
    assert row.segments[1].persons == ()


def test_another_model_version_sees_no_segment_scores(
    session_factory: Factory, stored: StoredVideos
) -> None:
    other = "trained-0000000000bb"
    with session_factory.begin() as session:
        repo.ensure_model_version(session=session, version=other, trained=True, metadata={})
        repo.save_prediction(
            session=session,
            video_id=stored.clip,
            model_version=other,
            scores=[0.9] * 5,
            attention=None,
            model_trained=True,
        )
    with session_factory() as session:
        (newer,) = repo.query_results(session=session, video="clip.mp4")
        (older,) = repo.query_results(session=session, video="clip.mp4", model_version=MODEL)
    assert (newer.model_version, newer.persons) == (other, ())
    assert [p.traits for p in newer.segments[0].persons] == [None]
    assert older.persons[0].traits == older.traits != newer.traits


def test_results_are_three_queries_whatever_the_number_of_videos(
    session_factory: Factory, stored: StoredVideos, engine: Engine
) -> None:
    with session_factory() as session:
        with counted(engine) as one:
            repo.query_results(session=session, video=stored.interview)
        with counted(engine) as job:
            rows = repo.query_results(session=session, job_id=stored.job_id)
    assert len(rows) == 3 and sum(len(r.segments) for r in rows) == 7
    assert len(one) == len(job) == 3, job


def test_segment_counts_per_job(session_factory: Factory, stored: StoredVideos) -> None:
    with session_factory.begin() as session:
        # The interview given again under another path counts once.
        repo.attach_video(
            session=session, job_id=stored.job_id, video_id=stored.interview, name="x", position=9
        )
    with session_factory() as session:
        counts = job_segment_counts(session=session, job_id=stored.job_id)
        other = repo.create_job(session=session, kind="submit")
        assert set(job_segment_counts(session=session, job_id=other.id).values()) == {0}
    assert {k: v for k, v in counts.items() if v} == {"done": 5, "no_face": 1, "failed": 1}
