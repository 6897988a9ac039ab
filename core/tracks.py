"""The persons of one segment: face detections linked into tracks, and each track's crops and
flow region.

A segment samples T frames about a second apart. Every face found in them (`FaceDetector.
detect_all`) is linked frame by frame to the track whose last box it continues: close in
position (centre shift within ``max_shift`` face sizes) and in size, scored by box overlap and
centre distance, one detection per track per frame (`assign`). A track may miss ``max_gap``
sampled frames and go on: detectors blink on a turned head or a hand over the mouth. A track
seen in at least a quarter of the frames (``ceil(T / 4)``) is a person: shorter ones are
passers-by, false detections, or people who only enter at the end, too little for a score.

Each person gets what one face gets today (aligned crops [T, 112, 112, 3] and a mask [T], cut by
the same `FaceDetector.crop`), so for a one-person clip they are exactly `FaceDetector.detect`'s,
and a flow region: its median face box over the segment grown to cover head and shoulders and
clipped to the frame (`core.regions`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.faces import FaceCrops, FaceDetection, FaceDetector
from core.regions import Region, RegionGrowth, flow_region

# A track seen in at least this fraction of a segment's sampled frames is a person.
MIN_TRACK_FRACTION = 0.25


@dataclass(frozen=True)
class TrackingConfig:
    """Thresholds of the tracker.

    Sampled frames are about a second apart, so a talking head moves a good fraction of its
    face between them: a detection continues a track when its centre moved at most
    ``max_shift`` face sizes (the geometric mean of width and height of the larger box) and
    its box area changed by less than a factor ``1 / min_size_ratio ** 2``. Two people side
    by side sit more than a face size apart, and the one-to-one assignment keeps closer pairs
    apart too.
    """

    max_shift: float = 1.0
    min_size_ratio: float = 0.5
    max_gap: int = 2
    min_fraction: float = MIN_TRACK_FRACTION
    growth: RegionGrowth = field(default_factory=RegionGrowth)

    def __post_init__(self) -> None:
        if self.max_shift <= 0 or not 0 < self.min_size_ratio <= 1:
            raise ValueError(
                f"need max_shift > 0 and min_size_ratio in (0, 1], got {self.max_shift}, "
                f"{self.min_size_ratio}"
            )
        if self.max_gap < 0 or not 0 < self.min_fraction <= 1:
            raise ValueError(
                f"need max_gap >= 0 and min_fraction in (0, 1], got {self.max_gap}, "
                f"{self.min_fraction}"
            )

    def min_frames(self, num_frames: int) -> int:
        """Frames a track needs to be a person: ``ceil(T / 4)`` by default, at least one."""
        return max(1, math.ceil(num_frames * self.min_fraction))


@dataclass(frozen=True)
class Track:
    """One face followed through a segment: a detection or None per sampled frame."""

    detections: tuple[FaceDetection | None, ...]

    @property
    def mask(self) -> np.ndarray:
        """[T] bool, True where the face was seen."""
        return np.array([d is not None for d in self.detections], bool)

    @property
    def frames_seen(self) -> int:
        return int(self.mask.sum())

    @property
    def boxes(self) -> np.ndarray:
        """[T, 4] float64 x1, y1, x2, y2; NaN where the face was not seen."""
        boxes = np.full((len(self.detections), 4), np.nan)
        for i, detection in enumerate(self.detections):
            if detection is not None:
                boxes[i] = detection.box
        return boxes


@dataclass(frozen=True)
class Person:
    """A track long enough to score: its face crops and the region its flow is computed on."""

    track: Track
    faces: FaceCrops  # as `FaceDetector.detect` gives: crops [T, c, c, 3], mask [T], ...
    region: Region

    @property
    def faces_found(self) -> int:
        return self.faces.faces_found


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box in ``a`` [N, 4] with every box in ``b`` [M, 4]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def match_scores(
    previous: np.ndarray, current: np.ndarray, max_shift: float, min_size_ratio: float
) -> np.ndarray:
    """How well each box of ``current`` [M, 4] continues each of ``previous`` [N, 4].

    The score is IoU plus ``1 - shift / max_shift``, in [0, 2]; pairs whose centres moved more
    than ``max_shift`` face sizes, or whose sizes differ by more than ``min_size_ratio``, get
    -inf (never matched). Boxes are x1, y1, x2, y2.
    """
    previous = np.asarray(previous, np.float64).reshape(-1, 4)
    current = np.asarray(current, np.float64).reshape(-1, 4)
    side_prev, side_cur = np.sqrt(_area(previous)), np.sqrt(_area(current))
    larger = np.maximum(side_prev[:, None], side_cur[None, :])
    smaller = np.minimum(side_prev[:, None], side_cur[None, :])
    centre_prev = (previous[:, :2] + previous[:, 2:]) / 2
    centre_cur = (current[:, :2] + current[:, 2:]) / 2
    distance = np.linalg.norm(centre_prev[:, None, :] - centre_cur[None, :, :], axis=2)
    safe = np.where(larger > 0, larger, 1.0)
    shift = distance / safe
    scores = box_iou(previous, current) + 1.0 - shift / max_shift
    allowed = (larger > 0) & (shift <= max_shift) & (smaller >= min_size_ratio * larger)
    return np.where(allowed, scores, -np.inf)


def assign(scores: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs, greedily by best score; -inf pairs are never taken.

    The best pair is taken first, then the best among the rows and columns left, and so on;
    ties go to the lower row, then the lower column, so the result is deterministic. With the
    few faces of a frame and a gate that only admits nearby boxes this is the optimal
    assignment in all but contrived crossings, at a fraction of the Hungarian method's code.
    """
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2:
        raise ValueError(f"expected a 2-D score matrix, got shape {scores.shape}")
    order = np.argsort(-scores, axis=None, kind="stable")
    rows_used: set[int] = set()
    cols_used: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for flat in order:
        row, col = divmod(int(flat), scores.shape[1])
        if not np.isfinite(scores[row, col]):
            break  # sorted: every pair left is forbidden too
        if row in rows_used or col in cols_used:
            continue
        pairs.append((row, col))
        rows_used.add(row)
        cols_used.add(col)
    return pairs


def link_tracks(
    detections: Sequence[Sequence[FaceDetection]], config: TrackingConfig | None = None
) -> list[Track]:
    """Link each frame's detections to the tracks they continue, in order of first appearance.

    A track is compared by its last seen box, and stays open for ``max_gap`` frames without a
    detection; a detection that continues no open track starts a new one.
    """
    config = config or TrackingConfig()
    count = len(detections)
    tracks: list[list[FaceDetection | None]] = []
    last: list[tuple[int, FaceDetection]] = []  # per track: the frame and face last seen
    for t, found in enumerate(detections):
        open_tracks = [k for k, (seen, _) in enumerate(last) if t - seen <= config.max_gap + 1]
        previous = np.array([last[k][1].box for k in open_tracks])
        current = np.array([face.box for face in found])
        scores = match_scores(previous, current, config.max_shift, config.min_size_ratio)
        matched: set[int] = set()
        for row, col in assign(scores):
            tracks[open_tracks[row]][t] = found[col]
            last[open_tracks[row]] = (t, found[col])
            matched.add(col)
        for col, face in enumerate(found):
            if col not in matched:
                tracks.append([None] * count)
                tracks[-1][t] = face
                last.append((t, face))
    return [Track(detections=tuple(track)) for track in tracks]


def select_persons(
    tracks: Sequence[Track], num_frames: int, config: TrackingConfig | None = None
) -> list[Track]:
    """The tracks seen in at least ``config.min_frames(T)`` frames, in the persons' order.

    Most face frames first, then left to right by median box centre, then by first frame:
    the first person is the one a single-face reading would have picked most often.
    """
    config = config or TrackingConfig()
    needed = config.min_frames(num_frames)
    kept = [track for track in tracks if track.frames_seen >= needed]

    def key(track: Track) -> tuple[int, float, int]:
        boxes = track.boxes[track.mask]
        centre_x = float(np.median((boxes[:, 0] + boxes[:, 2]) / 2))
        return (-track.frames_seen, centre_x, int(np.argmax(track.mask)))

    return sorted(kept, key=key)


def find_persons(
    frames: np.ndarray,
    detections: Sequence[Sequence[FaceDetection]],
    detector: FaceDetector,
    config: TrackingConfig | None = None,
) -> list[Person]:
    """The persons of a segment from its frames and every face found in them."""
    config = config or TrackingConfig()
    frames = np.asarray(frames)
    if len(detections) != len(frames):
        raise ValueError(f"need detections for every frame: {len(detections)} for {len(frames)}")
    frame_size = (int(frames.shape[2]), int(frames.shape[1]))
    tracks = select_persons(link_tracks(detections, config), len(frames), config)
    return [
        Person(
            track=track,
            faces=detector.crop(frames, track.detections),
            region=flow_region(track.boxes, frame_size, config.growth),
        )
        for track in tracks
    ]


def detect_persons(
    frames: np.ndarray, detector: FaceDetector, config: TrackingConfig | None = None
) -> list[Person]:
    """Every person of a segment's sampled frames [T, H, W, 3], with one batched detection."""
    return find_persons(frames, detector.detect_all(frames), detector, config)
