"""The analysis stages and the in-process pipeline that chains them.

The distributed workers call the same stage functions (`sample_video`, `extract_static`,
`extract_dynamic`, `predict_one`); only the transport between them differs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InputError, NoFaceError
from core.status import VideoStatus
from core.traits import traits_dict
from core.video.probe import SampledFrames, VideoInfo, VideoLimits, probe_video, sample_frames

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


@dataclass
class VideoResult:
    """What became of one input video."""

    path: str
    status: VideoStatus
    model_version: str
    model_trained: bool
    scores: np.ndarray | None = None  # [5] in TRAITS order
    attention: np.ndarray | None = None  # [2, heads, T, T]
    faces_found: int = 0
    frames: int = 0
    info: VideoInfo | None = None
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def traits(self) -> dict[str, float] | None:
        return None if self.scores is None else traits_dict(list(self.scores))


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


class Analyzer:
    """Runs every stage of one video in this process: the `oceanstream analyze` path."""

    def __init__(
        self,
        bundle: ModelBundle,
        config: PipelineConfig | None = None,
        detector: FaceDetector | None = None,
    ) -> None:
        from core.persons.faces import FaceDetector

        self.bundle = bundle
        self.config = config or PipelineConfig(num_frames=bundle.metadata.num_frames)
        self.detector = detector or FaceDetector(
            detect_width=self.config.detect_width,
            min_confidence=self.config.min_face_confidence,
            crop_size=bundle.metadata.crop_size,
        )

    def _result(self, path: str | Path, status: VideoStatus, **kwargs: object) -> VideoResult:
        meta = self.bundle.metadata
        return VideoResult(
            path=str(path),
            status=status,
            model_version=meta.version,
            model_trained=meta.trained,
            **kwargs,  # type: ignore[arg-type]
        )

    def sample(self, path: str | Path) -> SampledFrames:
        return sample_video(
            path,
            self.bundle.metadata.num_frames,
            self.config.limits,
            self.config.frame_max_side,
            self.config.decode_threads,
            name=str(path),
        )

    def analyze(self, path: str | Path) -> VideoResult:
        """Analyze one file; input problems become a failed or no_face result, never raise."""
        return self.analyze_sampled(path, self._sample_or_error(path))

    def _sample_or_error(self, path: str | Path) -> tuple[SampledFrames | InputError, float]:
        start = time.perf_counter()
        try:
            sampled: SampledFrames | InputError = self.sample(path)
        except InputError as exc:
            sampled = exc
        return sampled, time.perf_counter() - start

    def analyze_sampled(
        self, path: str | Path, sampled_and_time: tuple[SampledFrames | InputError, float]
    ) -> VideoResult:
        sampled, sample_seconds = sampled_and_time
        timings: dict[str, float] = {"sample": sample_seconds}
        if isinstance(sampled, InputError):
            return self._result(path, VideoStatus.FAILED, error=str(sampled), timings=timings)
        frames = len(sampled.frames)
        base = {"info": sampled.info, "frames": frames, "timings": timings}
        try:
            dynamic = extract_dynamic(
                sampled.frames, sampled.successors, self.bundle, self.config.flow_method, timings
            )
            static = extract_static(sampled.frames, self.detector, self.bundle, timings)
        except NoFaceError as exc:
            return self._result(path, VideoStatus.NO_FACE, error=str(exc), **base)
        except InputError as exc:
            return self._result(path, VideoStatus.FAILED, error=str(exc), **base)
        with Timer(timings)("inference"):
            scores, attention = predict_one(self.bundle, static, dynamic)
        timings["total"] = sum(timings.values())
        problem = scores_problem(scores, self.bundle.metadata.version)
        if problem is not None:
            return self._result(path, VideoStatus.FAILED, error=problem, **base)
        return self._result(
            path,
            VideoStatus.DONE,
            scores=scores,
            attention=attention,
            faces_found=static.faces_found,
            **base,
        )

    def analyze_many(
        self,
        paths: Iterable[str | Path],
        on_result: Callable[[VideoResult], None] | None = None,
    ) -> Iterator[VideoResult]:
        """Analyze videos in order, decoding the next one while the current one is computed.

        Decoding (OpenCV) and the models (TensorFlow) both release the GIL, so on a
        multi-core machine the overlap hides most of the decode time of all but the first clip.
        """
        pending = list(paths)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            upcoming: Future[tuple[SampledFrames | InputError, float]] | None = None
            if pending:
                upcoming = pool.submit(self._sample_or_error, pending[0])
            for index, path in enumerate(pending):
                assert upcoming is not None
                sampled = upcoming.result()
                upcoming = (
                    pool.submit(self._sample_or_error, pending[index + 1])
                    if index + 1 < len(pending)
                    else None
                )
                result = self.analyze_sampled(path, sampled)
                if on_result is not None:
                    on_result(result)
                yield result
