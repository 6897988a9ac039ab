"""A whole video analysed in this process, segment by segment and person by person.

The `oceanstream analyze` path. It runs the same functions as the distributed stages, in the
same order, with the frames and features kept in memory instead of storage:

    probe, plan segments                    (`core.video.segment_sampling.plan_video`)
    per segment: sample its window          (`sample_video_segment`)
                 persons, face tokens       (`core.persons.segment_analysis.extract_persons`)
                 flow per person or frame   (`extract_person_dynamic`)
                 the model, per person      (`core.pipeline.predict_one`)

What a video's persons are across segments, their aggregates and the video's final status
are decided where the results are stored (`db.repository.aggregate_video`), as for the
distributed path. While one segment is computed the next one is decoded in a thread.
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
from core.persons.segment_analysis import (
    PersonFeatures,
    extract_person_dynamic,
    extract_persons,
    faces_seen,
)
from core.persons.shots import cut_times
from core.pipeline import PipelineConfig, predict_one, scores_problem
from core.status import VideoStatus
from core.timing import Timer
from core.video.probe import SampledFrames, VideoInfo, probe_video
from core.video.segment_sampling import plan_video, sample_video_segment
from core.video.segments import Segment

if TYPE_CHECKING:
    from core.bundles.bundle import ModelBundle
    from core.persons.faces import FaceDetector
    from core.persons.tracks import Person


@dataclass
class PersonResult:
    """One person of a segment: where they were seen and what the model made of them."""

    person: Person
    embedding: np.ndarray | None
    scores: np.ndarray  # [5] in TRAITS order
    attention: np.ndarray  # [2, heads, T, T]
    faces_found: int


@dataclass
class SegmentResult:
    """What became of one segment: `done` with its persons, `no_face`, or `failed`."""

    segment: Segment
    status: VideoStatus
    frames: int = 0
    faces_found: int = 0
    persons: list[PersonResult] = field(default_factory=list)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    # Video times at which a new shot is first seen (`core.persons.shots.cut_times`).
    shots: list[float] = field(default_factory=list)


@dataclass
class SegmentedResult:
    """What became of one input video: its probe and segments, or why it has none."""

    path: str
    model_version: str
    model_trained: bool
    info: VideoInfo | None = None
    segments: list[SegmentResult] = field(default_factory=list)
    error: str | None = None  # the video failed before any segment (unreadable, too long)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def status(self) -> VideoStatus:
        """The video's status as its segments decide it (`db.repository.aggregates`)."""
        if self.error is not None or not self.segments:
            return VideoStatus.FAILED
        statuses = {s.status for s in self.segments}
        if VideoStatus.DONE in statuses:
            return VideoStatus.DONE
        if statuses == {VideoStatus.NO_FACE}:
            return VideoStatus.NO_FACE
        return VideoStatus.FAILED


Sampled = SampledFrames | InputError


@dataclass(frozen=True)
class _Opened:
    """A video probed and planned, its first segment sampled: or why it could not be."""

    path: str
    info: VideoInfo | None = None
    plan: list[Segment] = field(default_factory=list)
    probe_s: float = 0.0
    first: tuple[Sampled, float] | None = None
    error: str | None = None


class VideoAnalyzer:
    """Every stage of one video in this process, segment by segment."""

    def __init__(
        self,
        bundle: ModelBundle,
        config: PipelineConfig | None = None,
        detector: FaceDetector | None = None,
        embed: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        from core.persons.faces import FaceDetector

        self.bundle = bundle
        self.config = config or PipelineConfig(num_frames=bundle.metadata.num_frames)
        self.detector = detector or FaceDetector(
            detect_width=self.config.detect_width,
            min_confidence=self.config.min_face_confidence,
            crop_size=bundle.metadata.crop_size,
        )
        self.embed = embed

    def analyze(self, path: str | Path) -> SegmentedResult:
        """Analyze one file; input problems become failed or no_face results, never raise."""
        return next(self.analyze_many([path]))

    def analyze_many(
        self,
        paths: Iterable[str | Path],
        on_segment: Callable[[str, SegmentResult], None] | None = None,
    ) -> Iterator[SegmentedResult]:
        """Analyze videos in order; the next segment decodes while the current one computes.

        The next segment is the next video's first once a video's last segment computes, so
        a batch of short clips overlaps decoding and computing as a long video does.
        Decoding (FFmpeg) and the models (TensorFlow) both release the GIL, so on a
        multi-core machine the overlap hides most of the decode time.
        """
        queue = iter(paths)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            first = next(queue, None)
            opening = None if first is None else pool.submit(self._open, str(first))
            while opening is not None:
                opened = opening.result()
                after = next(queue, None)

                def open_next(after: str | Path | None = after) -> Future[_Opened] | None:
                    return None if after is None else pool.submit(self._open, str(after))

                result, opening = self._analyze(pool, opened, on_segment, open_next)
                yield result

    def _open(self, path: str) -> _Opened:
        """Probe and plan a video and sample its first segment (in the decode thread)."""
        start = time.perf_counter()
        try:
            info = probe_video(path, self.config.limits)
        except InputError as exc:
            return _Opened(path, error=str(exc))
        probe_s = time.perf_counter() - start
        keyframes = path if self.config.segment_keyframes else None
        plan = plan_video(info, self.config.segment_seconds, keyframes)
        return _Opened(path, info, plan, probe_s, self._sample(path, plan, 0, info))

    def _analyze(
        self,
        pool: ThreadPoolExecutor,
        opened: _Opened,
        on_segment: Callable[[str, SegmentResult], None] | None,
        open_next: Callable[[], Future[_Opened] | None],
    ) -> tuple[SegmentedResult, Future[_Opened] | None]:
        """One video's segments; the future of the next video's opening, started on the way."""
        meta = self.bundle.metadata
        path = opened.path
        result = SegmentedResult(path, meta.version, meta.trained)
        if opened.error is not None or opened.info is None or opened.first is None:
            result.error = opened.error
            return result, open_next()
        result.info = opened.info
        result.timings["probe"] = opened.probe_s
        plan = opened.plan
        upcoming: Future[tuple[Sampled, float]] | None = None
        following: Future[_Opened] | None = None
        for segment in plan:
            if segment.index == 0:
                sampled, seconds = opened.first
            else:
                assert upcoming is not None
                sampled, seconds = _result_of(upcoming)
            if segment.index + 1 < len(plan):
                upcoming = pool.submit(self._sample, path, plan, segment.index + 1, opened.info)
            else:
                following = open_next()
            outcome = self._segment(segment, sampled, seconds)
            result.segments.append(outcome)
            if on_segment is not None:
                on_segment(path, outcome)
        return result, following

    def _sample(
        self, path: str, plan: list[Segment], index: int, info: VideoInfo
    ) -> tuple[Sampled, float]:
        start = time.perf_counter()
        try:
            sampled: Sampled = sample_video_segment(
                path,
                plan,
                index,
                self.bundle.metadata.num_frames,
                info=info,
                limits=self.config.limits,
                max_side=self.config.frame_max_side,
                decode_threads=self.config.decode_threads,
                name=path,
            )
        except InputError as exc:
            sampled = exc
        return sampled, time.perf_counter() - start

    def _segment(self, segment: Segment, sampled: Sampled, seconds: float) -> SegmentResult:
        """One segment's persons and their scores, from its sampled frames."""
        timings = {"sample": seconds}
        if isinstance(sampled, InputError):
            return SegmentResult(segment, VideoStatus.FAILED, error=str(sampled), timings=timings)
        frames = len(sampled.frames)
        try:
            persons = extract_persons(
                sampled.frames, self.detector, self.bundle, timings, embed=self.embed
            )
            regions = None
            if self.bundle.metadata.region_mode == "person":
                regions = [p.person.region for p in persons]
            dynamic = extract_person_dynamic(
                sampled.frames,
                sampled.successors,
                regions,
                self.bundle,
                self.config.flow_method,
                timings,
            )
        except NoFaceError as exc:
            return SegmentResult(
                segment, VideoStatus.NO_FACE, frames=frames, error=str(exc), timings=timings
            )
        except InputError as exc:
            return SegmentResult(
                segment, VideoStatus.FAILED, frames=frames, error=str(exc), timings=timings
            )
        with Timer(timings)("inference"):
            scored = [
                self._predict(p, dynamic[0 if len(dynamic) == 1 else i])
                for i, p in enumerate(persons)
            ]
        problems = [scores_problem(p.scores, self.bundle.metadata.version) for p in scored]
        problem = next((p for p in problems if p is not None), None)
        if problem is not None:
            return SegmentResult(
                segment, VideoStatus.FAILED, frames=frames, error=problem, timings=timings
            )
        return SegmentResult(
            segment,
            VideoStatus.DONE,
            frames=frames,
            faces_found=faces_seen(persons, frames),
            persons=scored,
            timings=timings,
            shots=cut_times(segment.start_s, segment.end_s, frames, persons[0].cuts),
        )

    def _predict(self, person: PersonFeatures, dynamic: np.ndarray) -> PersonResult:
        scores, attention = predict_one(self.bundle, person.static, dynamic)
        return PersonResult(
            person=person.person,
            embedding=person.embedding,
            scores=scores,
            attention=attention,
            faces_found=person.static.faces_found,
        )


def _result_of(future: Future[tuple[Sampled, float]]) -> tuple[Sampled, float]:
    return future.result()
