"""The analysis stages' shared steps: their knobs, sampling, face and flow tokens, prediction.

`core.video_analysis.VideoAnalyzer` (in process) and the distributed stages chain the same
functions (`sample_video`, `extract_static`, `extract_dynamic`, `predict_one`); only the
transport between them differs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InputError, NoFaceError
from core.video.probe import SampledFrames, VideoLimits, probe_video, sample_frames

if TYPE_CHECKING:
    from core.bundles.bundle import ModelBundle
    from core.persons.faces import FaceDetector


@dataclass(frozen=True)
class PipelineConfig:
    """Knobs of the analysis stages (the model bundle fixes T and the crop size)."""

    num_frames: int = 16
    flow_method: str = "dis"
    detect_width: int = 256
    min_face_confidence: float = 0.9
    # Sampled frames are kept at most this many pixels on their long side: detection runs
    # at 256 px and crops are 112 px, so more only costs memory and storage traffic.
    frame_max_side: int = 640
    # Decoder threads per video; 0 lets FFmpeg choose (all cores). Workers that scale by
    # processes set it to their thread budget.
    decode_threads: int = 0
    limits: VideoLimits = field(default_factory=VideoLimits)
    # The length of the windows a video is analysed in (`core.video.segments.plan_segments`).
    segment_seconds: float = 15.0
    # Sampled frames are an intermediate: deleted once a segment's face and flow features
    # are stored, unless kept (for debugging a stage).
    keep_frames: bool = False
    # Whether window boundaries move onto the nearest keyframes (`core.video.keyframes`), so that
    # no segment decodes frames before its own; False keeps exact multiples of the window.
    segment_keyframes: bool = True


@dataclass(frozen=True)
class StaticFeatures:
    """Face tokens per sampled frame; `mask` is False where no face was found."""

    tokens: np.ndarray  # [T, static_dim] float32
    mask: np.ndarray  # [T] bool

    @property
    def faces_found(self) -> int:
        return int(self.mask.sum())


class Timer:
    """Collects wall-clock seconds per stage into a dict."""

    def __init__(self, timings: dict[str, float]) -> None:
        self.timings = timings

    def __call__(self, stage: str) -> _Stage:
        return _Stage(self.timings, stage)


class _Stage:
    def __init__(self, timings: dict[str, float], stage: str) -> None:
        self.timings, self.stage = timings, stage

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        elapsed = time.perf_counter() - self.start
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + elapsed


def sample_video(
    path: str | Path,
    num_frames: int,
    limits: VideoLimits | None = None,
    max_side: int | None = None,
    decode_threads: int = 0,
    name: str | None = None,
) -> SampledFrames:
    """Probe a video against the limits, then sample T frames and their successors.

    With `max_side`, frames larger than that on their long side are scaled down. `name` is
    the file as its user knows it: errors name it instead of `path`, which may be a storage
    copy the user never saw.
    """
    try:
        info = probe_video(path, limits)
        # Frames are scaled as they are decoded, so a segment never holds T full-size pairs.
        return sample_frames(
            path,
            num_frames=num_frames,
            limits=limits,
            info=info,
            decode_threads=decode_threads,
            max_side=max_side,
        )
    except InputError as exc:
        if name is None:
            raise
        # The same error, naming the file as its user knows it. (Messages never quote a
        # file's bytes: `core.video.probe` describes what it received without them.)
        raise type(exc)(str(exc).replace(str(path), name)) from exc


def downscale(frames: np.ndarray, max_side: int) -> np.ndarray:
    """[N, H, W, C] frames scaled (area filter) so that max(H, W) <= max_side."""
    import cv2

    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return frames
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])


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


def scores_problem(scores: np.ndarray, model_version: str) -> str | None:
    """Why a model's output cannot be stored as trait scores, or None when it can."""
    values = np.asarray(scores)
    if values.shape == (5,) and np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all():
        return None
    return f"model {model_version} produced invalid scores {values.tolist()}"


def predict_one(
    bundle: ModelBundle, static: StaticFeatures, dynamic: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scores [5] and attention [2, heads, T, T] for one video."""
    dynamic_mask = np.ones(len(dynamic), dtype=bool)
    scores, attention = bundle.predict(
        static.tokens[None], dynamic[None], static.mask[None], dynamic_mask[None]
    )
    return np.asarray(scores[0]), np.asarray(attention[0])
