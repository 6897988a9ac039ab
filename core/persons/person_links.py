"""Which person of a segment is which person of the video: linking across segment boundaries.

Each segment finds its own persons (`core.persons.tracks`); a video-level person is a chain of them.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from core.persons.tracks import IDENTITY_THRESHOLD, Person, assign, match_scores


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
    # Seen in its segment's first shot, and in its last (`core.persons.tracks.Person`): position
    # links a person across a boundary only when no cut lies between the two boxes it compares.
    opens_segment: bool = True
    closes_segment: bool = True

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
            opens_segment=person.opens_segment,
            closes_segment=person.closes_segment,
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
    people's scores for the rest of the video, a missed one only splits a person in two. For
    the same reason a person last seen before a cut in its segment, or first seen after one,
    is never linked across the boundary: a cut lies between the boxes compared.
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
        scores[[not summary.closes_segment for summary in previous], :] = -np.inf
        scores[:, [not summary.opens_segment for summary in current]] = -np.inf
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


# Linking by identity (`IDENTITY_THRESHOLD`: `core.persons.tracks`, where tracks are joined by it
# too).


@dataclass(frozen=True)
class EmbeddingLinker:
    """Links persons whose identity embeddings agree, wherever and whenever they were seen.

    Each current person goes to the most similar of ``previous`` with cosine similarity at
    least ``threshold``, one to one (`assign`, best pair first); the rest are new. It sets
    ``links_known_persons``, so `link_video` gives it every person seen so far in the video
    (a person back after a cut or a faceless stretch is found again), each with the mean of
    its segments' embeddings. A person without an embedding is never linked: without a face
    network there is nothing to compare, and a wrong link is worse than a split.
    """

    threshold: float = IDENTITY_THRESHOLD
    links_known_persons: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {self.threshold}")

    def link(
        self, previous: Sequence[PersonSummary], current: Sequence[PersonSummary]
    ) -> list[int | None]:
        ids = [summary.person for summary in previous]
        if any(person_id is None for person_id in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"previous persons need distinct video-level ids, got {ids}")
        scores = np.full((len(previous), len(current)), -np.inf)
        for row, known in enumerate(previous):
            for col, summary in enumerate(current):
                if known.embedding is None or summary.embedding is None:
                    continue
                similarity = _cosine(known.embedding, summary.embedding)
                if similarity >= self.threshold:
                    scores[row, col] = similarity
        links: list[int | None] = [None] * len(current)
        for row, col in assign(scores):
            links[col] = ids[row]
        return links


def linker_for(backbones_folder: Path) -> PersonLinker:
    """`EmbeddingLinker` when FaceRes is installed in ``backbones_folder``, else continuity."""
    from core.backbones.registry import read_record

    if read_record(backbones_folder, "faceres") is None:
        return ContinuityLinker()
    return EmbeddingLinker()


def link_video(
    segments: Sequence[Sequence[PersonSummary | None]], linker: PersonLinker
) -> list[list[int]]:
    """Video-level person numbers for each segment's persons, segment by segment.

    A linker is given the persons of the segment before, or, when it sets
    ``links_known_persons``, every person seen so far: the latest summary of each, with the
    mean of all its embeddings. A person without boxes (`None`, as for rows from before
    segments) is a new person. New persons are numbered from 0 up in order of appearance.
    """
    remembers = bool(getattr(linker, "links_known_persons", False))
    numbered: list[list[int]] = []
    previous: list[PersonSummary] = []
    known: dict[int, tuple[PersonSummary, list[np.ndarray]]] = {}
    next_id = 0
    for current in segments:
        linkable = [(i, summary) for i, summary in enumerate(current) if summary is not None]
        candidates = [_known_summary(*entry) for entry in known.values()] if remembers else previous
        links: list[int | None] = [None] * len(current)
        if candidates and linkable:
            found = linker.link(candidates, [summary for _, summary in linkable])
            given = [link for link in found if link is not None]
            if len(set(given)) != len(given) or not set(given) <= {p.person for p in candidates}:
                raise ValueError(f"linker returned invalid links {found} for {candidates}")
            for (i, _), link in zip(linkable, found, strict=True):
                links[i] = link
        ids = number_persons(links, next_id)
        next_id += links.count(None)
        previous = [replace(summary, person=ids[i]) for i, summary in linkable]
        for summary in previous:
            assert summary.person is not None
            embeddings = known.get(summary.person, (summary, []))[1]
            if summary.embedding is not None:
                embeddings.append(summary.embedding)
            known[summary.person] = (summary, embeddings)
        numbered.append(ids)
    return numbered


def _known_summary(latest: PersonSummary, embeddings: list[np.ndarray]) -> PersonSummary:
    if not embeddings:
        return replace(latest, embedding=None)
    unit = [np.asarray(e, np.float64) / max(float(np.linalg.norm(e)), 1e-12) for e in embeddings]
    mean = np.mean(unit, axis=0)
    return replace(latest, embedding=mean / max(float(np.linalg.norm(mean)), 1e-12))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embeddings of different sizes: {a.shape} and {b.shape}")
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
