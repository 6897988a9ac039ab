"""core.persons.faces with the real MTCNN on generated clips: detection, picking, alignment,
crops."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.persons.faces import FaceCrops, FaceDetector, alignment_matrix
from core.video.probe import sample_frames
from tests import clips, people_clips


def still_face(size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """One frame of the talking head without motion: the face is centred and upright."""
    return next(clips.talking_head_frames(seconds=0.1, size=size, motion=0.0))


def rotate(frame: np.ndarray, degrees: float) -> np.ndarray:
    height, width = frame.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), degrees, 1.0)
    return cv2.warpAffine(frame, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def eye_angle(face_detector: FaceDetector, image: np.ndarray) -> float:
    """Tilt of the eye line, in degrees, as MTCNN sees it in ``image``."""
    (face,) = face_detector._find_faces(image[None])
    assert face is not None, "no face found"
    (lx, ly), (rx, ry) = face.eyes
    return math.degrees(math.atan2(ry - ly, rx - lx))


def assert_consistent(found: FaceCrops, count: int, crop: int = 112) -> None:
    assert found.crops.shape == (count, crop, crop, 3) and found.crops.dtype == np.uint8
    assert found.mask.shape == (count,) and found.mask.dtype == np.bool_
    assert found.boxes.shape == (count, 4) and found.boxes.dtype == np.float32
    assert found.confidence.shape == (count,) and found.confidence.dtype == np.float32
    assert not found.crops[~found.mask].any()
    assert np.isnan(found.boxes[~found.mask]).all()
    assert not found.confidence[~found.mask].any()
    assert np.isfinite(found.boxes[found.mask]).all()
    assert all(crop.std() > 10 for crop in found.crops[found.mask])  # real image content


def test_finds_the_face_in_most_frames_of_a_talking_head(
    face_detector: FaceDetector, talking_head: Path
) -> None:
    sampled = sample_frames(talking_head, num_frames=16)
    found = face_detector.detect(sampled.frames)
    assert_consistent(found, 16)
    assert found.faces_found >= 0.8 * 16
    assert (found.confidence[found.mask] >= 0.9).all()
    x, y, w, h = found.boxes[found.mask].T
    assert (x >= 0).all() and (y >= 0).all() and (x + w <= 320).all() and (y + h <= 240).all()


def test_finds_no_face_in_a_faceless_scene(face_detector: FaceDetector, faceless: Path) -> None:
    found = face_detector.detect(sample_frames(faceless, num_frames=16).frames)
    assert_consistent(found, 16)
    assert found.faces_found == 0


def test_batch_results_stay_with_their_frames(face_detector: FaceDetector) -> None:
    faces = np.stack(list(clips.talking_head_frames(seconds=0.2, seed=4)))[:3]
    empty = np.stack(list(clips.faceless_frames(seconds=0.2, seed=4)))[:3]
    found = face_detector.detect(
        np.stack([empty[0], faces[0], empty[1], faces[1], faces[2], empty[2]])
    )
    assert found.mask.tolist() == [False, True, False, True, True, False]


def test_boxes_are_in_source_frame_pixels(face_detector: FaceDetector) -> None:
    # Detection runs at 256 px wide; a still 1280x720 face is centred and 45 % of the height.
    found = face_detector.detect(still_face((1280, 720))[None])
    assert found.mask[0]
    x, y, w, h = found.boxes[0]
    assert abs(x + w / 2 - 640) < 40 and abs(y + h / 2 - 360) < 40
    assert 0.35 * 720 < h < 0.55 * 720


def test_keeps_the_most_prominent_face(face_detector: FaceDetector) -> None:
    big = still_face((320, 240))
    small = cv2.resize(big, (160, 120), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((240, 480, 3), np.uint8)
    canvas[:, :320] = big
    canvas[60:180, 320:] = small
    found = face_detector.detect(canvas[None])
    x, _, w, _ = found.boxes[0]
    assert found.mask[0] and x + w <= 320 and w > 60


def test_alignment_makes_the_eye_line_horizontal(face_detector: FaceDetector) -> None:
    tilted = rotate(still_face(), 20.0)
    assert abs(eye_angle(face_detector, tilted)) > 12
    found = face_detector.detect(tilted[None])
    assert found.mask[0]
    assert abs(eye_angle(face_detector, found.crops[0])) < 4


def test_alignment_matrix_levels_the_eyes_and_centres_the_box() -> None:
    box = np.array([100.0, 80.0, 180.0, 180.0])
    eyes = np.array([[120.0, 110.0], [160.0, 130.0]])
    matrix = alignment_matrix(box, eyes, crop_size=112, margin=0.3)
    mapped = cv2.transform(eyes[None], matrix)[0]
    assert mapped[0, 1] == pytest.approx(mapped[1, 1], abs=1e-6)
    assert mapped[1, 0] > mapped[0, 0]
    centre = cv2.transform(np.array([[[140.0, 130.0]]]), matrix)[0, 0]
    np.testing.assert_allclose(centre, [56.0, 56.0], atol=1e-6)
    # A square of side 1.3 x 100 px maps onto the 112 px crop.
    assert math.hypot(matrix[0, 0], matrix[0, 1]) == pytest.approx(112 / 130)


def test_crop_size_is_configurable() -> None:
    detector = FaceDetector(crop_size=64, margin=0.5)
    found = detector.detect(still_face()[None])
    assert found.crops.shape == (1, 64, 64, 3) and found.mask[0]


def test_empty_batch(face_detector: FaceDetector) -> None:
    found = face_detector.detect(np.zeros((0, 240, 320, 3), np.uint8))
    assert_consistent(found, 0)


@pytest.mark.parametrize(
    "frames, message",
    [
        (np.zeros((240, 320, 3), np.uint8), r"\[T, H, W, 3\]"),
        (np.zeros((2, 240, 320, 3), np.float32), "uint8"),
    ],
)
def test_rejects_frames_of_the_wrong_layout(
    face_detector: FaceDetector, frames: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        face_detector.detect(frames)


# Every face per frame (`detect_all`) and crops of given faces (`crop`), for core.persons.tracks.


def two_faces(size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """One frame of the two-people clip: the astronaut on the left, the cameraman on the right."""
    return next(people_clips.side_by_side_frames(seconds=0.1, size=size))


def test_detect_all_finds_every_face_left_to_right(face_detector: FaceDetector) -> None:
    empty = next(clips.faceless_frames(seconds=0.1))
    found = face_detector.detect_all(np.stack([two_faces(), empty, still_face()]))
    assert [len(faces) for faces in found] == [2, 0, 1]
    left, right = found[0]
    assert left.box[2] <= 160 <= right.box[0]
    for face in (left, right, found[2][0]):
        assert face.confidence >= face_detector.min_confidence
        assert face.landmarks.shape == (2 + 3, 2) and face.eyes.shape == (2, 2)
        assert face.eyes[0, 0] < face.eyes[1, 0]
        x1, y1, x2, y2 = face.box
        assert ((face.landmarks >= (x1, y1)) & (face.landmarks <= (x2, y2))).all()


def test_detect_all_holds_the_face_detect_picks(face_detector: FaceDetector) -> None:
    frames = np.stack([two_faces(), still_face()])
    picked = face_detector.detect(frames)
    for i, faces in enumerate(face_detector.detect_all(frames)):
        boxes = [(*face.box[:2], *(face.box[2:] - face.box[:2])) for face in faces]
        assert any(np.allclose(box, picked.boxes[i]) for box in boxes)


def test_crop_cuts_given_faces_as_detect_does(face_detector: FaceDetector) -> None:
    frames = np.stack([two_faces(), two_faces()])
    (left, right), _ = face_detector.detect_all(frames)
    found = face_detector.crop(frames, [right, None])
    assert_consistent(found, 2)
    assert found.mask.tolist() == [True, False]
    np.testing.assert_array_equal(
        found.boxes[0], np.float32([*right.box[:2], *right.box[2:] - right.box[:2]])
    )
    assert found.confidence[0] == np.float32(right.confidence)
    with pytest.raises(ValueError, match="one face or None per frame"):
        face_detector.crop(frames, [left])
