"""Names, errors and bundle metadata are printed as they are: never read as console markup
or emoji codes, and never as spreadsheet formulas in CSV."""

from __future__ import annotations

import contextlib
import csv
import io
import re
from pathlib import Path

import pytest

from core.traits import TRAITS
from tests.cli.helpers import oceanstream
from tests.clips import write_empty, write_talking_head, write_text

pytestmark = pytest.mark.slow

#: A folder `h6_[` holding `[/]markup.mp4`, as the path reads once given.
MARKUP_CLIP = "h6_[/[/]markup.mp4"
EMOJI_CLIP = "root:x:0.mp4"
FORMULA_CLIP = "=cmd.mp4"


def assert_clean(done, code: int) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "MarkupError" not in done.stderr, done.stderr


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One home where a markup-named clip was scored and two oddly named files failed.

    The command runs from the clips' folder so the paths are stored as given, relative.
    """
    folder = tmp_path_factory.mktemp("clips")
    (folder / "h6_[" / "[").mkdir(parents=True)
    write_talking_head(folder / MARKUP_CLIP, seconds=1.0, seed=1)
    write_empty(folder / EMOJI_CLIP)
    write_text(folder / FORMULA_CLIP)
    home = tmp_path_factory.mktemp("home")
    with contextlib.chdir(folder):
        done = oceanstream(home, "analyze", "h6_[", EMOJI_CLIP, FORMULA_CLIP)
    job = re.search(r"job ([0-9a-f]{32})", done.stderr)
    return {"home": home, "folder": folder, "done": done, "job": job and job.group(1)}


def test_analyze_prints_names_as_given(analyzed: dict) -> None:
    done = analyzed["done"]
    assert_clean(done, 1)
    for name in (MARKUP_CLIP, EMOJI_CLIP, FORMULA_CLIP):
        assert name in done.stdout, done.stdout
    assert analyzed["job"], done.stderr


def test_results_table_for_the_job_and_all(analyzed: dict) -> None:
    for args in (("--job", analyzed["job"]), ()):
        done = oceanstream(analyzed["home"], "results", *args)
        assert_clean(done, 0)
        for name in (MARKUP_CLIP, EMOJI_CLIP, FORMULA_CLIP):
            assert name in done.stdout, done.stdout
        assert "❌" not in done.stdout


def test_status_lists_failures_literally(analyzed: dict) -> None:
    done = oceanstream(analyzed["home"], "status", analyzed["job"])
    assert_clean(done, 0)
    assert f"failed {EMOJI_CLIP}:" in done.stdout, done.stdout
    assert f"failed {FORMULA_CLIP}:" in done.stdout, done.stdout
    assert "[red]" not in done.stdout  # the command's own markup still styles
    assert "❌" not in done.stdout


def test_csv_neutralises_formulas_but_keeps_scores_numeric(analyzed: dict) -> None:
    done = oceanstream(analyzed["home"], "results", "--format", "csv")
    assert_clean(done, 0)
    rows = {row["video"]: row for row in csv.DictReader(io.StringIO(done.stdout))}
    assert set(rows) == {MARKUP_CLIP, EMOJI_CLIP, f"'{FORMULA_CLIP}"}, rows
    scored = rows[MARKUP_CLIP]
    for trait in TRAITS:
        assert 0.0 <= float(scored[trait]) <= 1.0, scored
    for row in rows.values():
        for value in row.values():
            assert not value or value[0] not in "=+-@\t\r", row


def test_attention_prints_a_markup_path(analyzed: dict, tmp_path: Path) -> None:
    target = tmp_path / "h6_[" / "[" / "]map.png"
    done = oceanstream(analyzed["home"], "attention", "]markup.mp4", "--out", str(target))
    assert_clean(done, 0)
    assert str(target) in done.stdout.replace("\n", ""), done.stdout


def test_missing_markup_path_is_a_one_line_usage_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope[/]x.mp4")
    done = oceanstream(tmp_path, "analyze", missing)
    assert_clean(done, 2)
    assert missing in "".join(done.stderr.splitlines()), done.stderr


def test_models_list_shows_markup_dataset(analyzed: dict, tmp_path: Path) -> None:
    import keras

    from core.bundles.bundle import BundleMetadata, ModelBundle, build_models, save_bundle

    keras.utils.set_random_seed(5)
    meta = BundleMetadata(version="", trained=True, num_frames=8, seed=5, dataset="evil[/]data")
    folder = save_bundle(ModelBundle(meta, *build_models(meta)), tmp_path / "b:x:1[/]")
    registered = oceanstream(analyzed["home"], "models", "register", str(folder))
    assert_clean(registered, 0)
    done = oceanstream(analyzed["home"], "models", "list")
    assert_clean(done, 0)
    # The uri column (the bundle's folder, also markup) is cut to the table's width.
    assert "evil[/]data" in done.stdout, done.stdout
