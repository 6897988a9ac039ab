"""Face detection (MTCNN) and eye-aligned face crops for the static stream.

Detection runs once per clip on all sampled frames together, on copies downscaled to about
``detect_width`` pixels: a talking head fills a good part of the frame, so full resolution only
costs time. Boxes and eye positions are mapped back to the source frames, and crops are cut
from the full-resolution frames so the face CNN sees every available pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from mtcnn import MTCNN

# MTCNN's numpy output: [image, x1, y1, x2, y2, confidence, 5 landmark xs, 5 landmark ys];
# landmarks are ordered left eye, right eye, nose, mouth left, mouth right.
_COL_IMAGE, _COL_BOX, _COL_CONF, _COL_LX, _COL_LY = 0, slice(1, 5), 5, 6, 11

# Smallest face MTCNN looks for, in detection pixels: 20 of 256 is about 8 % of the frame width,
# far smaller than the face of anyone talking to a camera.
_MIN_FACE_PX = 20
# MTCNN's last stage drops faces below this score; a lower ``min_confidence`` lowers it too.
_ONET_THRESHOLD = 0.8


@dataclass(frozen=True)
class FaceCrops:
    """One aligned face crop per sampled frame, with a mask for frames without a face."""

    crops: np.ndarray  # [T, crop, crop, 3] uint8 RGB; zeros where mask is False
    mask: np.ndarray  # [T] bool, True where a face was found
    boxes: np.ndarray  # [T, 4] float32 x, y, w, h in source-frame pixels; NaN where none
    confidence: np.ndarray  # [T] float32; 0 where none

    @property
    def faces_found(self) -> int:
        """How many sampled frames have a face."""
        return int(self.mask.sum())


@dataclass(frozen=True)
class FaceDetection:
    """One face MTCNN found in one frame, in source-frame pixels."""

    box: np.ndarray  # [4] float64 x1, y1, x2, y2
    eyes: np.ndarray  # [2, 2] float64: [x, y] of the left-most eye, then the other
    landmarks: np.ndarray  # [5, 2] float64: left eye, right eye, nose, mouth left, mouth right
    confidence: float


def _detection(row: np.ndarray) -> FaceDetection:
    landmarks = np.stack([row[_COL_LX : _COL_LX + 5], row[_COL_LY : _COL_LY + 5]], axis=1)
    eyes = landmarks[:2][np.argsort(landmarks[:2, 0])]
    return FaceDetection(
        box=row[_COL_BOX].copy(), eyes=eyes, landmarks=landmarks, confidence=float(row[_COL_CONF])
    )


class FaceDetector:
    """Finds the most prominent face (`detect`) or every face (`detect_all`) in each frame,
    and cuts aligned square crops.

    Building the MTCNN networks is the expensive part, so build one detector per process and
    reuse it for every clip.
    """

    def __init__(
        self,
        detect_width: int = 256,
        min_confidence: float = 0.9,
        crop_size: int = 112,
        margin: float = 0.3,
    ) -> None:
        if detect_width < 48:
            raise ValueError(f"detect_width must be at least 48 px, got {detect_width}")
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be in [0, 1], got {min_confidence}")
        if crop_size < 1 or margin < 0:
            raise ValueError(f"need crop_size >= 1 and margin >= 0, got {crop_size}, {margin}")
        from mtcnn import MTCNN  # imported here: it loads TensorFlow, which is slow

        self.detect_width = detect_width
        self.min_confidence = min_confidence
        self.crop_size = crop_size
        self.margin = margin
        self._mtcnn: MTCNN = MTCNN(stages="face_and_landmarks_detection")

    def detect(self, frames: np.ndarray) -> FaceCrops:
        """Detect, pick and align one face per frame, with one batched MTCNN call per clip."""
        frames = _check_frames(frames)
        return self.crop(frames, self._find_faces(frames))

    def detect_all(self, frames: np.ndarray) -> list[list[FaceDetection]]:
        """Every face above ``min_confidence`` in each frame, left to right, in one MTCNN call.

        The persons of a segment are tracked from these (`core.persons.tracks`); `detect` keeps only
        the most prominent one per frame.
        """
        frames = _check_frames(frames)
        return [
            [_detection(row) for row in rows[np.argsort(rows[:, 1], kind="stable")]]
            for rows in self._confident_rows(frames)
        ]

    def crop(self, frames: np.ndarray, faces: Sequence[FaceDetection | None]) -> FaceCrops:
        """Aligned crops of one given face per frame (None: no face), exactly as `detect` cuts.

        A person's track yields one detection or None per sampled frame; its crops then reach
        the face CNN in the same form as the single face of `detect`.
        """
        frames = _check_frames(frames)
        if len(faces) != len(frames):
            raise ValueError(f"need one face or None per frame: {len(faces)} for {len(frames)}")
        count = len(frames)
        crops = np.zeros((count, self.crop_size, self.crop_size, 3), np.uint8)
        mask = np.zeros(count, bool)
        boxes = np.full((count, 4), np.nan, np.float32)
        confidence = np.zeros(count, np.float32)
        for i, face in enumerate(faces):
            if face is None:
                continue
            crops[i] = align_face(frames[i], face.box, face.eyes, self.crop_size, self.margin)
            mask[i] = True
            x1, y1, x2, y2 = face.box
            boxes[i] = (x1, y1, x2 - x1, y2 - y1)
            confidence[i] = face.confidence
        return FaceCrops(crops=crops, mask=mask, boxes=boxes, confidence=confidence)

    def _find_faces(self, frames: np.ndarray) -> list[FaceDetection | None]:
        """Run MTCNN on downscaled copies of all frames at once; keep one face per frame."""
        return [self._pick(rows) for rows in self._frame_rows(frames)]

    def _confident_rows(self, frames: np.ndarray) -> list[np.ndarray]:
        """Each frame's MTCNN rows at or above ``min_confidence``, in source-frame pixels."""
        return [
            rows[rows[:, _COL_CONF] >= self.min_confidence] for rows in self._frame_rows(frames)
        ]

    def _frame_rows(self, frames: np.ndarray) -> list[np.ndarray]:
        """Run MTCNN on downscaled copies of all frames at once; its rows, split per frame."""
        if len(frames) == 0:
            return []
        height, width = frames.shape[1:3]
        scale = min(1.0, self.detect_width / width)
        small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = [
            frame if scale == 1.0 else cv2.resize(frame, small_size, interpolation=cv2.INTER_AREA)
            for frame in frames
        ]
        rows = self._mtcnn.detect_faces(
            small,
            output_type="numpy",
            box_format="xyxy",
            min_face_size=_MIN_FACE_PX,
            threshold_onet=min(_ONET_THRESHOLD, self.min_confidence),
        )
        rows = np.asarray(rows, np.float64).reshape(-1, 16)
        # Map back with the real per-axis factors (sizes were rounded).
        rows = _rescale_rows(rows, width / small_size[0], height / small_size[1])
        return [rows[rows[:, _COL_IMAGE] == i] for i in range(len(frames))]

    def _pick(self, rows: np.ndarray) -> FaceDetection | None:
        """The most prominent face: the largest box, weighted by confidence."""
        rows = rows[rows[:, _COL_CONF] >= self.min_confidence]
        if len(rows) == 0:
            return None
        box = rows[:, _COL_BOX]
        area = np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None)
        return _detection(rows[int(np.argmax(area * rows[:, _COL_CONF]))])


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape [T, H, W, 3], got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames, got dtype {frames.dtype}")
    return frames


def _rescale_rows(rows: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Scale the box corners and landmarks of MTCNN rows by (sx, sy)."""
    rows = rows.copy()
    rows[:, [1, 3]] *= sx
    rows[:, [2, 4]] *= sy
    rows[:, _COL_LX : _COL_LX + 5] *= sx
    rows[:, _COL_LY : _COL_LY + 5] *= sy
    return rows


def alignment_matrix(
    box: np.ndarray, eyes: np.ndarray, crop_size: int, margin: float
) -> np.ndarray:
    """The 2x3 affine map from a frame to its face crop.

    It rotates about the box centre so the eye line becomes horizontal, then scales a square of
    side ``(1 + margin) * max(w, h)`` around that centre to ``crop_size`` pixels.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    center = ((x1 + x2) / 2.0, (y1 + y2) / 2.0)
    (lx, ly), (rx, ry) = eyes
    angle = math.degrees(math.atan2(ry - ly, rx - lx))
    side = max(x2 - x1, y2 - y1, 1.0) * (1.0 + margin)
    matrix = cv2.getRotationMatrix2D(center, angle, crop_size / side)
    matrix[0, 2] += crop_size / 2.0 - center[0]
    matrix[1, 2] += crop_size / 2.0 - center[1]
    return matrix


def align_face(
    frame: np.ndarray, box: np.ndarray, eyes: np.ndarray, crop_size: int, margin: float
) -> np.ndarray:
    """Cut an eye-aligned square crop of ``crop_size`` pixels around a face.

    Large faces are warped at an integer multiple of the crop size and then area-averaged down,
    because bilinear warping alone aliases when shrinking by more than 2x.
    """
    matrix = alignment_matrix(box, eyes, crop_size, margin)
    shrink = 1.0 / math.hypot(matrix[0, 0], matrix[0, 1])
    factor = int(min(4, max(1, math.floor(shrink))))
    size = crop_size * factor
    warped = cv2.warpAffine(
        frame,
        matrix * np.array([[factor], [factor]], np.float64),
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
    if factor == 1:
        return warped
    return cv2.resize(warped, (crop_size, crop_size), interpolation=cv2.INTER_AREA)
