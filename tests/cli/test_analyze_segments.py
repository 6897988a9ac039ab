"""`oceanstream analyze` on videos of several segments and persons, end to end.

The edit (`tests.people_clips`): the astronaut 0-2 s, the cameraman 2-4 s, no face 4-5 s,
the astronaut again 5-7 s. With 1 s windows every shot is whole segments. Without an identity
backbone persons are linked by continuity, which cannot bridge the faceless gap; with FaceRes
installed they are linked by identity, across the gap and the cuts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.backbone_graph import installed_backbones
from tests.cli.helpers import oceanstream
from tests.people_clips import write_cut_edit, write_edit, write_side_by_side

pytestmark = pytest.mark.slow

# Exact 1 s windows, so that every shot is whole segments (boundaries on keyframes would move
# to the clip's keyframes, every 12 frames).
ONE_SECOND = {"OCEANSTREAM_SEGMENT_SECONDS": "1", "OCEANSTREAM_SEGMENT_KEYFRAMES": "false"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("people")
    return {
        "edit": write_edit(folder / "edit.mp4"),
        "two": write_side_by_side(folder / "two.mp4", seconds=2.0),
        "cuts": write_cut_edit(folder / "cuts.mp4"),
    }


def analyze(home: Path, clip: Path, env: dict[str, str], *, note: bool | None = None) -> dict:
    done = oceanstream(home, "analyze", str(clip), "--json", env=env)
    assert done.returncode == 0, done.stderr
    if note is not None:
        assert done.stderr.count("linked by position only") == int(note), done.stderr
    [row] = json.loads(done.stdout)
    return row


# The same-framing edit (`write_cut_edit`): 12 s at 4 fps, a cut inside each 4 s segment
# (at 1.25, 6.0 and 10.75 s), the astronaut (A) and the cameraman (B) in the same place. Of
# each segment's 8 samples B has 5 and A 3 in the first, 4 each in the second, A 5 and B 3 in
# the third.
FOUR_SECONDS = {"OCEANSTREAM_SEGMENT_SECONDS": "4", "OCEANSTREAM_SEGMENT_KEYFRAMES": "false"}


def test_a_cut_inside_a_segment_gives_two_persons_and_a_shot(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    row = analyze(tmp_path / "home", clips["cuts"], FOUR_SECONDS, note=True)
    segments = row["segments"]
    assert [(s["start_s"], s["end_s"]) for s in segments] == [(0.0, 4.0), (4.0, 8.0), (8.0, 12.0)]
    assert row["shots"] == [s["shots"][0] for s in segments]
    # Within half a sampling interval (4 s / 7) of the cuts.
    assert row["shots"] == pytest.approx([1.25, 6.0, 10.75], abs=0.3)
    assert [[p["faces_found"] for p in s["persons"]] for s in segments] == [[5, 3], [4, 4], [5, 3]]
    # Position links across the boundaries (no cut there) and never across a cut: B is 0 in
    # the first two segments, A 1 in the first only, 2 in the last two, B 3 in the last.
    numbers = [[p["person"] for p in s["persons"]] for s in segments]
    assert numbers[0] == [0, 1] and sorted(numbers[1]) == [0, 2] and numbers[2] == [2, 3]


def test_faceres_keeps_the_two_people_of_a_cut_edit_apart_and_whole(
    clips: dict[str, Path], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    backbones = installed_backbones(tmp_path_factory.getbasetemp(), ("faceres",))
    env = {**FOUR_SECONDS, "OCEANSTREAM_BACKBONES": str(backbones)}
    row = analyze(tmp_path / "home", clips["cuts"], env, note=False)
    numbers = [[p["person"] for p in s["persons"]] for s in row["segments"]]
    # B is person 0 and A person 1 in every segment, on both sides of every boundary and cut.
    assert numbers[0] == [0, 1] and sorted(numbers[1]) == [0, 1] and numbers[2] == [1, 0]
    assert len(row["persons"]) == 2


def test_an_edit_gives_timed_segments_and_no_face_for_the_faceless_window_only(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    row = analyze(tmp_path / "home", clips["edit"], ONE_SECOND)
    segments = row["segments"]
    assert [(s["start_s"], s["end_s"]) for s in segments] == [(i, i + 1.0) for i in range(7)]
    assert [s["status"] for s in segments] == ["done"] * 4 + ["no_face"] + ["done"] * 2
    assert row["status"] == "done" and row["duration_s"] == pytest.approx(7.0)
    shots = [[p["person"] for p in s["persons"]] for s in segments]
    # One person per shot; the cut from the astronaut to the cameraman starts a new person,
    # and continuity cannot link the astronaut across the faceless second.
    assert shots == [[0], [0], [1], [1], [], [2], [2]]
    persons = {p["person"]: p for p in row["persons"]}
    assert [(p["first_s"], p["last_s"], p["segments"]) for p in persons.values()] == [
        (0.0, 2.0, 2),
        (2.0, 4.0, 2),
        (5.0, 7.0, 2),
    ]
    # Ties in face frames go to the lowest number: the headline is person 0's aggregate.
    assert row["traits"] == pytest.approx(persons[0]["traits"])


def test_faceres_links_the_same_person_across_the_gap(
    clips: dict[str, Path], tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    backbones = installed_backbones(tmp_path_factory.getbasetemp(), ("faceres",))
    env = {**ONE_SECOND, "OCEANSTREAM_BACKBONES": str(backbones)}
    row = analyze(tmp_path / "home", clips["edit"], env)
    shots = [[p["person"] for p in s["persons"]] for s in row["segments"]]
    assert shots == [[0], [0], [1], [1], [], [0], [0]]
    persons = {p["person"]: p for p in row["persons"]}
    assert sorted(persons) == [0, 1]
    assert (persons[0]["segments"], persons[0]["faces_found"]) == (4, 32)
    assert row["traits"] == pytest.approx(persons[0]["traits"])


def test_two_people_side_by_side_get_their_own_scores(
    clips: dict[str, Path], tmp_path: Path
) -> None:
    home = tmp_path / "home"
    row = analyze(home, clips["two"], {})
    [segment] = row["segments"]
    assert [p["person"] for p in segment["persons"]] == [0, 1]
    left, right = (p["traits"] for p in row["persons"])
    assert not np.allclose(list(left.values()), list(right.values()))
    for person in (0, 1):
        drawn = home / f"p{person}.png"
        done = oceanstream(
            home, "attention", str(clips["two"]), "--person", str(person), "--out", str(drawn)
        )
        assert done.returncode == 0 and drawn.stat().st_size > 0, done.stderr
