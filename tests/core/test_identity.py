"""core.persons.identity and EmbeddingLinker: persons linked across cuts by who they are.

On synthetic vectors: the one-to-one assignment, the threshold, persons found again after a
faceless segment, the fallback to continuity without FaceRes. With the real MTCNN and FaceRes
(installed once per session by the real command, shared with tests/core/test_backbones.py):
two different people cut together in the same framing come back as two persons, each found
again after the cut, where continuity merges them and then loses the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.persons.faces import FaceDetection, FaceDetector
from core.persons.identity import (
    FaceResEmbedder,
    best_frames,
    identity_crop,
    identity_embedding,
)
from core.persons.person_links import (
    IDENTITY_THRESHOLD,
    ContinuityLinker,
    EmbeddingLinker,
    PersonLinker,
    PersonSummary,
    link_video,
    linker_for,
)
from core.persons.tracks import detect_persons
from tests import clips, people_clips
from tests.backbone_graph import installed_backbones

T = 8
BOX = (100.0, 60.0, 80.0, 100.0)  # x, y, w, h: one framing for every synthetic person


def person(vector: list[float] | None, person_id: int | None = None) -> PersonSummary:
    embedding = None if vector is None else np.asarray(vector, np.float64)
    box = np.array(BOX)
    return PersonSummary(box, box, T, person=person_id, embedding=embedding)


def unit(angle_degrees: float) -> list[float]:
    """A unit vector in the plane; two of them have cosine cos(difference of angles)."""
    angle = np.radians(angle_degrees)
    return [float(np.cos(angle)), float(np.sin(angle)), 0.0]


# Synthetic vectors.


def test_each_known_person_is_given_to_one_current_person_only() -> None:
    linker: PersonLinker = EmbeddingLinker(threshold=0.8)
    known = [person(unit(0), 4), person(unit(30), 9), person([0, 0, 1], 2)]
    # Both current persons are nearest to 4 (cos 0.998 and 0.985): the closer one gets it,
    # the other its next best above the threshold (9: cos 0.940).
    current = [person(unit(10)), person(unit(3)), person(unit(-90))]
    assert linker.link(known, current) == [9, 4, None]
    # Without 9 the second one is new, not a second 4.
    assert linker.link(known[::2], current) == [None, 4, None]


def test_similarity_below_the_threshold_or_a_missing_embedding_is_a_new_person() -> None:
    known = [person(unit(0), 0)]
    assert EmbeddingLinker(threshold=0.9).link(known, [person(unit(30))]) == [None]  # 0.866
    assert EmbeddingLinker(threshold=0.8).link(known, [person(unit(30))]) == [0]
    assert EmbeddingLinker().link(known, [person(None)]) == [None]
    assert EmbeddingLinker().link([person(None, 0)], [person(unit(0))]) == [None]
    with pytest.raises(ValueError, match="distinct video-level ids"):
        EmbeddingLinker().link([person(unit(0))], [person(unit(0))])
    with pytest.raises(ValueError, match="cosine similarity"):
        EmbeddingLinker(threshold=1.5)


def test_a_person_is_found_again_after_a_cut_and_a_faceless_segment() -> None:
    a, b = unit(0), unit(70)  # cos 0.34: two people
    segments = [[person(a)], [person(b)], [], [person(unit(5))], [person(b), person(a)]]
    assert link_video(segments, EmbeddingLinker()) == [[0], [1], [], [0], [1, 0]]
    # In one framing, continuity takes the second person for the first, then sees no one
    # before the face returns, and then links only what is in the segment before.
    assert link_video(segments, ContinuityLinker()) == [[0], [0], [], [1], [1, 2]]


def test_known_persons_are_compared_by_the_mean_of_their_embeddings() -> None:
    # One person seen at 0 then 25 degrees (cos 0.906: linked at 0.9); its mean is 12.5.
    seen = [[person(unit(0))], [person(unit(25))]]
    # At 35 it is 0.924 from the mean, though 0.819 from the first look ...
    assert link_video([*seen, [person(unit(35))]], EmbeddingLinker(0.9)) == [[0], [0], [0]]
    assert link_video([seen[0], [person(unit(35))]], EmbeddingLinker(0.9)) == [[0], [1]]
    # ... and at -10 0.924 from the mean, though 0.819 from the latest look.
    assert link_video([*seen, [person(unit(-10))]], EmbeddingLinker(0.9)) == [[0], [0], [0]]


def test_linker_for_falls_back_to_continuity_without_faceres(tmp_path: Path) -> None:
    assert isinstance(linker_for(tmp_path), ContinuityLinker)
    assert isinstance(linker_for(tmp_path / "missing"), ContinuityLinker)


def detection(box: tuple[float, float, float, float], confidence: float) -> FaceDetection:
    return FaceDetection(
        box=np.array(box), eyes=np.zeros((2, 2)), landmarks=np.zeros((5, 2)), confidence=confidence
    )


def test_best_frames_are_the_surest_and_largest_faces() -> None:
    small, large = (0, 0, 40, 40), (0, 0, 80, 80)
    detections = [detection(small, 0.99), None, detection(large, 0.95), detection(large, 0.99)]
    assert best_frames(detections, best=2) == [3, 2]
    assert best_frames(detections, best=5) == [3, 2, 0]
    assert best_frames([None, None]) == []


def test_identity_crop_is_a_square_around_the_face_padded_with_black() -> None:
    frame = np.full((100, 120, 3), 200, np.uint8)
    crop = identity_crop(frame, np.array([0.0, 0.0, 40.0, 40.0]), margin=2.0, size=224)
    assert crop.shape == (224, 224, 3)
    # An 80 px square centred on (20, 20): its top and left quarters lie outside the frame.
    assert crop[:50].max() == 0 and crop[:, :50].max() == 0 and crop[60:, 60:].min() == 200


def test_identity_embedding_of_crops_is_the_normalised_mean() -> None:
    faces = np.zeros((2, 224, 224, 3), np.uint8)
    faces[1] += 255

    def colour(batch: np.ndarray) -> np.ndarray:  # a toy embedder: mean colour and a bias
        return np.stack([batch.mean(axis=(1, 2, 3)) / 255, np.ones(len(batch))], axis=1)

    np.testing.assert_allclose(identity_embedding(faces, colour), [0.3827, 0.9239], atol=1e-4)


# Real faces, MTCNN and FaceRes.


@pytest.fixture(scope="module")
def faceres(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FaceResEmbedder]:
    folder = installed_backbones(tmp_path_factory.getbasetemp(), ("faceres",))
    return folder, FaceResEmbedder.load(folder)


def same_framing_edit(fps: float = 10) -> Iterator[np.ndarray]:
    """The astronaut, a cut to the cameraman in the same place, no face, the astronaut."""
    shot = {"seconds": 2.0, "fps": fps}
    yield from clips.talking_head_frames(seed=1, **shot)
    yield from people_clips.cameraman_frames(seed=2, **shot)
    yield from clips.faceless_frames(seconds=1.0, fps=fps, seed=3)
    yield from clips.talking_head_frames(seed=4, **shot)


def segment_summaries(
    frames: np.ndarray, face_detector: FaceDetector, embedder: FaceResEmbedder
) -> list[list[PersonSummary]]:
    """Each shot of the edit as one segment of T samples: its persons, with embeddings."""
    segments = []
    for _, start, end in people_clips.edit_shot_frames():
        sampled = frames[people_clips.segment_samples(start, end, T)]
        segments.append(
            [
                replace(
                    PersonSummary.of(found),
                    embedding=identity_embedding(found, embedder, frames=sampled),
                )
                for found in detect_persons(sampled, face_detector)
            ]
        )
    return segments


@pytest.mark.slow
def test_two_people_cut_together_in_one_framing_are_two_persons_found_again(
    tmp_path: Path, face_detector: FaceDetector, faceres: tuple[Path, FaceResEmbedder]
) -> None:
    folder, embedder = faceres
    path = clips.write_video(tmp_path / "same_framing.mp4", same_framing_edit(), fps=10)
    segments = segment_summaries(people_clips.read_frames(path), face_detector, embedder)
    assert [len(persons) for persons in segments] == [1, 1, 0, 1]

    assert link_video(segments, linker_for(folder)) == [[0], [1], [], [0]]
    # Continuity takes the cameraman for the astronaut and the astronaut's return for new.
    assert link_video(segments, ContinuityLinker()) == [[0], [0], [], [1]]

    (a,), (b,), _, (a_again,) = segments
    assert a.embedding is not None and b.embedding is not None and a_again.embedding is not None
    assert float(a.embedding @ a_again.embedding) >= IDENTITY_THRESHOLD
    assert float(a.embedding @ b.embedding) < IDENTITY_THRESHOLD
    assert float(b.embedding @ a_again.embedding) < IDENTITY_THRESHOLD


@pytest.mark.slow
def test_the_edit_in_two_framings_links_by_identity(
    tmp_path: Path, face_detector: FaceDetector, faceres: tuple[Path, FaceResEmbedder]
) -> None:
    folder, embedder = faceres
    assert isinstance(linker_for(folder), EmbeddingLinker)
    path = people_clips.write_edit(tmp_path / "edit.mp4")
    segments = segment_summaries(people_clips.read_frames(path), face_detector, embedder)
    assert link_video(segments, EmbeddingLinker()) == [[0], [1], [], [0]]
    assert link_video(segments, ContinuityLinker()) == [[0], [1], [], [2]]
