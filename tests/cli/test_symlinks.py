"""Symlinks in a submitted folder, quoted file contents and the modes of what is stored.

A folder given to `analyze` or `submit` is read within itself: a symlink found there whose
target lies outside the folder is reported failed and never read. Nothing of a refused or
broken file's content reaches the database, storage or the output, and what is stored is
readable by the service user only.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import oceanstream
from tests.clips import write_talking_head, write_text

pytestmark = pytest.mark.slow

OUTSIDE_SECRET = "TOPSECRET-123"
FILE_SECRET = "TOPSECRET-456"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("symlinks")
    secret = root / "private" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text(f"{OUTSIDE_SECRET} and more private text\n", encoding="utf-8")
    batch = root / "batch"
    (batch / "raw").mkdir(parents=True)
    write_talking_head(batch / "a_face.mp4", seconds=2.0, seed=1)
    # Not a video by its name: found only through the link to it, inside the folder.
    clip = write_talking_head(batch / "raw" / "b_face.avi", seconds=2.0, seed=2, fourcc="MJPG")
    clip.rename(batch / "raw" / "b_face.clip")
    (batch / "inside.avi").symlink_to(Path("raw") / "b_face.clip")
    (batch / "leak.mp4").symlink_to(secret)
    (batch / "leak_relative.mp4").symlink_to(Path("..") / "private" / "secret.txt")
    write_text(batch / "notes.mp4", f"{FILE_SECRET} this is not a video\n" * 4)
    return batch


def contains_secret(root: Path, secret: str) -> list[Path]:
    """Files under `root` whose bytes contain `secret`."""
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def assert_private(root: Path, file_mode: int = 0o600, dir_mode: int = 0o700) -> None:
    paths = [root, *root.rglob("*")]
    assert any(p.is_file() for p in paths), f"nothing stored under {root}"
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (dir_mode if path.is_dir() else file_mode), f"{path}: {oct(mode)}"


@pytest.fixture(scope="module")
def analyzed(folder: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("analyze") / "home"  # created by the command
    done = oceanstream(home, "analyze", str(folder), "--json")
    return {"home": home, "done": done, "rows": json.loads(done.stdout or "[]")}


def test_analyze_refuses_links_leaving_the_folder(analyzed: dict) -> None:
    done = analyzed["done"]
    assert done.returncode == 1, done.stderr
    rows = {Path(row["video"]).name: row for row in analyzed["rows"]}
    assert set(rows) == {"a_face.mp4", "inside.avi", "leak.mp4", "leak_relative.mp4", "notes.mp4"}
    for name in ("leak.mp4", "leak_relative.mp4"):
        assert rows[name]["status"] == "failed", rows[name]
        assert "symlink leaves the submitted folder" in rows[name]["error"]
        assert "not read" in rows[name]["error"] and name in rows[name]["error"]
        assert "secret.txt" not in rows[name]["error"]
    assert rows["inside.avi"]["status"] == "done", rows["inside.avi"]
    assert rows["a_face.mp4"]["status"] == "done", rows["a_face.mp4"]


def test_no_file_content_is_quoted_anywhere(analyzed: dict) -> None:
    done, home = analyzed["done"], analyzed["home"]
    notes = {Path(row["video"]).name: row for row in analyzed["rows"]}["notes.mp4"]
    assert notes["status"] == "failed" and "not a video" in notes["error"]
    for secret in (OUTSIDE_SECRET, FILE_SECRET, "TOPSECRET"):
        assert secret not in done.stdout and secret not in done.stderr
        assert contains_secret(home, secret) == []


def test_analyze_home_and_database_are_private(analyzed: dict) -> None:
    home = analyzed["home"]
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "oceanstream.db").stat().st_mode) == 0o600


def test_a_link_named_on_the_command_line_is_followed(folder: Path, tmp_path: Path) -> None:
    link = tmp_path / "chosen.avi"
    link.symlink_to(folder / "raw" / "b_face.clip")
    done = oceanstream(tmp_path / "home", "analyze", str(link), "--json")
    assert done.returncode == 0, done.stderr
    assert [row["status"] for row in json.loads(done.stdout)] == ["done"]


def submit(home: Path, folder: Path, broker: str, **env: str) -> subprocess.CompletedProcess:
    return oceanstream(home, "submit", str(folder), env={"OCEANSTREAM_BROKER_URL": broker, **env})


def status(home: Path, job: str) -> dict:
    done = oceanstream(home, "status", job, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_submit_stores_nothing_from_outside_the_folder(
    folder: Path, tmp_path: Path, shared_redis_url: str
) -> None:
    home = tmp_path / "home"
    done = submit(home, folder, shared_redis_url)
    assert done.returncode == 0, done.stderr
    failures = {
        Path(f["video"]).name: f["error"] for f in status(home, done.stdout.strip())["failures"]
    }
    assert set(failures) == {"leak.mp4", "leak_relative.mp4"}
    assert all("symlink leaves the submitted folder" in error for error in failures.values())
    stored = [p for p in (home / "storage").rglob("*") if p.is_file()]
    assert len(stored) == 3  # a_face, the clip inside.avi links to, notes
    for secret in (OUTSIDE_SECRET, "TOPSECRET"):
        assert secret not in done.stdout + done.stderr
    assert contains_secret(home, OUTSIDE_SECRET) == []
    assert_private(home / "storage")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700


def test_shared_storage_mode_is_configurable(
    folder: Path, tmp_path: Path, shared_redis_url: str
) -> None:
    home = tmp_path / "home"
    done = submit(home, folder, shared_redis_url, OCEANSTREAM_STORAGE_MODE="shared")
    assert done.returncode == 0, done.stderr
    assert_private(home / "storage", file_mode=0o640, dir_mode=0o750)
    octal = tmp_path / "octal"
    done = submit(octal, folder, shared_redis_url, OCEANSTREAM_STORAGE_MODE="0660")
    assert done.returncode == 0, done.stderr
    assert_private(octal / "storage", file_mode=0o660, dir_mode=0o770)
