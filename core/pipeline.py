"""The analysis stages' knobs (`PipelineConfig`) and their last step, the prediction.

`core.video_analysis.VideoAnalyzer` (in process) and the distributed stages chain the same
functions (`core.video.segment_sampling`, `core.persons.segment_analysis`, `predict_one`); only
the transport between them differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.video.probe import VideoLimits

if TYPE_CHECKING:
    from core.bundles.bundle import ModelBundle
    from core.persons.segment_analysis import StaticFeatures


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
