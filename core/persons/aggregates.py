"""The rules that make a video's result from its segments: each person's aggregate over the
segments it was scored in, the main person, and the video's final status.

Pure NumPy over plain values: `db.repository.aggregates` reads the rows, links the persons
across segments, calls these rules and stores what they decide, exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from core.status import VideoStatus
from core.traits import TRAITS


class FinalSegment(Protocol):
    """What `decide_status` reads of a final segment (a `db.models.Segment` row has it)."""

    @property
    def index(self) -> int: ...
    @property
    def start_s(self) -> float: ...
    @property
    def end_s(self) -> float: ...
    @property
    def status(self) -> str: ...
    @property
    def error(self) -> str | None: ...


@dataclass(frozen=True)
class ScoredSegment:
    """One person's result in one segment: what its aggregate is made of."""

    segment: int
    start_s: float
    end_s: float
    face_frames: int
    scores: tuple[float, ...]
    prediction_id: int


@dataclass(frozen=True)
class PersonAggregate:
    """One video-level person over the segments it was scored in.

    `scores` are the segment scores' means weighted by face frames, `spread` their
    population standard deviations across those segments (0 for one), both in `TRAITS` order.
    """

    person: int
    scores: tuple[float, ...]
    spread: tuple[float, ...]
    face_frames: int
    segments: int
    first_s: float
    last_s: float
    main: bool = False

    @property
    def traits(self) -> dict[str, float]:
        return dict(zip(TRAITS, self.scores, strict=True))


def aggregate_person(person: int, scored: Sequence[ScoredSegment]) -> PersonAggregate:
    """The aggregate of one person's scored segments (at least one)."""
    if not scored:
        raise ValueError(f"person {person} has no scored segment to aggregate")
    scores = np.array([s.scores for s in scored], dtype=np.float64)
    weights = np.array([s.face_frames for s in scored], dtype=np.float64)
    # Segments all without face frames (not expected) count equally rather than divide by 0.
    mean = np.average(scores, axis=0, weights=weights if weights.sum() > 0 else None)
    return PersonAggregate(
        person=person,
        scores=tuple(float(v) for v in mean),
        spread=tuple(float(v) for v in scores.std(axis=0)),
        face_frames=int(weights.sum()),
        segments=len(scored),
        first_s=min(s.start_s for s in scored),
        last_s=max(s.end_s for s in scored),
    )


def mark_main(aggregates: Sequence[PersonAggregate]) -> list[PersonAggregate]:
    """The same aggregates with `main` set on the one with most face frames (ties: the
    lowest person number)."""
    if not aggregates:
        return []
    main = min(aggregates, key=lambda a: (-a.face_frames, a.person)).person
    return [replace(a, main=a.person == main) for a in aggregates]


def decide_status(
    segments: Sequence[FinalSegment], *, scored: bool, model_version: str
) -> tuple[VideoStatus, str | None]:
    """The video's final status and error from its final segments.

    As `db.repository.aggregate_video` decides it, once every segment is final.
    """
    failures = "; ".join(
        f"segment {s.index} ({s.start_s:g}-{s.end_s:g} s): {s.error or 'failed'}"
        for s in segments
        if s.status == VideoStatus.FAILED
    )
    if scored:
        return VideoStatus.DONE, failures or None
    if all(s.status == VideoStatus.NO_FACE for s in segments):
        return VideoStatus.NO_FACE, None
    return VideoStatus.FAILED, failures or f"no segment has a result from {model_version!r}"
