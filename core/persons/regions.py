"""A person's flow region: the head and shoulders around their face, fixed for a segment.

Each person's optical flow is computed on one crop of the frames, their region: the person's
median face box over the segment (one stray detection moves it little) grown by `RegionGrowth`
to cover head and shoulders and clipped to the frame. It is fixed for the segment so the flow
field of every frame pair covers the same crop (`crop_pair` cuts it for
`core.video.flow.compute_flow`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RegionGrowth:
    """How far a face box grows to cover head and shoulders, in face widths and heights.

    MTCNN's box runs from the brows to the chin and cheek to cheek. Shoulders are about three
    head widths across, so one face width on each side reaches them; the crown of the head is
    about half a face height above the brows (0.6 leaves room for hair); two face heights below
    the chin reach the shoulders and upper chest, where gestures near the face show.
    """

    side: float = 1.0
    above: float = 0.6
    below: float = 2.0

    def __post_init__(self) -> None:
        if min(self.side, self.above, self.below) < 0:
            raise ValueError(f"region growth must not be negative, got {self}")


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame in whole pixels: columns x..x+width, rows y..y+height."""

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.x < 0 or self.y < 0 or self.width < 1 or self.height < 1:
            raise ValueError(f"a region needs x, y >= 0 and a positive size, got {self}")

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, value: dict[str, int]) -> Region:
        return cls(x=value["x"], y=value["y"], width=value["width"], height=value["height"])


def flow_region(
    boxes: np.ndarray, frame_size: tuple[int, int], growth: RegionGrowth | None = None
) -> Region:
    """The head-and-shoulders region of a person over a segment, clipped to the frame.

    ``boxes`` [K, 4] are the person's face boxes (x1, y1, x2, y2; NaN rows are skipped);
    ``frame_size`` is (width, height). The median box resists one stray detection; it is grown
    by ``growth`` and rounded outwards to whole pixels.
    """
    growth = growth or RegionGrowth()
    width, height = frame_size
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    boxes = boxes[np.isfinite(boxes).all(axis=1)]
    if len(boxes) == 0:
        raise ValueError("a flow region needs at least one face box")
    x1, y1, x2, y2 = np.median(boxes, axis=0)
    face_w, face_h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    left = min(max(0, math.floor(x1 - growth.side * face_w)), width - 1)
    top = min(max(0, math.floor(y1 - growth.above * face_h)), height - 1)
    right = max(min(width, math.ceil(x2 + growth.side * face_w)), left + 1)
    bottom = max(min(height, math.ceil(y2 + growth.below * face_h)), top + 1)
    return Region(x=left, y=top, width=right - left, height=bottom - top)


def crop_region(frames: np.ndarray, region: Region) -> np.ndarray:
    """``frames`` [T, H, W, C] cut to ``region``, as a contiguous array."""
    frames = np.asarray(frames)
    if frames.ndim != 4:
        raise ValueError(f"expected frames of shape [T, H, W, C], got {frames.shape}")
    height, width = frames.shape[1:3]
    if region.x + region.width > width or region.y + region.height > height:
        raise ValueError(f"region {region.as_dict()} does not fit frames of {width}x{height}")
    cut = frames[:, region.y : region.y + region.height, region.x : region.x + region.width]
    return np.ascontiguousarray(cut)


def crop_pair(
    frames: np.ndarray, successors: np.ndarray, region: Region
) -> tuple[np.ndarray, np.ndarray]:
    """Sampled frames and their successors cut to one person's region, for `compute_flow`."""
    frames, successors = np.asarray(frames), np.asarray(successors)
    if frames.shape != successors.shape:
        raise ValueError(
            f"frames and successors must have the same shape, got {frames.shape} "
            f"and {successors.shape}"
        )
    return crop_region(frames, region), crop_region(successors, region)
