"""`oceanstream analyze`, `results` and `attention` end to end, in a subprocess, on real clips."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from core.traits import TRAITS
from tests.cli.helpers import NOISE, oceanstream
from tests.clips import (
    write_empty,
    write_faceless,
    write_random_bytes,
    write_talking_head,
    write_text,
    write_truncated,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("batch")
    good = write_talking_head(folder / "a_face.mp4", seconds=2.0, seed=1)
    write_talking_head(folder / "b_face.avi", seconds=2.0, seed=2, fourcc="MJPG")
    write_faceless(folder / "c_faceless.mp4", seconds=2.0)
    write_empty(folder / "d_empty.mp4")
    write_text(folder / "e_text.mp4")
    write_random_bytes(folder / "f_random.mp4", n=200_000, seed=3)
    write_truncated(good, folder / "g_truncated.mp4", keep_fraction=0.4)
    return folder


@pytest.fixture(scope="module")
def analyzed(batch: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("home")
    attention_dir = home / "attention"
    done = oceanstream(home, "analyze", str(batch), "--json", "--attention-dir", str(attention_dir))
    return {"home": home, "done": done, "attention_dir": attention_dir}


def test_batch_finishes_good_clips_and_reports_each_bad_one(analyzed: dict) -> None:
    done = analyzed["done"]
    assert done.returncode == 1, done.stderr
    rows = {Path(r["video"]).name: r for r in json.loads(done.stdout)}
    assert set(rows) == {
        "a_face.mp4",
        "b_face.avi",
        "c_faceless.mp4",
        "d_empty.mp4",
        "e_text.mp4",
        "f_random.mp4",
        "g_truncated.mp4",
    }
    for name in ("a_face.mp4", "b_face.avi"):
        row = rows[name]
        assert row["status"] == "done", row
        assert list(row["traits"]) == list(TRAITS)
        assert all(0.0 <= v <= 1.0 for v in row["traits"].values())
        assert row["faces_found"] >= 6 and row["frames"] == 8
        assert row["model_trained"] is False and row["model_version"].startswith("untrained-")
    assert rows["c_faceless.mp4"]["status"] == "no_face"
    assert rows["c_faceless.mp4"]["traits"] is None
    assert "empty" in rows["d_empty.mp4"]["error"]
    for name in ("e_text.mp4", "f_random.mp4", "g_truncated.mp4", "d_empty.mp4"):
        assert rows[name]["status"] == "failed" and rows[name]["error"], rows[name]
    assert "untrained" in done.stderr and "not a personality assessment" in done.stderr


def test_untrained_flag_is_stored_and_attention_pngs_written(analyzed: dict) -> None:
    database = sqlite3.connect(analyzed["home"] / "oceanstream.db")
    flags = database.execute("SELECT model_trained FROM predictions").fetchall()
    assert flags and all(flag == (0,) for flag in flags)
    pngs = sorted(p.name for p in analyzed["attention_dir"].glob("*.png"))
    assert len(pngs) == 2  # one per video with a face, a row per direction
    assert all(p.startswith(("a_face", "b_face")) for p in pngs)


def test_reanalysing_does_not_duplicate_rows(analyzed: dict, batch: Path) -> None:
    again = oceanstream(analyzed["home"], "analyze", str(batch / "a_face.mp4"), "--json")
    assert again.returncode == 0, again.stderr
    database = sqlite3.connect(analyzed["home"] / "oceanstream.db")
    (videos,) = database.execute("SELECT count(*) FROM videos").fetchone()
    (predictions,) = database.execute("SELECT count(*) FROM predictions").fetchone()
    assert videos == 7 and predictions == 2


def test_results_query_and_attention_command(analyzed: dict, tmp_path: Path) -> None:
    home = analyzed["home"]
    as_csv = oceanstream(home, "results", "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    header, *lines = as_csv.stdout.strip().splitlines()
    assert header.split(",")[:3] == ["video", "video_id", "status"]
    assert len(lines) == 7
    one = json.loads(
        oceanstream(home, "results", "--video", "a_face.mp4", "--format", "json").stdout
    )
    assert len(one) == 1 and one[0]["status"] == "done"
    drawn = oceanstream(home, "attention", one[0]["video_id"], "--out", str(tmp_path / "map.png"))
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.strip() == str(tmp_path / "map.png")
    assert (tmp_path / "map.png").stat().st_size > 0
    missing = oceanstream(home, "attention", "no-such-video", "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 2


def test_usage_error_exit_code(tmp_path: Path) -> None:
    assert oceanstream(tmp_path, "analyze", str(tmp_path)).returncode == 2


def test_only_the_projects_own_lines_reach_stderr(analyzed: dict) -> None:
    """TensorFlow, OpenCV and FFmpeg log lines (the batch has a truncated clip) stay hidden."""
    stderr = analyzed["done"].stderr
    for noise in NOISE:
        assert noise not in stderr, stderr
    for line in filter(None, (line.strip() for line in stderr.splitlines())):
        assert line.startswith(
            ("warning: model", "are not", "not a personality", "job ", "note: persons are linked")
        ) or ("OCEANSTREAM_MODEL" in line), line


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A folder where b.mp4 is a byte-for-byte copy of a.mp4, analysed."""
    folder = tmp_path_factory.mktemp("copies")
    write_talking_head(folder / "a.mp4", seconds=2.0, seed=5)
    shutil.copy(folder / "a.mp4", folder / "b.mp4")
    write_truncated(folder / "a.mp4", folder / "c.mp4", keep_fraction=0.4)
    home = tmp_path_factory.mktemp("copies-home")
    done = oceanstream(home, "analyze", str(folder), "--json")
    return {"home": home, "folder": folder, "done": done}


def test_a_copy_keeps_its_own_row_everywhere(copies: dict, tmp_path: Path) -> None:
    home, folder, done = copies["home"], copies["folder"], copies["done"]
    assert done.returncode == 1, done.stderr
    rows = json.loads(done.stdout)
    assert [row["video"] for row in rows] == [str(folder / n) for n in ("a.mp4", "b.mp4", "c.mp4")]
    assert rows[0]["video_id"] == rows[1]["video_id"] and rows[0]["traits"] == rows[1]["traits"]
    assert "3 videos (1 duplicate of another)" in done.stderr
    job = re.search(r"job ([0-9a-f]{32})", done.stderr).group(1)  # type: ignore[union-attr]
    in_job = oceanstream(home, "results", "--job", job, "--format", "json")
    assert json.loads(in_job.stdout) == rows  # the same rows, failed ones included
    listed = oceanstream(home, "results", "--format", "json")
    assert sorted(row["video"] for row in json.loads(listed.stdout)) == sorted(
        row["video"] for row in rows
    )
    drawn = oceanstream(home, "attention", "b.mp4", "--out", str(tmp_path / "b.png"))
    assert drawn.returncode == 0, drawn.stderr


def test_short_id_is_accepted(copies: dict, tmp_path: Path) -> None:
    rows = json.loads(copies["done"].stdout)
    short = rows[0]["video_id"][:8]
    found = oceanstream(copies["home"], "results", "--video", short, "--format", "json")
    assert {row["video_id"] for row in json.loads(found.stdout)} == {rows[0]["video_id"]}
    drawn = oceanstream(copies["home"], "attention", short, "--out", str(tmp_path / "s.png"))
    assert drawn.returncode == 0, drawn.stderr


def test_attention_does_not_import_tensorflow(copies: dict, tmp_path: Path) -> None:
    drawn = oceanstream(
        copies["home"],
        "attention",
        "a.mp4",
        "--out",
        str(tmp_path / "a.png"),
        python=["-X", "importtime"],
    )
    assert drawn.returncode == 0, drawn.stderr
    imported = {
        line.rsplit("|", 1)[-1].strip() for line in drawn.stderr.splitlines() if "|" in line
    }
    assert "matplotlib" in imported
    assert not {name for name in imported if name.split(".")[0] in ("tensorflow", "keras")}


def test_piped_table_fits_120_columns_one_line_per_video(copies: dict) -> None:
    shown = oceanstream(copies["home"], "results")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert max(map(len, lines)) <= 120
    for name in ("a.mp4", "b.mp4"):
        assert len([line for line in lines if f"/{name} " in line]) == 1, shown.stdout


def test_missing_path_loads_no_model(tmp_path: Path) -> None:
    done = oceanstream(tmp_path, "analyze", str(tmp_path / "missing.mp4"))
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: no such file or folder: {tmp_path / 'missing.mp4'}"
    assert not (tmp_path / "oceanstream.db").exists()
