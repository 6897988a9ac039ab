"""`results --timeline`, `plot`, `attention --segment/--person` and `status` segment counts,
run as the real `oceanstream` command on a SQLite home populated by the segment repository
functions."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.plots.timeline import (
    DPI,
    HEIGHT_IN,
    UNTRAINED_WARNING,
    WIDTH_IN,
    build_timeline_figure,
    figure_texts,
)
from core.traits import TRAITS
from core.video.segments import plan_segments
from tests.cli.helpers import assert_one_line_error, oceanstream
from tests.support.timeline_data import StoredVideos, attention_map, populate, session_factory_for
from workers.cli.distributed import progress_line
from workers.services.csv_export import timeline_csv
from workers.services.progress import JobProgress, job_progress, job_segment_progress
from workers.services.results import stored_segment_attention, video_result
from workers.services.timeline import TIMELINE_FIELDS, plot_data

INTERVIEW = "talks/interview.mp4"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def factory(home: Path):
    return session_factory_for(f"sqlite:///{home / 'oceanstream.db'}")


@pytest.fixture(scope="module")
def stored(factory) -> StoredVideos:
    return populate(factory)


def ok(done) -> str:
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_timeline_json_is_a_row_per_segment_and_person(home: Path, stored: StoredVideos) -> None:
    rows = json.loads(
        ok(oceanstream(home, "results", "--video", INTERVIEW, "--timeline", "--format", "json"))
    )
    assert all(list(row) == list(TIMELINE_FIELDS) for row in rows)
    assert {row["video_id"] for row in rows} == {stored.interview}
    assert [(r["segment"], r["person"], r["status"]) for r in rows] == [
        (0, 0, "done"),
        (1, 0, "done"),
        (1, 1, "done"),
        (2, 1, "done"),
        (2, 0, "done"),
        (3, None, "no_face"),
        (4, 2, "done"),
        (5, None, "failed"),
    ]
    planned = plan_segments(90.0)
    for row in rows:
        assert (row["start_s"], row["end_s"]) == (
            planned[row["segment"]].start_s,
            planned[row["segment"]].end_s,
        )
    scored = [r for r in rows if r["person"] is not None]
    by_place = {(0, 0): 0, (1, 0): 1, (1, 1): 2, (2, 0): 3, (2, 1): 4, (4, 0): 6}
    for place, index in by_place.items():
        assert list(rows[index]["traits"].values()) == pytest.approx(stored.scores[place])
    assert [r["faces_found"] for r in scored] == [16, 15, 9, 14, 12, 16]
    assert (rows[5]["traits"], rows[5]["faces_found"]) == (None, 0)
    assert rows[7]["error"] == "cannot decode frames 1875-2250"


def test_timeline_csv_and_table(home: Path, stored: StoredVideos) -> None:
    text = ok(
        oceanstream(
            home, "results", "--video", stored.interview[:10], "--timeline", "--format", "csv"
        )
    )
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == [
        "video", "video_id", "segment", "start_s", "end_s", "status", "person", *TRAITS,
        "faces_found", "error",
    ]  # fmt: skip
    assert len(rows) == 8
    assert (rows[5]["status"], rows[5]["person"], rows[5]["openness"]) == ("no_face", "", "")
    assert float(rows[1]["openness"]) == pytest.approx(stored.scores[(1, 0)][0])
    table = ok(oceanstream(home, "results", "--video", INTERVIEW, "--timeline"))
    lines = [line.split() for line in table.splitlines()]
    assert any(line[:5] == ["3", "45.0", "60.0", "no_face", "-"] for line in lines), table
    assert any(line[:5] == ["1", "15.0", "30.0", "done", "1"] for line in lines), table
    assert "cannot decode frames" in table and "1875-2250" in table


def test_timeline_csv_neutralises_formulas() -> None:
    row = {
        "video": "=cmd.mp4",
        "video_id": "a" * 32,
        "segment": 0,
        "start_s": 0.0,
        "end_s": 15.0,
        "status": "failed",
        "person": None,
        "traits": None,
        "faces_found": None,
        "error": "-boom",
    }
    (parsed,) = csv.DictReader(io.StringIO(timeline_csv([row])))
    assert (parsed["video"], parsed["error"], parsed["segment"]) == ("'=cmd.mp4", "'-boom", "0")


def test_results_json_and_table_show_persons(home: Path, stored: StoredVideos) -> None:
    rows = json.loads(ok(oceanstream(home, "results", "--job", stored.job_id, "--format", "json")))
    assert [len(r["persons"]) for r in rows] == [3, 1, 0]
    assert [len(r["segments"]) for r in rows] == [6, 1, 0]
    assert rows[0]["traits"] == rows[0]["persons"][0]["traits"]
    table = ok(oceanstream(home, "results", "--job", stored.job_id))
    header = next(line for line in table.splitlines() if "status" in line)
    assert "persons" in header.split()
    csv_header = ok(oceanstream(home, "results", "--format", "csv")).splitlines()[0]
    assert "persons" not in csv_header and "segments" not in csv_header


def test_plot_writes_the_png(home: Path, stored: StoredVideos, tmp_path: Path) -> None:
    out = tmp_path / "plots" / "interview.png"
    printed = ok(oceanstream(home, "plot", INTERVIEW, "--out", str(out)))
    assert printed.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.size == (int(WIDTH_IN * DPI), int(HEIGHT_IN * DPI))
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # drawn, not blank


def test_the_figure_holds_persons_bands_and_the_warning(factory, stored: StoredVideos) -> None:
    data = plot_data(video_result(factory, INTERVIEW))
    assert data.trained is False
    assert [(s.person, len(s.points), s.main) for s in data.persons] == [
        (0, 3, True),
        (1, 2, False),
        (2, 1, False),
    ]
    figure = build_timeline_figure(data)
    texts = figure_texts(figure)
    assert UNTRAINED_WARNING in texts
    assert {"person 0 (main)", "person 1", "person 2", "segment: no face", "segment: failed"} <= (
        set(texts)
    )
    axes = figure.get_axes()
    assert [axis.get_ylabel() for axis in axes] == list(TRAITS)
    extraversion = axes[TRAITS.index("extraversion")]
    main_line = next(
        line for line in extraversion.get_lines() if line.get_label() == "person 0 (main)"
    )
    # Person 0 is seen in segments 0, 1, 2: one point in the middle of each.
    assert list(main_line.get_xdata()) == [7.5, 22.5, 37.5]
    assert list(main_line.get_ydata()) == pytest.approx(
        [stored.scores[k][2] for k in ((0, 0), (1, 0), (2, 1))]
    )
    trained = build_timeline_figure(plot_data_trained(data))
    assert UNTRAINED_WARNING not in figure_texts(trained)
    assert "shot change" not in figure_texts(figure)


def test_the_figure_marks_each_shot_change(factory, stored: StoredVideos) -> None:
    from dataclasses import replace

    data = replace(plot_data(video_result(factory, INTERVIEW)), shots=(20.0, 33.5))
    figure = build_timeline_figure(data)
    assert "shot change" in figure_texts(figure)
    for axis in figure.get_axes():
        dotted = [line for line in axis.get_lines() if line.get_linestyle() == ":"]
        assert [list(line.get_xdata()) for line in dotted] == [[20.0, 20.0], [33.5, 33.5]]


def plot_data_trained(data):
    from dataclasses import replace

    return replace(data, trained=True)


def test_plot_refuses_a_video_without_segments(home: Path, stored: StoredVideos, tmp_path) -> None:
    done = oceanstream(home, "plot", "old/whole.mp4", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(done, 2, "has no segments")
    done = oceanstream(home, "plot", "missing.mp4", "--out", str(tmp_path / "x.png"))
    assert_one_line_error(done, 2, "no stored video 'missing.mp4'")


def test_attention_of_a_segment_and_person(
    home: Path, factory, stored: StoredVideos, tmp_path: Path
) -> None:
    out = tmp_path / "seg.png"
    printed = ok(
        oceanstream(
            home, "attention", INTERVIEW, "--segment", "1", "--person", "1", "--out", str(out)
        )
    )
    assert printed.strip() == str(out)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 400
    # Segment 1's second person (B, person 1): the map stored for it, not the headline one.
    found = stored_segment_attention(factory, INTERVIEW, segment=1, person=1)
    np.testing.assert_allclose(found.weights, attention_map(3 + 10 * 1 + 1), atol=1e-3)
    assert "segment 1 (15-30 s), person 1" in found.title and "untrained" in found.title
    # --person alone: that person's segment with most face frames (B: 14 in segment 2).
    alone = stored_segment_attention(factory, INTERVIEW, segment=None, person=1)
    np.testing.assert_allclose(alone.weights, attention_map(3 + 10 * 2 + 0), atol=1e-3)
    # --segment alone: the segment's person with most face frames (A: 15 in segment 1).
    first = stored_segment_attention(factory, INTERVIEW, segment=1, person=None)
    np.testing.assert_allclose(first.weights, attention_map(3 + 10 * 1 + 0), atol=1e-3)
    assert ok(oceanstream(home, "attention", INTERVIEW, "--out", str(tmp_path / "v.png")))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--segment", "9"), "has no segment 9 (segments 0-5)"),
        (("--person", "7"), "has no person 7 (persons: 0, 1, 2)"),
        (("--segment", "3"), "segment 3 of 'talks/interview.mp4' has no person (status no_face"),
        (("--segment", "0", "--person", "1"), "has no person 1 (status done; persons there: 0)"),
    ],
)
def test_attention_names_what_does_not_exist(
    home: Path, stored: StoredVideos, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = oceanstream(home, "attention", INTERVIEW, *args, "--out", str(tmp_path / "a.png"))
    assert_one_line_error(done, 2, message)
    assert not (tmp_path / "a.png").exists()


def test_status_counts_segments(home: Path, factory, stored: StoredVideos) -> None:
    report = json.loads(ok(oceanstream(home, "status", stored.job_id, "--json")))
    assert report["total"] == 3 and report["counts"]["done"] == 3
    segments = report["segments"]
    assert (segments["total"], segments["finished"]) == (7, 7)
    assert {k: v for k, v in segments["counts"].items() if v} == {
        "done": 5,
        "no_face": 1,
        "failed": 1,
    }
    text = ok(oceanstream(home, "status", stored.job_id))
    assert "segments: 7/7 finished" in text
    assert "  no_face     1" in text.split("segments:")[1]
    line = progress_line(
        job_progress(factory, stored.job_id), job_segment_progress(factory, stored.job_id)
    )
    assert line == "videos 3/3 final, segments 7/7 final"


def test_progress_line_counts_final_segments() -> None:
    def progress(total: int, finished: int) -> JobProgress:
        return JobProgress(counts={}, total=total, finished=finished)

    assert progress_line(progress(3, 1), progress(12, 7)) == "videos 1/3 final, segments 7/12 final"
    assert progress_line(progress(2, 0), progress(0, 0)) == "videos 0/2 final"


def test_a_video_given_twice_has_one_timeline(tmp_path: Path) -> None:
    from db import repository as repo

    factory = session_factory_for(f"sqlite:///{tmp_path / 'oceanstream.db'}")
    stored = populate(factory)
    with factory.begin() as session:
        repo.attach_video(
            session=session, job_id=stored.job_id, video_id=stored.interview, name="copy.mp4",
            position=3,
        )  # fmt: skip
    text = ok(oceanstream(tmp_path, "results", "--job", stored.job_id, "--timeline", "--format",
                          "json"))  # fmt: skip
    rows = json.loads(text)
    assert [(r["video"], r["segment"]) for r in rows if r["segment"] == 0] == [
        ("talks/interview.mp4", 0),
        ("clip.mp4", 0),
    ]
    assert len(rows) == 8 + 1
