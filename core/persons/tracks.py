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
clipped to the frame (`core.persons.regions`).

A track never crosses a shot change: given the samples that begin a new shot (`core.persons.shots`),
every open track ends there, since after a hard cut the next face often sits where the last one
was and would otherwise be taken for it. With identity descriptors of every detection (one per
face, from a face-identity network), a detection also continues a track only when it looks like
that track's face (cosine similarity to the track's mean descriptor at least
``same_face``): a face that changes identity without a detected cut starts a new track, so a
person of a segment is one identity. Tracks of one identity on either side of a cut are then
joined again (`rejoin_tracks`: mean descriptors at least ``IDENTITY_THRESHOLD`` alike). Without
descriptors nothing joins them: two tracks of one person are an honest split, one track of two
people would mix their scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from core.persons.faces import FaceCrops, FaceDetection, FaceDetector
from core.persons.regions import Region, RegionGrowth, flow_region
from core.persons.shots import detect_cuts, shot_of_frames

# A track seen in at least this fraction of a segment's sampled frames is a person.
MIN_TRACK_FRACTION = 0.25
# Cosine similarity of two tracks' mean identity descriptors (FaceRes, `core.persons.identity`)
# at or above which they are one person: midway in the gap between the same-person and
# different-person similarities measured by `python -m tests.benchmarks.identity`
# (docs/backbones.md, "Identity across segments").
IDENTITY_THRESHOLD = 0.67
# Cosine similarity of one face's descriptor to a track's mean at or above which the face may
# continue the track: midway between one face against its own track (min 0.913) and against
# the other person's tracks (max 0.443), measured by `python -m tests.benchmarks.shots
# --backbones DIR` (docs/backbones.md, "Shot changes").
SAME_FACE_THRESHOLD = 0.67


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
    same_face: float = SAME_FACE_THRESHOLD
    same_person: float = IDENTITY_THRESHOLD

    def __post_init__(self) -> None:
        if self.max_shift <= 0 or not 0 < self.min_size_ratio <= 1:
            raise ValueError(
                f"need max_shift > 0 and min_size_ratio in (0, 1], got {self.max_shift}, "
                f"{self.min_size_ratio}"
            )
        if not (-1 <= self.same_face <= 1 and -1 <= self.same_person <= 1):
            raise ValueError(
                f"same_face and same_person are cosine similarities in [-1, 1], got "
                f"{self.same_face}, {self.same_person}"
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
    """One face followed through a segment: a detection or None per sampled frame, and each
    detection's identity descriptor when a face-identity network gave one."""

    detections: tuple[FaceDetection | None, ...]
    descriptors: tuple[np.ndarray | None, ...] | None = None

    @property
    def identity(self) -> np.ndarray | None:
        """The L2-normalised mean of the track's descriptors, or None without them."""
        if self.descriptors is None:
            return None
        found = [d for d in self.descriptors if d is not None]
        return _mean_direction(found) if found else None

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
    # Whether the person is seen in the segment's first shot and in its last: only then may
    # position alone link it to the segment before, or after (`core.persons.person_links`).
    opens_segment: bool = True
    closes_segment: bool = True

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
    detections: Sequence[Sequence[FaceDetection]],
    config: TrackingConfig | None = None,
    *,
    cuts: Sequence[int] = (),
    descriptors: Sequence[np.ndarray | None] | None = None,
) -> list[Track]:
    """Link each frame's detections to the tracks they continue, in order of first appearance.

    A track is compared by its last seen box, and stays open for ``max_gap`` frames without a
    detection, but not past a cut (``cuts``: the samples that begin a new shot). With
    ``descriptors`` (per frame, [faces, D] in the order of its detections) a detection only
    continues a track whose mean descriptor it matches (``config.same_face``). A detection that
    continues no open track starts a new one.
    """
    config = config or TrackingConfig()
    count = len(detections)
    if descriptors is not None and len(descriptors) != count:
        raise ValueError(f"need descriptors for every frame: {len(descriptors)} for {count}")
    cut_set = set(cuts)
    tracks: list[list[FaceDetection | None]] = []
    track_descriptors: list[list[np.ndarray | None]] = []
    last: list[tuple[int, FaceDetection]] = []  # per track: the frame and face last seen
    shot_start = 0
    for t, found in enumerate(detections):
        if t in cut_set:
            shot_start = t
        open_tracks = [
            k
            for k, (seen, _) in enumerate(last)
            if t - seen <= config.max_gap + 1 and seen >= shot_start
        ]
        previous = np.array([last[k][1].box for k in open_tracks])
        current = np.array([face.box for face in found])
        scores = match_scores(previous, current, config.max_shift, config.min_size_ratio)
        frame_descriptors = None if descriptors is None else descriptors[t]
        if frame_descriptors is not None and len(found):
            scores = _gate_by_identity(
                scores,
                [track_descriptors[k] for k in open_tracks],
                np.asarray(frame_descriptors, np.float64),
                config.same_face,
            )
        matched: set[int] = set()
        for row, col in assign(scores):
            tracks[open_tracks[row]][t] = found[col]
            track_descriptors[open_tracks[row]][t] = _row(frame_descriptors, col)
            last[open_tracks[row]] = (t, found[col])
            matched.add(col)
        for col, face in enumerate(found):
            if col not in matched:
                tracks.append([None] * count)
                track_descriptors.append([None] * count)
                tracks[-1][t] = face
                track_descriptors[-1][t] = _row(frame_descriptors, col)
                last.append((t, face))
    return [
        Track(
            detections=tuple(track),
            descriptors=None if descriptors is None else tuple(described),
        )
        for track, described in zip(tracks, track_descriptors, strict=True)
    ]


def _row(descriptors: np.ndarray | None, index: int) -> np.ndarray | None:
    return None if descriptors is None else np.asarray(descriptors[index], np.float64)


def _gate_by_identity(
    scores: np.ndarray,
    tracks: Sequence[Sequence[np.ndarray | None]],
    current: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """``scores`` with -inf where a detection's descriptor is unlike the track's mean."""
    scores = scores.copy()
    for row, described in enumerate(tracks):
        seen = [d for d in described if d is not None]
        if not seen:
            continue
        mean = _mean_direction(seen)
        unit = current / np.maximum(np.linalg.norm(current, axis=1, keepdims=True), 1e-12)
        scores[row, unit @ mean < threshold] = -np.inf
    return scores


def _mean_direction(vectors: Sequence[np.ndarray]) -> np.ndarray:
    stacked = np.asarray(vectors, np.float64)
    unit = stacked / np.maximum(np.linalg.norm(stacked, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(axis=0)
    return np.asarray(mean / max(float(np.linalg.norm(mean)), 1e-12))


def rejoin_tracks(tracks: Sequence[Track], threshold: float = IDENTITY_THRESHOLD) -> list[Track]:
    """Tracks never seen in the same frame whose mean descriptors agree (cosine at least
    ``threshold``), joined into one: the same person on either side of a cut.

    The most similar pair is joined first, then again with the joined track's mean, until no
    pair is alike; tracks without descriptors are left as they are. The joined track keeps the
    place of the one seen first.
    """
    joined = list(tracks)
    while True:
        best: tuple[float, int, int] | None = None
        for i, a in enumerate(joined):
            for j in range(i + 1, len(joined)):
                b = joined[j]
                ida, idb = a.identity, b.identity
                if ida is None or idb is None or (a.mask & b.mask).any():
                    continue
                similarity = float(ida @ idb)
                if similarity >= threshold and (best is None or similarity > best[0]):
                    best = (similarity, i, j)
        if best is None:
            return joined
        _, i, j = best
        a, b = joined[i], joined[j]
        assert a.descriptors is not None and b.descriptors is not None
        joined[i] = Track(
            detections=tuple(
                x if x is not None else y for x, y in zip(a.detections, b.detections, strict=True)
            ),
            descriptors=tuple(
                x if x is not None else y for x, y in zip(a.descriptors, b.descriptors, strict=True)
            ),
        )
        del joined[j]


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
    *,
    cuts: Sequence[int] = (),
    descriptors: Sequence[np.ndarray | None] | None = None,
) -> list[Person]:
    """The persons of a segment from its frames, every face found in them, the samples that
    begin a new shot (``cuts``) and, when a face-identity network is installed, each
    detection's descriptor (rejoining one person's tracks across cuts)."""
    config = config or TrackingConfig()
    frames = np.asarray(frames)
    if len(detections) != len(frames):
        raise ValueError(f"need detections for every frame: {len(detections)} for {len(frames)}")
    frame_size = (int(frames.shape[2]), int(frames.shape[1]))
    linked = link_tracks(detections, config, cuts=cuts, descriptors=descriptors)
    if descriptors is not None:
        linked = rejoin_tracks(linked, config.same_person)
    tracks = select_persons(linked, len(frames), config)
    shots = shot_of_frames(len(frames), cuts)
    persons = []
    for track in tracks:
        seen = np.flatnonzero(track.mask)
        persons.append(
            Person(
                track=track,
                faces=detector.crop(frames, track.detections),
                region=flow_region(track.boxes, frame_size, config.growth),
                opens_segment=bool(shots[seen[0]] == 0),
                closes_segment=bool(shots[seen[-1]] == shots[-1]),
            )
        )
    return persons


def detect_persons(
    frames: np.ndarray, detector: FaceDetector, config: TrackingConfig | None = None
) -> list[Person]:
    """Every person of a segment's sampled frames [T, H, W, 3], with one batched detection,
    tracks ended at the shot changes found in the frames (`core.persons.shots`)."""
    return find_persons(
        frames, detector.detect_all(frames), detector, config, cuts=detect_cuts(frames)
    )
