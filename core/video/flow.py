"""Dense optical flow between each sampled frame and its successor, for the dynamic stream.

Flow is computed on the whole frame (head, hands and body all carry expression), in grayscale,
at about ``work_width`` pixels wide: motion between two consecutive frames is a few pixels, so
more resolution adds cost, not signal. The field is then resized to the flow CNN's input and
expressed in pixels of that grid, so the same head movement gives the same values whatever the
source resolution.
"""

from __future__ import annotations

import cv2
import numpy as np

FLOW_METHODS = ("dis", "farneback")

# Displacements, in pixels of the output grid, that map to +-1. Consecutive frames of a talking
# head rarely move more than this on a 112-pixel grid; larger values are clipped.
FLOW_SCALE = 4.0

# Farneback parameters: pyramid scale, levels, window, iterations, poly_n, poly_sigma, flags.
_FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)


def _to_work_gray(frame: np.ndarray, work_size: tuple[int, int]) -> np.ndarray:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if gray.shape[::-1] == work_size:
        return gray
    return cv2.resize(gray, work_size, interpolation=cv2.INTER_AREA)


def _work_size(height: int, width: int, work_width: int) -> tuple[int, int]:
    """(width, height) to compute flow at: ``work_width`` wide, never upscaled."""
    scale = min(1.0, work_width / width)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _check_pairs(frames: np.ndarray, successors: np.ndarray) -> None:
    if frames.shape != successors.shape:
        raise ValueError(
            f"frames and successors must have the same shape, got {frames.shape} "
            f"and {successors.shape}"
        )
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape [T, H, W, 3], got {frames.shape}")
    if frames.dtype != np.uint8 or successors.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB frames, got {frames.dtype} and {successors.dtype}")


def compute_flow(
    frames: np.ndarray,
    successors: np.ndarray,
    method: str = "dis",
    size: int = 112,
    work_width: int = 320,
) -> np.ndarray:
    """Flow from each frame to its successor, as [T, size, size, 2] float32 in [-1, 1].

    Channel 0 is the horizontal, channel 1 the vertical displacement, in pixels of the
    ``size`` x ``size`` grid divided by ``FLOW_SCALE``. ``method`` is ``"dis"`` (OpenCV DIS,
    preset FAST: cheap and good enough for small motion) or ``"farneback"``.
    """
    if method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {method!r}; expected one of {FLOW_METHODS}")
    if size < 1 or work_width < 1:
        raise ValueError(f"size and work_width must be positive, got {size} and {work_width}")
    frames, successors = np.asarray(frames), np.asarray(successors)
    _check_pairs(frames, successors)
    out = np.zeros((len(frames), size, size, 2), np.float32)
    if len(frames) == 0:
        return out
    work = _work_size(frames.shape[1], frames.shape[2], work_width)
    # Flow vectors are in work-image pixels; rescale each axis to the output grid.
    factor = np.array([size / work[0], size / work[1]], np.float32) / FLOW_SCALE
    # DISOpticalFlow.create is the typed spelling of cv2.DISOpticalFlow_create.
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_FAST) if method == "dis" else None
    for i, (first, second) in enumerate(zip(frames, successors, strict=True)):
        prev, nxt = _to_work_gray(first, work), _to_work_gray(second, work)
        # None: allocate a fresh field. (DIS would take a given one as its initial guess.)
        # OpenCV's stubs leave out that output arrays may be None.
        if dis is not None:
            field = dis.calc(prev, nxt, None)  # type: ignore[call-overload]
        else:
            field = cv2.calcOpticalFlowFarneback(prev, nxt, None, *_FARNEBACK)  # type: ignore[call-overload]
        field = cv2.resize(field, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = np.clip(field * factor, -1.0, 1.0)
    return out
