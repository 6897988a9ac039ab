"""core.persons.person_links: a segment's persons linked to the previous segment's by continuity; on
synthetic boxes, and with the real MTCNN on segments cut from decoded clips."""

from __future__ import annotations

import numpy as np
import pytest

from core.persons.faces import FaceDetector
from core.persons.person_links import ContinuityLinker, PersonLinker, PersonSummary, number_persons
from core.persons.tracks import Person, detect_persons
from tests import people_clips

T = 8


def summary(
    first: tuple[float, ...], last: tuple[float, ...] | None = None, person: int | None = None
) -> PersonSummary:
    """A person seen from box ``first`` to box ``last`` (x, y, w, h)."""
    return PersonSummary(
        first_box=np.array(first, np.float64),
        last_box=np.array(last if last is not None else first, np.float64),
        face_frames=T,
        person=person,
    )


# Synthetic boxes.


def test_links_each_person_to_the_one_that_ended_where_it_starts() -> None:
    linker: PersonLinker = ContinuityLinker()
    previous = [
        summary((0, 0, 50, 60), last=(20, 40, 50, 60), person=7),
        summary((200, 40, 50, 60), person=3),
    ]
    # The current segment lists them in the other order, both moved a little.
    current = [summary((210, 45, 52, 60)), summary((30, 42, 50, 58))]
    assert linker.link(previous, current) == [3, 7]


def test_a_person_far_from_or_much_larger_than_any_before_is_new() -> None:
    previous = [summary((100, 100, 50, 60), person=0)]
    far = summary((170, 100, 50, 60))  # 1.3 face sizes away
    close_up = summary((90, 90, 80, 96))  # 1.6 times the size, same place
    near = summary((120, 100, 50, 60))
    assert ContinuityLinker().link(previous, [far, close_up, near]) == [None, None, 0]
    assert ContinuityLinker().link(previous, [close_up]) == [None]
    assert ContinuityLinker(min_size_ratio=0.5).link(previous, [close_up]) == [0]


def test_one_previous_person_continues_in_one_current_person_only() -> None:
    previous = [summary((100, 100, 50, 60), person=4)]
    current = [summary((125, 100, 50, 60)), summary((102, 100, 50, 60))]
    assert ContinuityLinker().link(previous, current) == [None, 4]


def test_empty_segments() -> None:
    linker = ContinuityLinker()
    assert linker.link([], [summary((0, 0, 10, 10))]) == [None]
    assert linker.link([summary((0, 0, 10, 10), person=1)], []) == []


def test_previous_persons_need_distinct_ids() -> None:
    with pytest.raises(ValueError, match="distinct video-level ids"):
        ContinuityLinker().link([summary((0, 0, 10, 10))], [summary((0, 0, 10, 10))])
    twice = [summary((0, 0, 10, 10), person=1), summary((50, 0, 10, 10), person=1)]
    with pytest.raises(ValueError, match="distinct video-level ids"):
        ContinuityLinker().link(twice, [])
    with pytest.raises(ValueError, match="max_shift"):
        ContinuityLinker(max_shift=0)


def test_number_persons_keeps_links_and_counts_new_ones_up() -> None:
    assert number_persons([None, 3, None], next_id=5) == [5, 3, 6]
    assert number_persons([], next_id=0) == []


def test_summary_keeps_room_for_an_embedding() -> None:
    embedded = PersonSummary(
        first_box=np.zeros(4), last_box=np.zeros(4), face_frames=1, embedding=np.ones(512)
    )
    assert embedded.embedding is not None and embedded.embedding.shape == (512,)


# Segments cut from real clips, real detector.


def segment_persons(
    face_detector: FaceDetector, frames: np.ndarray, start: int, end: int
) -> list[Person]:
    return detect_persons(frames[people_clips.segment_samples(start, end, T)], face_detector)


def link_segments(segments: list[list[Person]]) -> list[list[int]]:
    """Video-level ids of each segment's persons, linking each segment to the one before."""
    linker, ids, previous, next_id = ContinuityLinker(), [], [], 0
    for persons in segments:
        current = [PersonSummary.of(person) for person in persons]
        links = linker.link(previous, current)
        segment_ids = number_persons(links, next_id)
        next_id += links.count(None)
        previous = [PersonSummary.of(p, i) for p, i in zip(persons, segment_ids, strict=True)]
        ids.append(segment_ids)
    return ids


@pytest.fixture(scope="module")
def edit(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The decoded edit: astronaut 2 s, cameraman 2 s, no face 1 s, astronaut 2 s (10 fps)."""
    path = people_clips.write_edit(tmp_path_factory.mktemp("people") / "edit.mp4")
    return people_clips.read_frames(path)


@pytest.fixture(scope="module")
def two_people(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    path = people_clips.write_side_by_side(
        tmp_path_factory.mktemp("people") / "two.mp4", seconds=3.0, fps=10
    )
    return people_clips.read_frames(path)


def test_two_people_keep_their_ids_across_a_boundary(
    face_detector: FaceDetector, two_people: np.ndarray
) -> None:
    half = len(two_people) // 2
    first = segment_persons(face_detector, two_people, 0, half)
    second = segment_persons(face_detector, two_people, half, len(two_people))
    assert len(first) == len(second) == 2
    previous = [
        PersonSummary.of(person, person_id)
        for person, person_id in zip(first, (10, 20), strict=True)
    ]
    # Listed in the other order, the current persons still find their own ids.
    current = [PersonSummary.of(person) for person in second[::-1]]
    assert ContinuityLinker().link(previous, current) == [20, 10]


def test_an_edit_links_within_a_shot_and_not_across_cuts(
    face_detector: FaceDetector, edit: np.ndarray
) -> None:
    shots = people_clips.edit_shot_frames()
    assert [who for who, _, _ in shots] == ["astronaut", "cameraman", None, "astronaut"]
    (_, a_start, a_end), (_, b_start, b_end), (_, gap_start, gap_end), (_, a2_start, a2_end) = shots
    middle = (a_start + a_end) // 2
    segments = [
        segment_persons(face_detector, edit, a_start, middle),  # the astronaut, first half
        segment_persons(face_detector, edit, middle, a_end),  # ... second half: the same person
        segment_persons(face_detector, edit, b_start, b_end),  # a cut to the cameraman elsewhere
        segment_persons(face_detector, edit, gap_start, gap_end),  # no face
        segment_persons(face_detector, edit, a2_start, a2_end),  # the astronaut after the gap
    ]
    # Continuity only sees the segment before: the astronaut's return is a new person.
    assert link_segments(segments) == [[0], [0], [1], [], [2]]
