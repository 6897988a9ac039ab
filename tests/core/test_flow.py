"""core.video.flow: shape, range and direction of the flow field, for both methods."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from core.video.flow import FLOW_METHODS, FLOW_SCALE, compute_flow
from core.video.probe import sample_frames
from tests import clips


def texture(size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """A detailed still image (the coffee scene) to track."""
    return next(clips.faceless_frames(seconds=0.1, size=size, motion=0.0))


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``image`` moved right by ``dx`` and down by ``dy`` pixels."""
    height, width = image.shape[:2]
    matrix = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)


def centre(flow: np.ndarray) -> np.ndarray:
    """Median flow over the middle of the grid, away from borders the shift uncovers."""
    size = flow.shape[1]
    inner = flow[:, size // 4 : -size // 4, size // 4 : -size // 4]
    return np.median(inner.reshape(-1, 2), axis=0)


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_shape_dtype_and_range_on_a_clip(method: str, talking_head: Path) -> None:
    sampled = sample_frames(talking_head, num_frames=8)
    flow = compute_flow(sampled.frames, sampled.successors, method=method)
    assert flow.shape == (8, 112, 112, 2) and flow.dtype == np.float32
    assert flow.min() >= -1.0 and flow.max() <= 1.0
    assert np.abs(flow[:-1]).mean() > 0.01  # the head moves between frame and successor


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_identical_frames_give_no_flow(method: str) -> None:
    frames = np.stack([texture()] * 2)
    flow = compute_flow(frames, frames.copy(), method=method)
    assert np.abs(flow).mean() < 0.005 and np.abs(flow).max() < 0.1


@pytest.mark.parametrize("method", FLOW_METHODS)
def test_translation_gives_its_direction_and_size(method: str) -> None:
    image = texture()
    frames, successors = image[None], shifted(image, 3.0, -2.0)[None]
    dx, dy = centre(compute_flow(frames, successors, method=method, size=112))
    # 3 px of a 320 px frame is 3 * 112 / 320 px of the output grid, divided by FLOW_SCALE.
    assert dx == pytest.approx(3.0 * 112 / 320 / FLOW_SCALE, rel=0.25)
    assert dy == pytest.approx(-2.0 * 112 / 240 / FLOW_SCALE, rel=0.25)


def test_values_do_not_depend_on_source_resolution() -> None:
    small, large = texture((320, 240)), texture((640, 480))
    flow_small = compute_flow(small[None], shifted(small, 3.0, 2.0)[None])
    flow_large = compute_flow(large[None], shifted(large, 6.0, 4.0)[None])
    np.testing.assert_allclose(centre(flow_small), centre(flow_large), atol=0.03)


def test_large_motion_is_clipped() -> None:
    # 40 px of 320 is 3.5 x FLOW_SCALE on the 112 grid: most of the field saturates at 1.
    image = texture()
    flow = compute_flow(image[None], shifted(image, 40.0, 0.0)[None], method="dis")
    assert flow.max() == 1.0 and flow.min() >= -1.0
    assert np.median(flow[..., 0]) == 1.0


def test_output_size_and_work_width_are_configurable() -> None:
    image = texture()
    flow = compute_flow(image[None], image[None], size=64, work_width=160)
    assert flow.shape == (1, 64, 64, 2)


def test_empty_batch() -> None:
    empty = np.zeros((0, 240, 320, 3), np.uint8)
    assert compute_flow(empty, empty).shape == (0, 112, 112, 2)


def test_unknown_method_names_the_valid_ones() -> None:
    image = texture()[None]
    with pytest.raises(ValueError, match=r"'lucas'.*'dis', 'farneback'"):
        compute_flow(image, image, method="lucas")


def test_frames_and_successors_must_pair_up() -> None:
    image = texture()[None]
    with pytest.raises(ValueError, match="same shape"):
        compute_flow(image, np.concatenate([image, image]))
