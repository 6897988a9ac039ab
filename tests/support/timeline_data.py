"""Stored videos analysed as segments × persons, written through the repository functions the
pipeline uses, for the read-side tests and the example plot in the docs.

`python -m tests.support.timeline_data docs/timeline-example.png` draws the example from a
SQLite database it populates in a temporary folder.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from core.persons.person_links import ContinuityLinker, PersonLinker
from core.status import VideoStatus
from core.video.segments import plan_segments
from db import repository as repo
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database

MODEL = "untrained-0000000000aa"
LEFT, RIGHT = [120.0, 140.0, 80.0, 80.0], [820.0, 150.0, 76.0, 76.0]
FACE_A, FACE_B = np.eye(8, dtype=np.float32)[0], np.eye(8, dtype=np.float32)[1]
#: Each person's scores around which its segments vary (O, C, E, A, N).
BASE_A = np.array([0.64, 0.55, 0.71, 0.58, 0.34])
BASE_B = np.array([0.44, 0.69, 0.41, 0.63, 0.53])


@dataclass(frozen=True)
class Seen:
    """One person in one segment: where, how many face frames, which face, which scores."""

    box: list[float]
    face_frames: int
    face: np.ndarray
    scores: tuple[float, ...]


@dataclass
class StoredVideos:
    """Ids of what `populate` stored."""

    job_id: str
    interview: str  # 90 s: A; A and B; A and B; no face; A; failed
    clip: str  # 15 s, one segment, one person
    whole: str  # analysed as a whole, before segments: a prediction and no segments
    scores: dict[tuple[int, int], tuple[float, ...]] = field(default_factory=dict)


def session_factory_for(url: str) -> sessionmaker[Session]:
    upgrade_database(url)
    return make_session_factory(make_engine(url))


def _scores(base: np.ndarray, rng: np.random.Generator) -> tuple[float, ...]:
    return tuple(float(v) for v in np.clip(base + rng.normal(0, 0.05, 5), 0.02, 0.98))


def attention_map(seed: int, heads: int = 4, frames: int = 8) -> np.ndarray:
    """A softmax-normalised [2, heads, T, T] map like the model stores."""
    logits = np.random.default_rng(seed).normal(size=(2, heads, frames, frames))
    weights = np.exp(logits)
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)


def _video(session: Session, label: str, duration_s: float | None) -> str:
    video, _ = repo.get_or_create_video(
        session=session,
        content_hash=hashlib.sha256(label.encode()).hexdigest(),
        name=f"{label}.mp4",
        source_path=f"/data/{label}.mp4",
        size_bytes=1000,
    )
    repo.pin_model_version(session=session, video_id=video.id, version=MODEL)
    if duration_s is not None:
        repo.finish_stage(
            session=session,
            video_id=video.id,
            changes=repo.StageUpdate(
                status=VideoStatus.INFERENCE,
                probe={
                    "fps": 25.0,
                    "frame_count": int(duration_s * 25),
                    "duration_s": duration_s,
                    "width": 1280,
                    "height": 720,
                },
            ),
            from_statuses=None,
        )
    return video.id


def _segmented(
    session: Session,
    video_id: str,
    duration_s: float,
    plan: Sequence[tuple[str, Sequence[Seen], str | None]],
    seed: int,
) -> None:
    """Segments of `duration_s` with, per segment, (status, persons seen, error)."""
    ids = repo.create_segments(
        session=session, video_id=video_id, segments=plan_segments(duration_s)
    )
    assert len(ids) == len(plan), (len(ids), len(plan))
    for number, (segment_id, (status, persons, error)) in enumerate(zip(ids, plan, strict=True)):
        records = [
            repo.SegmentPersonRecord(i, p.face_frames, p.box, p.box, None, p.face)
            for i, p in enumerate(persons)
        ]
        stored = repo.save_segment_persons(session=session, segment_id=segment_id, persons=records)
        for i, (segment_person_id, seen) in enumerate(zip(stored, persons, strict=True)):
            repo.save_segment_prediction(
                session=session,
                segment_person_id=segment_person_id,
                model_version=MODEL,
                scores=seen.scores,
                model_trained=False,
                attention=attention_map(seed + 10 * number + i),
            )
        faces = sum(p.face_frames for p in persons)
        assert repo.finish_segment(
            session=session,
            segment_id=segment_id,
            changes=repo.SegmentUpdate(
                status=VideoStatus(status),
                error=error,
                frames=16,
                faces_found=faces,
                persons=len(persons),
            ),
            from_statuses=None,
        )


def populate(
    factory: sessionmaker[Session], linker: PersonLinker | None = None, seed: int = 3
) -> StoredVideos:
    """A job over three videos (see `StoredVideos`), aggregated with `linker`."""
    linker = linker or ContinuityLinker()
    rng = np.random.default_rng(seed)
    a = [_scores(BASE_A, rng) for _ in range(4)]
    b = [_scores(BASE_B, rng) for _ in range(2)]
    solo = _scores(BASE_B, rng)
    with factory.begin() as session:
        repo.ensure_model_version(
            session=session, version=MODEL, trained=False, metadata={"num_frames": 8}
        )
        job = repo.create_job(session=session, kind="submit", options={})
        interview = _video(session, "interview", 90.0)
        clip = _video(session, "clip", 15.0)
        whole = _video(session, "whole", 15.0)
        for position, (video_id, name) in enumerate(
            [(interview, "talks/interview.mp4"), (clip, "clip.mp4"), (whole, "old/whole.mp4")]
        ):
            repo.attach_video(
                session=session, job_id=job.id, video_id=video_id, name=name, position=position
            )
        _segmented(
            session,
            interview,
            90.0,
            [
                ("done", [Seen(LEFT, 16, FACE_A, a[0])], None),
                ("done", [Seen(LEFT, 15, FACE_A, a[1]), Seen(RIGHT, 9, FACE_B, b[0])], None),
                ("done", [Seen(RIGHT, 14, FACE_B, b[1]), Seen(LEFT, 12, FACE_A, a[2])], None),
                ("no_face", [], None),
                ("done", [Seen(LEFT, 16, FACE_A, a[3])], None),
                ("failed", [], "cannot decode frames 1875-2250"),
            ],
            seed,
        )
        _segmented(session, clip, 15.0, [("done", [Seen(LEFT, 13, FACE_B, solo)], None)], seed)
        repo.save_prediction(
            session=session,
            video_id=whole,
            model_version=MODEL,
            scores=[0.5, 0.4, 0.6, 0.5, 0.3],
            attention=attention_map(99),
            model_trained=False,
        )
        repo.finish_stage(
            session=session,
            video_id=whole,
            changes=repo.StageUpdate(status=VideoStatus.DONE, frames=16, faces_found=16),
            from_statuses=None,
        )
    for video_id in (interview, clip):
        with factory.begin() as session:
            outcome = repo.aggregate_video(
                session=session, video_id=video_id, model_version=MODEL, linker=linker
            )
            assert outcome is not None
    stored = StoredVideos(job.id, interview, clip, whole)
    stored.scores.update({(0, 0): a[0], (1, 0): a[1], (1, 1): b[0], (2, 0): b[1], (2, 1): a[2]})
    stored.scores.update({(4, 0): a[3]})
    return stored


def write_example(path: Path) -> Path:
    """The docs' example plot: the interview, persons linked by identity embeddings."""
    from core.persons.person_links import EmbeddingLinker
    from workers.services.timeline import plot_video

    with tempfile.TemporaryDirectory() as folder:
        factory = session_factory_for(f"sqlite:///{Path(folder) / 'example.db'}")
        populate(factory, EmbeddingLinker())
        return plot_video(factory, "talks/interview.mp4", path)


if __name__ == "__main__":
    print(write_example(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/timeline-example.png")))
