"""`oceanstream analyze`, `results` and `attention` end to end, in a subprocess, on real clips."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.traits import TRAITS
from tests.clips import (
    write_empty,
    write_faceless,
    write_random_bytes,
    write_talking_head,
    write_text,
    write_truncated,
)

pytestmark = pytest.mark.slow


def oceanstream(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OCEANSTREAM_HOME": str(home), "OCEANSTREAM_NUM_FRAMES": "8"}
    env.pop("OCEANSTREAM_DATABASE_URL", None)
    env.pop("OCEANSTREAM_MODEL", None)
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


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
    assert len(pngs) == 4  # two videos, two directions each
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
    assert len(list(tmp_path.glob("map_*.png"))) == 2
    missing = oceanstream(home, "attention", "no-such-video", "--out", str(tmp_path / "x.png"))
    assert missing.returncode == 2


def test_usage_error_exit_code(tmp_path: Path) -> None:
    assert oceanstream(tmp_path, "analyze", str(tmp_path)).returncode == 2
