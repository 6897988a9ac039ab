"""Generated clips with two people: side by side, and in turn in an edit of shots.

Two real faces that packages ship: the astronaut (``skimage.data.astronaut()``, animated by
``tests.clips.talking_head_frames``) and the cameraman (``skimage.data.camera()``, a grayscale
photo of another person, animated here the same way). They are different people, so a later
identity linker can tell them apart too. Every clip is deterministic for a given ``seed`` and
written to disk, so tests decode it like a real upload.

* ``side_by_side_frames``: the two heads in the left and right halves of the frame.
* ``edit_frames``: the astronaut on the left, a cut to the cameraman on the right, a faceless
  stretch (``skimage.data.coffee()``), the astronaut again; ``EDIT_SHOTS`` gives the timing.
* ``cut_edit_frames``: the two in turn in the same framing and place, a frame per second of
  motion, cut at ``CUT_EDIT_CUTS`` (inside each segment of 16 frames, at offsets 5, 8, 11).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from core.video.probe import plan_sample_indices
from tests import clips
from tests.clips import Size

# Centre and height of the cameraman's face in the 512x512 photo (an MTCNN box).
_CAMERAMAN_CENTER = (226.6, 156.9)
_CAMERAMAN_HEIGHT = 81.3
_FACE_FRACTION = 0.45  # of the frame height at zoom 1, as in tests.clips

# The edit: (who, seconds) in order; "astronaut", "cameraman" or None (no face).
EDIT_SHOTS: tuple[tuple[str | None, float], ...] = (
    ("astronaut", 2.0),
    ("cameraman", 2.0),
    (None, 1.0),
    ("astronaut", 2.0),
)
# The same-framing edit: (who, frames), each frame a second of motion after the one before.
CUT_EDIT_SHOTS: tuple[tuple[str, int], ...] = (
    ("astronaut", 5),
    ("cameraman", 19),
    ("astronaut", 19),
    ("cameraman", 5),
)
CUT_EDIT_CUTS = (5, 24, 43)
# Where each person rests in the edit, as a fraction of the frame width from the centre.
EDIT_OFFSETS = {"astronaut": -0.2, "cameraman": 0.2}


@cache
def _cameraman() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(np.repeat(data.camera()[:, :, None], 3, axis=2))


def cameraman_frames(
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    seed: int = 0,
    motion: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Iterator[np.ndarray]:
    """Yield RGB frames of the cameraman's face, moving as ``clips.talking_head_frames`` does.

    The same sway, lean, tilt and light changes (scaled by ``motion``); ``offset`` moves the
    face's resting place by fractions of the frame width and height.
    """
    width, height = size
    source = _cameraman()
    base_scale = _FACE_FRACTION * height / _CAMERAMAN_HEIGHT
    ph = clips._phases(seed, 6)
    noise = clips._SensorNoise(size, seed + 1)
    cx, cy = _CAMERAMAN_CENTER
    for i in range(clips._num_frames(seconds, fps)):
        t = i / fps
        zoom = 1.0 + 0.08 * motion * math.sin(2 * math.pi * 0.3 * t + ph[0])
        angle = 6.0 * motion * math.sin(2 * math.pi * 0.4 * t + ph[1])
        shift_x = 0.04 * width * motion * math.sin(2 * math.pi * 0.5 * t + ph[2])
        shift_y = 0.03 * height * motion * math.sin(2 * math.pi * 0.7 * t + ph[3])
        matrix = cv2.getRotationMatrix2D(_CAMERAMAN_CENTER, angle, base_scale * zoom)
        matrix[0, 2] += width * (0.5 + offset[0]) + shift_x - cx
        matrix[1, 2] += height * (0.5 + offset[1]) + shift_y - cy
        gain = 1.0 + 0.15 * motion * math.sin(2 * math.pi * 0.6 * t + ph[4])
        side = 0.12 * motion * math.sin(2 * math.pi * 0.25 * t + ph[5])
        yield noise(clips._warp(clips._relight(source, gain, side), matrix, size))


def side_by_side_frames(
    *, seconds: float = 2.0, fps: float = 15, size: Size = (320, 240), seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield frames with the astronaut in the left half and the cameraman in the right half."""
    width, height = size
    if width % 2:
        raise ValueError(f"side by side needs an even width, got {width}")
    half = (width // 2, height)
    left = clips.talking_head_frames(seconds=seconds, fps=fps, size=half, seed=seed)
    right = cameraman_frames(seconds=seconds, fps=fps, size=half, seed=seed + 7)
    for a, b in zip(left, right, strict=True):
        yield np.concatenate([a, b], axis=1)


def edit_frames(*, fps: float = 10, size: Size = (320, 240), seed: int = 0) -> Iterator[np.ndarray]:
    """Yield the shots of ``EDIT_SHOTS`` back to back (hard cuts, no transitions)."""
    for shot, (who, seconds) in enumerate(EDIT_SHOTS):
        shot_seed = seed + 10 * shot
        if who is None:
            yield from clips.faceless_frames(seconds=seconds, fps=fps, size=size, seed=shot_seed)
        elif who == "astronaut":
            offset = (EDIT_OFFSETS[who], 0.0)
            yield from clips.talking_head_frames(
                seconds=seconds, fps=fps, size=size, seed=shot_seed, offset=offset
            )
        else:
            offset = (EDIT_OFFSETS[who], 0.0)
            yield from cameraman_frames(
                seconds=seconds, fps=fps, size=size, seed=shot_seed, offset=offset
            )


def cut_edit_frames(*, size: Size = (320, 240)) -> Iterator[np.ndarray]:
    """Yield the shots of ``CUT_EDIT_SHOTS`` back to back: one frame per second of motion, so
    every frame moves as much from the last as a segment's samples do."""
    for shot, (who, count) in enumerate(CUT_EDIT_SHOTS):
        frames = {"seconds": float(count), "fps": 1.0, "size": size, "seed": 10 * shot}
        if who == "astronaut":
            yield from clips.talking_head_frames(**frames)
        else:
            yield from cameraman_frames(**frames)


def write_cut_edit(path: str | Path, *, fps: float = 4) -> Path:
    """Write the same-framing edit (mp4v, 48 frames at ``fps``) and return its path."""
    return clips.write_video(path, cut_edit_frames(), fps=fps)


def edit_shot_frames(fps: float = 10) -> list[tuple[str | None, int, int]]:
    """(who, first frame, end frame) of each shot of the edit at ``fps``."""
    spans, start = [], 0
    for who, seconds in EDIT_SHOTS:
        count = clips._num_frames(seconds, fps)
        spans.append((who, start, start + count))
        start += count
    return spans


def write_side_by_side(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    seed: int = 0,
) -> Path:
    """Write the two-people clip (mp4v) and return its path."""
    frames = side_by_side_frames(seconds=seconds, fps=fps, size=size, seed=seed)
    return clips.write_video(path, frames, fps=fps)


def write_edit(
    path: str | Path, *, fps: float = 10, size: Size = (320, 240), seed: int = 0
) -> Path:
    """Write the edit of shots (mp4v) and return its path."""
    return clips.write_video(path, edit_frames(fps=fps, size=size, seed=seed), fps=fps)


def read_frames(path: str | Path) -> np.ndarray:
    """Every frame of a clip, decoded by OpenCV, as [N, H, W, 3] uint8 RGB.

    For the short test clips only: the tests cut their own segments from these.
    """
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise ValueError(f"no frame decoded from {path}")
    return np.stack(frames)


def segment_samples(start: int, end: int, num_frames: int) -> np.ndarray:
    """The indices `core.video.probe.plan_sample_indices` picks in frames ``start`` to ``end``
    (exclusive), as a segment of those frames would sample them."""
    return start + plan_sample_indices(end - start, num_frames)
