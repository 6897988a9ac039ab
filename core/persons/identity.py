"""Who a person is, as a vector: an identity embedding of a track's best faces.

Continuity links a segment's persons to the previous segment's by where their faces are
(`core.persons.person_links.ContinuityLinker`), which fails at every camera cut and after every
faceless stretch. A face-identity network tells people apart by their faces instead: each
(segment, person) gets one embedding, the L2-normalised mean of its ``best`` faces' descriptors,
and `core.persons.person_links.EmbeddingLinker` compares them by cosine similarity.

The best faces are the surest, largest detections (confidence times face height): the network
sees the face at its clearest, and a handful of frames averages out pose and light. Each face
is cut from the sampled frame as a square of ``FACE_MARGIN`` face heights around the detector's
box, padded with black where it leaves the frame, and resized to the embedder's 224x224.
``FACE_MARGIN`` 1.45 separated the two test identities best of 1.3 to 2.0, though 1.3 to 1.6
were close and wider crops (more hair and background) were clearly worse (docs/backbones.md,
`python -m tests.benchmarks.identity`).

Any embedder fits (`Embedder`: uint8 faces [N, 224, 224, 3] in, descriptors [N, D] out);
`FaceResEmbedder` is the installed FaceRes backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from core.persons.faces import FaceDetection
from core.persons.tracks import Person

CROP_SIZE = 224
# Crop side over the detector's face-box height (brows to chin).
FACE_MARGIN = 1.45
BEST_FACES = 5


class Embedder(Protocol):
    """Identity descriptors of RGB face crops: [N, 224, 224, 3] uint8 in, [N, D] out."""

    def __call__(self, faces: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class FaceResEmbedder:
    """The FaceRes backbone as an `Embedder`: L2-normalised 1024-d descriptors."""

    model: Any
    batch_size: int = 32

    @classmethod
    def load(cls, backbones_folder: Path) -> FaceResEmbedder:
        """FaceRes from ``backbones_folder``; `BackboneMissingError` when it is not installed."""
        from core.backbones.registry import load_backbone

        return cls(model=load_backbone("faceres", backbones_folder))

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        from core.backbones import faceres

        return faceres.embed(self.model, faces, batch_size=self.batch_size)


def best_frames(detections: Sequence[FaceDetection | None], best: int = BEST_FACES) -> list[int]:
    """Indices of up to ``best`` frames with a face, surest and largest first.

    Ranked by confidence times face height; ties go to the earlier frame.
    """
    if best < 1:
        raise ValueError(f"best must be at least 1, got {best}")
    scored = [
        (-detection.confidence * float(detection.box[3] - detection.box[1]), t)
        for t, detection in enumerate(detections)
        if detection is not None
    ]
    return [t for _, t in sorted(scored)[:best]]


def identity_crop(
    frame: np.ndarray, box: np.ndarray, margin: float = FACE_MARGIN, size: int = CROP_SIZE
) -> np.ndarray:
    """A ``size`` x ``size`` RGB crop: a square of ``margin`` face heights centred on ``box``
    (x1, y1, x2, y2), black where it leaves the frame."""
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(round(margin * (y2 - y1)), 1)
    left = round((x1 + x2) / 2 - side / 2)
    top = round((y1 + y2) / 2 - side / 2)
    height, width = frame.shape[:2]
    square = np.zeros((side, side, 3), np.uint8)
    src_x0, src_y0 = max(left, 0), max(top, 0)
    src_x1, src_y1 = min(left + side, width), min(top + side, height)
    if src_x1 > src_x0 and src_y1 > src_y0:
        square[src_y0 - top : src_y1 - top, src_x0 - left : src_x1 - left] = frame[
            src_y0:src_y1, src_x0:src_x1
        ]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(square, (size, size), interpolation=interpolation)


def identity_crops(
    frames: np.ndarray,
    detections: Sequence[FaceDetection | None],
    *,
    best: int = BEST_FACES,
    margin: float = FACE_MARGIN,
) -> np.ndarray:
    """The crops [K, 224, 224, 3] of a track's ``best`` faces, cut from its sampled frames."""
    frames = np.asarray(frames)
    if len(detections) != len(frames):
        raise ValueError(f"need a detection slot per frame: {len(detections)} for {len(frames)}")
    picked = best_frames(detections, best)
    if not picked:
        raise ValueError("a track without a face frame has no identity")
    return np.stack(
        [identity_crop(frames[t], detections[t].box, margin) for t in picked]  # type: ignore[union-attr]
    )


def identity_embedding(
    person_or_faces: Person | np.ndarray,
    embedder: Embedder,
    *,
    frames: np.ndarray | None = None,
    best: int = BEST_FACES,
    margin: float = FACE_MARGIN,
) -> np.ndarray:
    """The identity embedding [D] of a person: its best faces embedded, averaged, normalised.

    Given a `Person`, its ``best`` faces are cut from ``frames`` (the segment's sampled
    frames it was detected in); given face crops [N, 224, 224, 3], all of them are used.
    """
    if isinstance(person_or_faces, Person):
        if frames is None:
            raise ValueError("a Person's identity needs the sampled frames it was found in")
        faces = identity_crops(frames, person_or_faces.track.detections, best=best, margin=margin)
    else:
        faces = np.asarray(person_or_faces)
        if faces.ndim != 4 or len(faces) == 0:
            raise ValueError(f"expected face crops [N, H, W, 3] with N > 0, got {faces.shape}")
    return mean_direction(np.asarray(embedder(faces), np.float64))


def mean_direction(vectors: np.ndarray) -> np.ndarray:
    """The L2-normalised mean of the L2-normalised rows of ``vectors`` [N, D]."""
    vectors = np.asarray(vectors, np.float64)
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(axis=0)
    return mean / max(float(np.linalg.norm(mean)), 1e-12)
