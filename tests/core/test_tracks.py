"""core.persons.tracks: detections linked into tracks, tracks into persons, each person's crops and
flow region; with the real MTCNN on decoded clips, and on synthetic boxes for the geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.persons.faces import FaceDetection, FaceDetector
from core.persons.regions import Region, RegionGrowth, crop_pair, crop_region, flow_region
from core.persons.shots import detect_cuts
from core.persons.tracks import (
    Track,
    TrackingConfig,
    assign,
    box_iou,
    detect_persons,
    find_persons,
    link_tracks,
    match_scores,
    select_persons,
)
from core.video.flow import compute_flow
from core.video.probe import sample_frames
from tests import clips, people_clips

T = 16


def face(x1: float, y1: float, x2: float, y2: float, confidence: float = 0.99) -> FaceDetection:
    """A synthetic detection: eyes a third of the way down, level."""
    ey = y1 + (y2 - y1) / 3
    eyes = np.array([[x1 + (x2 - x1) / 3, ey], [x1 + 2 * (x2 - x1) / 3, ey]])
    nose_mouth = np.array([[(x1 + x2) / 2, (y1 + y2) / 2], [x1, y2], [x2, y2]])
    return FaceDetection(
        box=np.array([x1, y1, x2, y2], np.float64),
        eyes=eyes,
        landmarks=np.concatenate([eyes, nose_mouth]),
        confidence=confidence,
    )


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """T frames sampled from a decoded 2 s clip of the astronaut (left) and the cameraman."""
    path = people_clips.write_side_by_side(tmp_path_factory.mktemp("people") / "two.mp4")
    frames = people_clips.read_frames(path)
    return frames[people_clips.segment_samples(0, len(frames), T)]


@pytest.fixture(scope="module")
def one_face(talking_head: Path) -> np.ndarray:
    return sample_frames(talking_head, num_frames=T).frames


def faceless(count: int, size: tuple[int, int]) -> np.ndarray:
    frames = clips.faceless_frames(seconds=count / 15 + 0.1, size=size, seed=3)
    return np.stack(list(frames))[:count]


# Real faces, real detector.


def test_two_faces_side_by_side_are_two_persons(
    face_detector: FaceDetector, side_by_side: np.ndarray
) -> None:
    persons = detect_persons(side_by_side, face_detector)
    assert len(persons) == 2
    left, right = persons
    for person in persons:
        assert person.faces.crops.shape == (T, 112, 112, 3)
        assert person.faces.mask.shape == (T,) and person.faces_found >= T - 2
        assert not person.faces.crops[~person.faces.mask].any()
        x, _, w, _ = person.faces.boxes[person.faces.mask].T
        region = person.region
        assert (x >= region.x).all() and (x + w <= region.x + region.width).all()
    # Each person keeps to its own half, with its own face: the cameraman's photo is grey.
    assert (left.faces.boxes[left.faces.mask, 0] + left.faces.boxes[left.faces.mask, 2] < 170).all()
    assert (right.faces.boxes[right.faces.mask, 0] > 150).all()
    assert saturation(left.faces.crops[left.faces.mask]) > 4 * saturation(
        right.faces.crops[right.faces.mask]
    )
    # Regions are clipped to the 320x240 frame and centred on their person.
    for person, centre in ((left, 80), (right, 240)):
        region = person.region
        assert region.x + region.width <= 320 and region.y + region.height <= 240
        assert abs(region.x + region.width / 2 - centre) < 40


def saturation(crops: np.ndarray) -> float:
    """Mean spread between colour channels: zero for a grey photo."""
    rgb = crops.astype(np.float32)
    return float((rgb.max(axis=-1) - rgb.min(axis=-1)).mean())


def test_one_person_gets_exactly_the_crops_of_detect(
    face_detector: FaceDetector, one_face: np.ndarray
) -> None:
    (person,) = detect_persons(one_face, face_detector)
    today = face_detector.detect(one_face)
    np.testing.assert_array_equal(person.faces.mask, today.mask)
    np.testing.assert_array_equal(person.faces.crops, today.crops)
    np.testing.assert_array_equal(person.faces.boxes, today.boxes)  # NaN where none, both
    np.testing.assert_array_equal(person.faces.confidence, today.confidence)


def test_a_face_missing_in_a_frame_or_two_stays_one_track(
    face_detector: FaceDetector, one_face: np.ndarray
) -> None:
    frames = one_face.copy()
    frames[[5, 6, 11]] = faceless(3, (320, 240))
    # The detector missing the face in those frames (no shot change given): one track.
    (person,) = find_persons(frames, face_detector.detect_all(frames), face_detector)
    assert not person.faces.mask[[5, 6, 11]].any()
    assert person.faces_found >= T - 4
    # Three frames in a row is more than the tracker waits: the face starts a second track.
    frames[[5, 6, 7]] = faceless(3, (320, 240))
    masks = [track.mask for track in link_tracks(face_detector.detect_all(frames))]
    assert len(masks) == 2 and not masks[0][5:].any() and not masks[1][:8].any()


def test_a_track_ends_at_every_shot_change(
    face_detector: FaceDetector, one_face: np.ndarray
) -> None:
    # Another picture cut in is two shot changes each time: the face's track ends at each.
    frames = one_face.copy()
    frames[[5, 6, 11]] = faceless(3, (320, 240))
    assert detect_cuts(frames) == (5, 7, 11, 12)
    tracks = link_tracks(face_detector.detect_all(frames), cuts=(5, 7, 11, 12))
    assert [np.flatnonzero(track.mask).tolist() for track in tracks] == [
        [0, 1, 2, 3, 4],
        [7, 8, 9, 10],
        [12, 13, 14, 15],
    ]
    persons = detect_persons(frames, face_detector)  # ceil(16 / 4) = 4 frames make a person
    seen = sorted(
        (int(np.argmax(p.faces.mask)), p.opens_segment, p.closes_segment) for p in persons
    )
    assert seen == [(0, True, False), (7, False, False), (12, False, True)]


def test_a_track_in_fewer_than_a_quarter_of_the_frames_is_not_a_person(
    face_detector: FaceDetector, side_by_side: np.ndarray
) -> None:
    # The cameraman shows in 3 of 16 frames (ceil(16 / 4) = 4 are needed), then in 4.
    frames = side_by_side.copy()
    frames[:, :, 160:] = faceless(T, (160, 240))
    frames[9:12, :, 160:] = side_by_side[9:12, :, 160:]
    detections = face_detector.detect_all(frames)
    tracks = link_tracks(detections)
    assert [track.frames_seen for track in tracks] == [T, 3]
    (person,) = find_persons(frames, detections, face_detector)
    assert person.track == tracks[0]
    frames[12, :, 160:] = side_by_side[12, :, 160:]
    assert len(find_persons(frames, face_detector.detect_all(frames), face_detector)) == 2


def test_flow_runs_on_a_persons_region(
    face_detector: FaceDetector, side_by_side: np.ndarray
) -> None:
    _, right = detect_persons(side_by_side, face_detector)
    successors = np.roll(side_by_side, -1, axis=0)
    cut, cut_next = crop_pair(side_by_side, successors, right.region)
    assert cut.shape == (T, right.region.height, right.region.width, 3)
    flow = compute_flow(cut, cut_next)
    assert flow.shape == (T, 112, 112, 2) and np.abs(flow).max() > 0


def test_no_face_no_person(face_detector: FaceDetector) -> None:
    assert detect_persons(faceless(4, (320, 240)), face_detector) == []
    assert detect_persons(np.zeros((0, 240, 320, 3), np.uint8), face_detector) == []


# Synthetic boxes: the geometry and the assignment.


def test_box_iou() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)


def test_match_scores_gate_on_shift_and_size() -> None:
    previous = np.array([[100, 100, 150, 150]])
    current = np.array(
        [
            [100, 100, 150, 150],  # still: IoU 1 + 1
            [140, 100, 190, 150],  # 0.8 face sizes to the right: allowed
            [160, 100, 210, 150],  # 1.2 face sizes: too far
            [110, 110, 130, 130],  # a fifth of the area (side ratio 0.4): too small
        ]
    )
    scores = match_scores(previous, current, max_shift=1.0, min_size_ratio=0.5)[0]
    assert scores[0] == pytest.approx(2.0)
    assert 0 < scores[1] < scores[0]
    assert scores[2] == -np.inf and scores[3] == -np.inf


def test_assign_is_one_to_one_best_first() -> None:
    scores = np.array([[0.9, 0.8, -np.inf], [0.85, 0.1, -np.inf], [-np.inf, -np.inf, -np.inf]])
    assert sorted(assign(scores)) == [(0, 0), (1, 1)]
    assert assign(np.full((2, 2), -np.inf)) == []
    assert assign(np.zeros((0, 3))) == []
    # Ties go to the lower row, then the lower column.
    assert assign(np.ones((2, 2))) == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="2-D"):
        assign(np.zeros(3))


def test_link_tracks_follows_two_faces_and_bridges_gaps() -> None:
    a = [face(10 + 3 * t, 50, 60 + 3 * t, 110) for t in range(8)]
    b = [face(200 - 2 * t, 40, 250 - 2 * t, 100) for t in range(8)]
    frames: list[list[FaceDetection]] = [[b[t], a[t]] for t in range(8)]
    frames[3] = [a[3]]  # b missed for two frames
    frames[4] = [a[4]]
    tracks = link_tracks(frames)
    assert len(tracks) == 2  # in order of first appearance: b is listed first in frame 0
    assert tracks[0].mask.tolist() == [True, True, True, False, False, True, True, True]
    assert tracks[0].detections[7] is b[7]
    assert [d is a[t] for t, d in enumerate(tracks[1].detections)] == [True] * 8


def test_link_tracks_gap_longer_than_max_gap_starts_a_new_track() -> None:
    frames: list[list[FaceDetection]] = [[face(10, 10, 60, 60)] for _ in range(6)]
    frames[1] = frames[2] = []
    assert len(link_tracks(frames, TrackingConfig(max_gap=2))) == 1
    assert len(link_tracks(frames, TrackingConfig(max_gap=1))) == 2


def test_select_persons_keeps_a_quarter_and_orders_them() -> None:
    def track(seen: list[int], x: float, count: int = 8) -> Track:
        return Track(tuple(face(x, 0, x + 40, 50) if t in seen else None for t in range(count)))

    right_full = track(list(range(8)), 200)
    left_full = track(list(range(8)), 20)
    middle_half = track([0, 2, 4, 6], 100)
    short = track([3], 300)  # ceil(8 / 4) = 2 frames needed
    kept = select_persons([short, middle_half, right_full, left_full], num_frames=8)
    assert kept == [left_full, right_full, middle_half]
    assert TrackingConfig().min_frames(16) == 4 and TrackingConfig().min_frames(9) == 3


def test_flow_region_grows_the_median_box_and_clips() -> None:
    boxes = np.array([[100, 100, 140, 150], [102, 100, 142, 150], [100, 98, 140, 150]])
    boxes = np.concatenate([boxes, np.full((1, 4), np.nan)])  # frames without the face
    region = flow_region(boxes, (640, 480))
    # The median box is 100, 100, 140, 150 (40x50): 40 px each side, 30 above, 100 below.
    assert region == Region(x=60, y=70, width=120, height=180)
    growth = RegionGrowth(side=0.5, above=0.0, below=0.0)
    assert flow_region(boxes, (640, 480), growth) == Region(x=80, y=100, width=80, height=50)
    # A stray box among many does not move the median; the frame edge clips.
    boxes = np.array([[5, 5, 45, 55]] * 4 + [[400, 300, 440, 350]])
    assert flow_region(boxes, (320, 240)) == Region(x=0, y=0, width=85, height=155)
    with pytest.raises(ValueError, match="at least one"):
        flow_region(np.full((2, 4), np.nan), (320, 240))


def test_crop_region_and_pair() -> None:
    frames = np.arange(2 * 6 * 8 * 3, dtype=np.uint8).reshape(2, 6, 8, 3)
    region = Region(x=2, y=1, width=4, height=3)
    cut = crop_region(frames, region)
    np.testing.assert_array_equal(cut, frames[:, 1:4, 2:6])
    assert cut.flags.c_contiguous
    first, second = crop_pair(frames, frames[::-1], region)
    np.testing.assert_array_equal(first, cut)
    np.testing.assert_array_equal(second, frames[::-1, 1:4, 2:6])
    assert Region.from_dict(region.as_dict()) == region
    with pytest.raises(ValueError, match="does not fit"):
        crop_region(frames, Region(x=6, y=0, width=4, height=3))
    with pytest.raises(ValueError, match="same shape"):
        crop_pair(frames, frames[:1], region)
    with pytest.raises(ValueError, match="positive size"):
        Region(x=0, y=0, width=0, height=3)
