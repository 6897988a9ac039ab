"""`oceanstream backbones install|list` end to end: the real command, npm and PyPI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.backbone_graph import installed_backbones
from tests.cli.helpers import NOISE, assert_one_line_error, oceanstream


def listing(home: Path, env: dict[str, str] | None = None) -> dict[str, dict]:
    result = oceanstream(home, "backbones", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_list_on_an_empty_home_shows_each_backbone_and_how_to_install_it(tmp_path: Path) -> None:
    rows = listing(tmp_path)
    assert set(rows) == {"faceres", "emotion"}
    for name, row in rows.items():
        assert row["installed"] is False and row["path"] is None
        assert row["install"] == f"oceanstream backbones install {name}"
        assert row["licence"].startswith("MIT")
    assert (
        rows["faceres"]["package"] == "@vladmandic/human" and rows["faceres"]["version"] == "3.3.6"
    )
    assert rows["emotion"]["package"] == "fer" and rows["emotion"]["version"] == "25.10.3"
    table = oceanstream(tmp_path, "backbones", "list")
    assert table.returncode == 0, table.stderr
    assert "oceanstream backbones install faceres" in table.stdout
    assert not any(noise in table.stderr for noise in NOISE), table.stderr
    assert not (tmp_path / "backbones").exists()  # listing creates nothing


def test_an_unknown_backbone_is_a_usage_error(tmp_path: Path) -> None:
    result = oceanstream(tmp_path, "backbones", "install", "vggface")
    assert_one_line_error(result, 2, "unknown backbone 'vggface'", "emotion, faceres")


def test_without_npm_the_install_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # The command runs with this interpreter's absolute path; only npm is looked up on PATH.
    result = oceanstream(tmp_path, "backbones", "install", "faceres", env={"PATH": str(tmp_path)})
    assert_one_line_error(result, 1, "npm is not installed", "@vladmandic/human@3.3.6")
    assert list((tmp_path / "backbones").iterdir()) == []
    assert listing(tmp_path)["faceres"]["installed"] is False


def test_an_unreachable_registry_fails_in_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    env = {"npm_config_registry": "http://127.0.0.1:9/", "npm_config_fetch_retries": "0"}
    result = oceanstream(tmp_path, "backbones", "install", "faceres", env=env)
    assert_one_line_error(result, 1, "npm pack @vladmandic/human@3.3.6 failed", "ECONNREFUSED")
    assert list((tmp_path / "backbones").iterdir()) == []


@pytest.mark.slow
def test_install_is_recorded_listed_and_idempotent(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = installed_backbones(tmp_path_factory.getbasetemp())
    env = {"OCEANSTREAM_BACKBONES": str(directory)}
    rows = listing(tmp_path, env)
    for name in ("faceres", "emotion"):
        assert rows[name]["installed"] is True
        assert rows[name]["path"] == str(directory / f"{name}.keras")
        record = json.loads((directory / f"{name}.json").read_text())
        assert record["sha256"] and record["licence"].startswith("MIT") and record["created"]
        model = directory / f"{name}.keras"
        before = (model.stat().st_mtime_ns, (directory / f"{name}.json").read_text())
        again = oceanstream(tmp_path, "backbones", "install", name, env=env)
        assert again.returncode == 0, again.stderr
        assert f"{name} is already installed at {model}" in again.stdout
        assert (model.stat().st_mtime_ns, (directory / f"{name}.json").read_text()) == before
    assert sorted(os.listdir(directory)) == [
        "emotion.json",
        "emotion.keras",
        "faceres.json",
        "faceres.keras",
    ]


@pytest.mark.slow
def test_force_reinstalls_and_a_failed_reinstall_keeps_the_install(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    directory = installed_backbones(tmp_path_factory.getbasetemp())
    env = {"OCEANSTREAM_BACKBONES": str(directory)}
    record = directory / "emotion.json"
    before = record.read_text()
    forced = oceanstream(tmp_path, "backbones", "install", "emotion", "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.startswith("installed emotion (fer 25.10.3, MIT)")
    assert json.loads(record.read_text())["sha256"] == json.loads(before)["sha256"]

    kept = (
        (directory / "faceres.keras").stat().st_mtime_ns,
        (directory / "faceres.json").read_text(),
    )
    offline = {**env, "npm_config_registry": "http://127.0.0.1:9/", "npm_config_fetch_retries": "0"}
    failed = oceanstream(tmp_path, "backbones", "install", "faceres", "--force", env=offline)
    assert_one_line_error(failed, 1, "ECONNREFUSED")
    assert (
        (directory / "faceres.keras").stat().st_mtime_ns,
        (directory / "faceres.json").read_text(),
    ) == kept
    assert not [p for p in directory.iterdir() if p.name.startswith(".")]  # no scratch left
