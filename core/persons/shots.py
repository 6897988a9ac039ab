"""Shot changes between a segment's sampled frames: where a camera cut falls.

A segment samples T frames about a second apart and decodes nothing else, so cuts are found
on those frames alone: each is shrunk to 64x48 and summarised by two histograms, its colour
(hue against saturation, 16x8 bins: brightness moves neither) and its grey levels divided by
their mean (12 bins over 0..3 times the mean: a global gain moves it little). Two consecutive
samples are in different shots when either histogram changed by more than ``CUT_THRESHOLD``
(one minus their intersection, so 0 is the same picture and 1 nothing in common). Colour alone
misses a cut between two grey pictures; grey levels alone miss one between two pictures of
the same contrast in different colours.

The threshold was chosen on generated edits and continuous clips (docs/backbones.md,
"Shot changes"; ``python -m tests.benchmarks.shots``); it costs well under a millisecond a
frame. Within a shot a second's motion (a head's sway, a pan, a change of light) changes the
histograms less than a cut to another picture does; a cut between two shots of very similar
colour and contrast is missed, and then identity (`core.persons.tracks`, with an embedding) is what
still tells the people apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

SIGNATURE_SIZE = (64, 48)
_HUE_BINS, _SATURATION_BINS, _GREY_BINS = 16, 8, 12
_GREY_RANGE = 3.0  # grey levels over their mean, binned from 0 to this
# One minus histogram intersection above which two consecutive samples are different shots.
CUT_THRESHOLD = 0.45


def frame_signature(frame: np.ndarray) -> np.ndarray:
    """The colour histogram (128 bins) and normalised grey-level histogram (12) of one RGB
    frame, each summing to one, concatenated."""
    small = cv2.resize(np.asarray(frame), SIGNATURE_SIZE, interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    colour = cv2.calcHist([hsv], [0, 1], None, [_HUE_BINS, _SATURATION_BINS], [0, 180, 0, 256])
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey /= max(float(grey.mean()), 1.0)
    levels, _ = np.histogram(grey, bins=_GREY_BINS, range=(0.0, _GREY_RANGE))
    colour = colour.ravel().astype(np.float64)
    levels = levels.astype(np.float64)
    return np.concatenate([colour / colour.sum(), levels / max(levels.sum(), 1.0)])


def cut_scores(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """[T - 1] how much each sample differs from the one before, in [0, 1]: the larger of the
    colour and grey-level histogram changes (one minus their intersection)."""
    if len(frames) < 2:
        return np.zeros(0)
    signatures = np.stack([frame_signature(frame) for frame in frames])
    split = _HUE_BINS * _SATURATION_BINS
    overlap = np.minimum(signatures[1:], signatures[:-1])
    colour = 1.0 - overlap[:, :split].sum(axis=1)
    grey = 1.0 - overlap[:, split:].sum(axis=1)
    return np.maximum(colour, grey)


def detect_cuts(
    frames: np.ndarray | Sequence[np.ndarray], threshold: float = CUT_THRESHOLD
) -> tuple[int, ...]:
    """The samples that begin a new shot: ``t`` where a cut lies between samples t-1 and t."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    scores = cut_scores(frames)
    return tuple(int(t) + 1 for t in np.flatnonzero(scores > threshold))


def shot_of_frames(num_frames: int, cuts: Sequence[int]) -> np.ndarray:
    """[T] the shot each sample is in, counting from 0 at the segment's first sample."""
    if any(not 0 < t < num_frames for t in cuts):
        raise ValueError(f"cuts must lie between samples 1 and {num_frames - 1}, got {cuts}")
    shots = np.zeros(num_frames, np.int64)
    for t in sorted(set(cuts)):
        shots[t:] += 1
    return shots


def cut_times(start_s: float, end_s: float, num_frames: int, cuts: Sequence[int]) -> list[float]:
    """Video times of a segment's cuts: midway between the two samples each lies between.

    A segment spreads its ``num_frames`` samples evenly over ``start_s`` to ``end_s``, so a
    time is good to half a sampling interval (about half a second), the most the samples say.
    """
    if num_frames < 2 or not cuts:
        return []
    step = (end_s - start_s) / (num_frames - 1)
    return [round(start_s + (t - 0.5) * step, 3) for t in sorted(set(cuts))]
