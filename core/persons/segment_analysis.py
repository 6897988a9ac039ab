"""One segment's features, person by person: what the faces and flow stages compute.

A segment's sampled frames hold zero or more persons (`core.persons.tracks`). Each person gets its
own static tokens and face mask (the face CNN over that person's crops), and its own dynamic
tokens: optical flow over that person's region (`core.persons.regions`) when the bundle was trained
that way (`flow_region: "person"`), or one flow over the whole frame shared by every person
(`"frame"`, every bundle made before persons existed). Stored per segment as arrays with a
leading person axis: static tokens [P, T, static_dim], masks [P, T], dynamic tokens
[P, T, dynamic_dim] (or [1, T, dynamic_dim] for a whole-frame bundle).

Persons never span a shot change unless identity joins them (`core.persons.shots`,
`core.persons.tracks`). With a face-identity network (``embed``), every detected face is
described once, in one batch: the descriptors keep each track to one identity, join one
person's tracks across cuts, and give each person its identity embedding (the mean of its best
faces' descriptors, `core.persons.identity`).

For a segment with one person and a whole-frame bundle, the tokens are exactly those of
`extract_static` and `extract_dynamic` (below): the person's crops are the ones
`FaceDetector.detect` cuts, and the flow is the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import NoFaceError
from core.persons.identity import best_frames, identity_crop, mean_direction
from core.persons.regions import Region, crop_pair
from core.persons.shots import detect_cuts
from core.persons.tracks import Person, TrackingConfig, find_persons
from core.storage.artifacts import MAX_PERSONS as MAX_STORED_PERSONS
from core.timing import Timer

if TYPE_CHECKING:
    from core.bundles.bundle import ModelBundle
    from core.persons.faces import FaceDetection, FaceDetector
    from core.persons.person_links import PersonLinker


#: The most persons a segment is scored for: those with most face frames (`core.persons.tracks`).
MAX_PERSONS = MAX_STORED_PERSONS


@dataclass(frozen=True)
class PersonFeatures:
    """One person of a segment: where they were seen, and their static tokens."""

    person: Person
    static: StaticFeatures
    # The identity embedding (`core.persons.identity`), when an identity backbone is installed.
    embedding: np.ndarray | None = None
    # The samples of the segment that begin a new shot (`core.persons.shots.detect_cuts`).
    cuts: tuple[int, ...] = ()


def faces_seen(persons: Sequence[PersonFeatures], num_frames: int) -> int:
    """Sampled frames in which some person's face was seen (one person: their face frames)."""
    seen = np.zeros(num_frames, bool)
    for person in persons:
        seen |= person.static.mask
    return int(seen.sum())


def extract_persons(
    frames: np.ndarray,
    detector: FaceDetector,
    bundle: ModelBundle,
    timings: dict[str, float] | None = None,
    *,
    tracking: TrackingConfig | None = None,
    embed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[PersonFeatures]:
    """Every person of a segment's sampled frames, with their face tokens and mask.

    One batched detection, the shot changes between the frames, tracks linked across the
    frames within each shot, then one face-CNN call over every person's crops. ``embed``, when
    given, is a face-identity network (`core.persons.identity.Embedder`: crops [N, 224, 224, 3] in,
    descriptors [N, D] out), called once on every face found.
    Raises `NoFaceError` when no face was found, or none was seen often enough to be a person.
    """
    timer = Timer(timings if timings is not None else {})
    tracking = tracking or TrackingConfig()
    with timer("faces"):
        detections = detector.detect_all(frames)
    found = sum(1 for faces in detections if faces)
    if found == 0:
        raise NoFaceError(f"no face found in any of the {len(frames)} sampled frames")
    with timer("shots"):
        cuts = detect_cuts(frames)
    descriptors = None
    if embed is not None:
        with timer("identity"):
            descriptors = describe_faces(frames, detections, embed)
    with timer("faces"):
        persons = find_persons(
            frames, detections, detector, tracking, cuts=cuts, descriptors=descriptors
        )[:MAX_PERSONS]
    if not persons:
        raise NoFaceError(
            f"faces were found in {found} of the {len(frames)} sampled frames, but no face "
            f"was seen in at least {tracking.min_frames(len(frames))} of them"
        )
    with timer("face_cnn"):
        static = _encode_faces(persons, bundle)
    return [
        PersonFeatures(person, features, person_embedding(person), cuts)
        for person, features in zip(persons, static, strict=True)
    ]


def describe_faces(
    frames: np.ndarray,
    detections: Sequence[Sequence[FaceDetection]],
    embed: Callable[[np.ndarray], np.ndarray],
) -> list[np.ndarray | None]:
    """Each frame's identity descriptors [faces, D] (None for a frame without a face), from
    one ``embed`` call over every face's identity crop (`core.persons.identity.identity_crop`)."""
    crops = [
        identity_crop(frames[t], face.box) for t, faces in enumerate(detections) for face in faces
    ]
    if not crops:
        return [None] * len(detections)
    described = np.asarray(embed(np.stack(crops)), np.float64)
    out: list[np.ndarray | None] = []
    start = 0
    for faces in detections:
        out.append(described[start : start + len(faces)] if faces else None)
        start += len(faces)
    return out


def person_embedding(person: Person) -> np.ndarray | None:
    """The mean of the descriptors of the person's best faces.

    The best faces are `core.persons.identity.best_frames`.
    """
    descriptors = person.track.descriptors
    if descriptors is None:
        return None
    picked = [descriptors[t] for t in best_frames(person.track.detections)]
    return mean_direction(np.stack([d for d in picked if d is not None]))


def _encode_faces(persons: Sequence[Person], bundle: ModelBundle) -> list[StaticFeatures]:
    """The face CNN over every person's face crops in one call, split back per person."""
    crops = np.concatenate([p.faces.crops[p.faces.mask] for p in persons])
    encoded = bundle.encode_faces(crops)
    features, start = [], 0
    for person in persons:
        mask = person.faces.mask.copy()
        tokens = np.zeros((len(mask), bundle.metadata.static_dim), dtype=np.float32)
        # Only frames with this person's face are encoded: a zero crop would look like data.
        tokens[mask] = encoded[start : start + int(mask.sum())]
        start += int(mask.sum())
        features.append(StaticFeatures(tokens=tokens, mask=mask))
    return features


def extract_person_dynamic(
    frames: np.ndarray,
    successors: np.ndarray,
    regions: Sequence[Region] | None,
    bundle: ModelBundle,
    method: str = "dis",
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Dynamic tokens per person [P, T, D], or [1, T, D] over the whole frame (`regions` None).

    Each region's flow is computed on the frames cut to it, then all are encoded in one call.
    """
    from core.video.flow import compute_flow

    timer = Timer(timings if timings is not None else {})
    size = bundle.metadata.flow_size
    with timer("flow"):
        if regions is None:
            flows = [compute_flow(frames, successors, method=method, size=size)]
        else:
            if not regions:
                raise ValueError("person flow needs at least one region")
            flows = [
                compute_flow(*crop_pair(frames, successors, region), method=method, size=size)
                for region in regions
            ]
    with timer("flow_cnn"):
        encoded = np.asarray(bundle.encode_flow(np.concatenate(flows)), dtype=np.float32)
    return encoded.reshape(len(flows), len(frames), -1)


def stack_static(persons: Sequence[PersonFeatures]) -> dict[str, np.ndarray]:
    """The arrays a segment's static archive holds: tokens [P, T, D] and masks [P, T]."""
    return {
        "tokens": np.stack([p.static.tokens for p in persons]),
        "mask": np.stack([p.static.mask for p in persons]),
    }


def person_rows(
    static_tokens: np.ndarray, masks: np.ndarray, dynamic: np.ndarray
) -> list[tuple[StaticFeatures, np.ndarray]]:
    """Each person's (static features, dynamic tokens) from a segment's stored arrays.

    A whole-frame dynamic array [1, T, D] is shared by every person.
    """
    count = len(static_tokens)
    if len(masks) != count or len(dynamic) not in (1, count):
        raise ValueError(
            f"a segment's arrays disagree on its persons: {static_tokens.shape}, {masks.shape} "
            f"and {dynamic.shape}"
        )
    return [
        (
            StaticFeatures(tokens=static_tokens[i], mask=masks[i].astype(bool)),
            dynamic[0 if len(dynamic) == 1 else i],
        )
        for i in range(count)
    ]


class IdentityEmbed:
    """FaceRes as an `core.persons.identity.Embedder`, loaded on first use (`ctx.embed`)."""

    def __init__(self, backbones_folder: Path) -> None:
        self.folder = backbones_folder
        self._embedder: Any = None

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        from core.persons.identity import FaceResEmbedder

        if self._embedder is None:
            self._embedder = FaceResEmbedder.load(self.folder)
        return np.asarray(self._embedder(faces))


def identity_for(backbones_folder: Path) -> tuple[PersonLinker, IdentityEmbed | None]:
    """How persons are linked across segments, and embedded for it, with what is installed.

    With FaceRes installed: by identity embedding, across cuts; else by position only
    (`POSITION_ONLY` says so), never across a shot change.
    """
    from core.persons.person_links import EmbeddingLinker, linker_for

    linker = linker_for(backbones_folder)
    if isinstance(linker, EmbeddingLinker):
        return linker, IdentityEmbed(backbones_folder)
    return linker, None


#: What a run says once when no face-identity network is installed.
POSITION_ONLY = (
    "persons are linked by position only (no face-identity network installed; run "
    "`oceanstream backbones install faceres` to link them by face): a person seen again "
    "after a shot change counts as a new person"
)


@dataclass(frozen=True)
class StaticFeatures:
    """Face tokens per sampled frame; `mask` is False where no face was found."""

    tokens: np.ndarray  # [T, static_dim] float32
    mask: np.ndarray  # [T] bool

    @property
    def faces_found(self) -> int:
        return int(self.mask.sum())


def extract_static(
    frames: np.ndarray,
    detector: FaceDetector,
    bundle: ModelBundle,
    timings: dict[str, float] | None = None,
) -> StaticFeatures:
    """Detect, align and encode faces; raises `NoFaceError` when no frame has one."""
    timer = Timer(timings if timings is not None else {})
    with timer("faces"):
        faces = detector.detect(frames)
    if faces.faces_found == 0:
        raise NoFaceError(f"no face found in any of the {len(frames)} sampled frames")
    with timer("face_cnn"):
        tokens = np.zeros((len(frames), bundle.metadata.static_dim), dtype=np.float32)
        # Only frames with a face are encoded: a zero crop would look like data.
        tokens[faces.mask] = bundle.encode_faces(faces.crops[faces.mask])
    return StaticFeatures(tokens=tokens, mask=faces.mask.copy())


def extract_dynamic(
    frames: np.ndarray,
    successors: np.ndarray,
    bundle: ModelBundle,
    method: str = "dis",
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """Optical flow from each frame to its successor, encoded to dynamic tokens [T, D]."""
    from core.video.flow import compute_flow

    timer = Timer(timings if timings is not None else {})
    with timer("flow"):
        flow = compute_flow(frames, successors, method=method, size=bundle.metadata.flow_size)
    with timer("flow_cnn"):
        return np.asarray(bundle.encode_flow(flow), dtype=np.float32)
