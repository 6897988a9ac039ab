"""Which person of a segment is which person of the video: linking across segment boundaries.

Each segment finds its own persons (`core.tracks`); a video-level person is a chain of them.
`ContinuityLinker` links by position and size at the boundary: the last face box of a person
in segment k against the first face box of a person in segment k + 1, which sit about one
sampling interval apart. That holds within a shot and fails across a camera cut (a different
person in the same place is taken for the same one; the same person after a cut to another
framing is taken for a new one), and it only sees the segment just before: a person back after
a faceless stretch is a new person. An identity embedding will do better; linkers therefore
sit behind `PersonLinker`, and `PersonSummary` already carries an optional embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from core.tracks import Person, assign, match_scores


@dataclass(frozen=True)
class PersonSummary:
    """What a linker knows of one person in one segment.

    ``person`` is the video-level id: set for the persons of the previous segment, None for
    those still to be linked. Boxes are x, y, w, h in frame pixels, as in `FaceCrops.boxes`.
    """

    first_box: np.ndarray  # [4] the face box in the first sampled frame it was seen in
    last_box: np.ndarray  # [4] the face box in the last sampled frame it was seen in
    face_frames: int
    person: int | None = None
    embedding: np.ndarray | None = None  # [D] identity embedding, for linkers that use one

    @classmethod
    def of(cls, person: Person, person_id: int | None = None) -> PersonSummary:
        """The summary of a segment's person, optionally with its video-level id."""
        seen = np.flatnonzero(person.faces.mask)
        if len(seen) == 0:
            raise ValueError("a person without a face frame cannot be summarised")
        boxes = person.faces.boxes.astype(np.float64)
        return cls(
            first_box=boxes[seen[0]],
            last_box=boxes[seen[-1]],
            face_frames=len(seen),
            person=person_id,
        )


class PersonLinker(Protocol):
    """Maps the persons of a segment to the video-level persons of the segment before."""

    def link(
        self, previous: Sequence[PersonSummary], current: Sequence[PersonSummary]
    ) -> list[int | None]:
        """For each of ``current``, the ``person`` id of the one of ``previous`` it continues,
        or None for a new person. No id is given twice."""
        ...


@dataclass(frozen=True)
class ContinuityLinker:
    """Links persons whose face stays in place and keeps its size across the boundary.

    The centre may move ``max_shift`` face sizes, as within a segment (`TrackingConfig`),
    since the boundary frames are one sampling interval apart. Sizes must agree more closely
    than within a segment (``min_size_ratio`` 0.67 rather than 0.5): a wrong link merges two
    people's scores for the rest of the video, a missed one only splits a person in two.
    """

    max_shift: float = 1.0
    min_size_ratio: float = 0.67

    def __post_init__(self) -> None:
        if self.max_shift <= 0 or not 0 < self.min_size_ratio <= 1:
            raise ValueError(
                f"need max_shift > 0 and min_size_ratio in (0, 1], got {self.max_shift}, "
                f"{self.min_size_ratio}"
            )

    def link(
        self, previous: Sequence[PersonSummary], current: Sequence[PersonSummary]
    ) -> list[int | None]:
        ids = [summary.person for summary in previous]
        if any(person_id is None for person_id in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"previous persons need distinct video-level ids, got {ids}")
        scores = match_scores(
            _corners([summary.last_box for summary in previous]),
            _corners([summary.first_box for summary in current]),
            self.max_shift,
            self.min_size_ratio,
        )
        links: list[int | None] = [None] * len(current)
        for row, col in assign(scores):
            links[col] = ids[row]
        return links


def number_persons(links: Sequence[int | None], next_id: int) -> list[int]:
    """Video-level ids for a segment's persons: linked ones keep theirs, new ones count up
    from ``next_id`` in the segment's person order."""
    ids: list[int] = []
    for link in links:
        if link is None:
            link, next_id = next_id, next_id + 1
        ids.append(link)
    return ids


def _corners(boxes: Sequence[np.ndarray]) -> np.ndarray:
    """x, y, w, h boxes as x1, y1, x2, y2."""
    xywh = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
