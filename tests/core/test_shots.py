"""core.persons.shots and shot-aware tracking on generated edits of two real faces.

The edit cuts between the astronaut and the cameraman in the same framing and the same place,
inside each of three segments at a different offset: position alone would take one for the
other. Each frame of the clip is one sample, a second of motion apart (the generators are run
at 1 fps), so the motion between samples is what a segment sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.persons.faces import FaceDetector
from core.persons.identity import FaceResEmbedder
from core.persons.person_links import ContinuityLinker, EmbeddingLinker, PersonSummary, link_video
from core.persons.segment_analysis import describe_faces, person_embedding
from core.persons.shots import cut_scores, cut_times, detect_cuts, shot_of_frames
from core.persons.tracks import Person, detect_persons, find_persons
from tests import clips, people_clips
from tests.backbone_graph import installed_backbones

T = 16
CUTS = people_clips.CUT_EDIT_CUTS  # offsets 5, 8 and 11 of segments of 16


@pytest.fixture(scope="module")
def edit(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The decoded edit: 48 samples, three segments of 16."""
    path = tmp_path_factory.mktemp("shots") / "edit.mp4"
    return people_clips.read_frames(people_clips.write_cut_edit(path))


def is_cameraman(person: Person) -> list[bool]:
    """For each face frame of the person: is it the cameraman (a grey photo)?"""
    crops = person.faces.crops[person.faces.mask].astype(np.int16)
    return [bool(np.abs(crop[..., 0] - crop[..., 2]).mean() < 4) for crop in crops]


def segments_of(edit: np.ndarray) -> list[np.ndarray]:
    return [edit[k * T : (k + 1) * T] for k in range(len(edit) // T)]


def test_cuts_are_found_where_the_edit_cuts(edit: np.ndarray) -> None:
    assert detect_cuts(edit) == CUTS
    scores = cut_scores(edit)
    assert scores.shape == (len(edit) - 1,)
    assert np.delete(scores, np.array(CUTS) - 1).max() < 0.5 * scores[np.array(CUTS) - 1].min()
    assert shot_of_frames(6, (2, 5)).tolist() == [0, 0, 1, 1, 1, 2]
    assert cut_times(15.0, 30.0, 16, (5, 8)) == [19.5, 22.5]
    assert cut_times(15.0, 30.0, 16, ()) == []


def test_one_continuous_shot_with_turns_and_light_changes_is_one_person(
    face_detector: FaceDetector,
) -> None:
    frames = np.stack(
        list(clips.talking_head_frames(seconds=T, fps=1.0, seed=5, motion=2.0, brightness=0.8))
    )
    assert detect_cuts(frames) == ()
    (person,) = detect_persons(frames, face_detector)
    assert person.faces_found >= T - 2


def test_without_identity_each_side_of_a_cut_is_its_own_person(
    face_detector: FaceDetector, edit: np.ndarray
) -> None:
    summaries = []
    for k, frames in enumerate(segments_of(edit)):
        persons = detect_persons(frames, face_detector)
        cut = CUTS[k] - k * T
        assert len(persons) == 2, f"segment {k}"
        for person in persons:
            seen = np.flatnonzero(person.faces.mask)
            # Its own frames only: all on one side of the cut, all of one face.
            assert (seen < cut).all() or (seen >= cut).all()
            assert len(set(is_cameraman(person))) == 1
            assert person.opens_segment == (seen[0] < cut)
            assert person.closes_segment == (seen[-1] >= cut)
        summaries.append([PersonSummary.of(p) for p in persons])
        who = {i: is_cameraman(p)[0] for i, p in enumerate(persons)}
        summaries[-1] = [(s, who[i]) for i, s in enumerate(summaries[-1])]
    ids = link_video([[s for s, _ in seg] for seg in summaries], ContinuityLinker())
    # Position links across the segment boundaries (no cut there), never a cameraman to the
    # astronaut: every video person is one face.
    faces_of: dict[int, set[bool]] = {}
    for seg, numbers in zip(summaries, ids, strict=True):
        for (_, cameraman), number in zip(seg, numbers, strict=True):
            faces_of.setdefault(number, set()).add(cameraman)
    assert all(len(faces) == 1 for faces in faces_of.values())
    assert len(faces_of) == 4  # A, B (across a boundary), A (across one), B


@pytest.fixture(scope="module")
def faceres(tmp_path_factory: pytest.TempPathFactory) -> FaceResEmbedder:
    folder = installed_backbones(tmp_path_factory.getbasetemp(), ("faceres",))
    return FaceResEmbedder.load(folder)


@pytest.mark.slow
def test_with_identity_the_two_people_keep_their_numbers_across_cuts_and_segments(
    face_detector: FaceDetector, edit: np.ndarray, faceres: FaceResEmbedder
) -> None:
    segments = []
    for k, frames in enumerate(segments_of(edit)):
        detections = face_detector.detect_all(frames)
        descriptors = describe_faces(frames, detections, faceres)
        # No cut given: identity alone keeps each track to one face.
        persons = find_persons(frames, detections, face_detector, descriptors=descriptors)
        assert len(persons) == 2 and all(len(set(is_cameraman(p))) == 1 for p in persons), k
        segments.append(
            [
                (replace(PersonSummary.of(p), embedding=person_embedding(p)), is_cameraman(p)[0])
                for p in persons
            ]
        )
    ids = link_video([[s for s, _ in seg] for seg in segments], EmbeddingLinker())
    numbers = {
        cameraman: number
        for seg, seg_ids in zip(segments, ids, strict=True)
        for (_, cameraman), number in zip(seg, seg_ids, strict=True)
    }
    # One number per face, in every segment.
    assert sorted(numbers.values()) == [0, 1]
    for seg, seg_ids in zip(segments, ids, strict=True):
        assert [numbers[cameraman] for _, cameraman in seg] == seg_ids


@pytest.mark.slow
def test_identity_rejoins_one_person_on_both_sides_of_a_cut(
    tmp_path: Path, face_detector: FaceDetector, faceres: FaceResEmbedder
) -> None:
    # The astronaut, a cut to another framing of her (larger, moved), and back.
    def frames() -> Iterator[np.ndarray]:
        yield from clips.talking_head_frames(seconds=6, fps=1.0, seed=1)
        yield from clips.talking_head_frames(
            seconds=5, fps=1.0, seed=2, scale=1.4, offset=(0.15, 0.1)
        )
        yield from clips.talking_head_frames(seconds=5, fps=1.0, seed=3)

    sampled = people_clips.read_frames(clips.write_video(tmp_path / "a.mp4", frames(), fps=4))
    # A reframing of the same picture keeps its histograms (no cut is found); given the cuts,
    # position alone splits her in three and identity joins her again.
    assert detect_cuts(sampled) == ()
    cuts = (6, 11)
    detections = face_detector.detect_all(sampled)
    assert len(find_persons(sampled, detections, face_detector, cuts=cuts)) == 3
    descriptors = describe_faces(sampled, detections, faceres)
    (person,) = find_persons(sampled, detections, face_detector, cuts=cuts, descriptors=descriptors)
    assert person.faces_found >= T - 2
