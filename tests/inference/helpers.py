"""Segments waiting for inference, made directly (no decoding), and what inference stored.

`add_segment` stands in for ingest, sampling, faces and flow: a one-segment video whose
segment is in `inference`, with its persons stored and features drawn from a seed, exactly
where the faces and flow stages write them. The inference tests and the pool's tests use it
to put many segments in front of the model in a fraction of a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import select

from core.bundles.bundle import ModelBundle
from core.errors import ModelBundleError, StorageError
from core.pipeline import PipelineConfig
from core.status import VideoStatus
from core.storage.artifacts import LAYOUT
from core.storage.store import ArtifactStore
from core.video import segments as plan
from db import repository as repo
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from db.models import Segment, SegmentPerson, SegmentPrediction
from db.repository.segment_persons import SegmentPersonRecord
from db.repository.segments import SegmentUpdate
from tasks.context import StageContext

T = 8


class FlakyStore(ArtifactStore):
    """Local storage whose reads of some keys fail as an outage would: a read of a URI that
    holds one of the strings in `down` raises `StorageError`."""

    down: set[str]

    def get_arrays(self, uri: str, *args, **kwargs) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def,override]
        if any(key in uri for key in getattr(self, "down", set())):
            raise StorageError(f"cannot read {uri}: connection reset")
        return super().get_arrays(uri, *args, **kwargs)


def make_context(
    tmp_path: Path, bundles: dict[str, ModelBundle], active: object, store: type = FlakyStore
) -> StageContext:
    """SQLite and a `FlakyStore` under `tmp_path`, every bundle registered (untrained);
    `active` is the context's `active_version` callable. An unknown version's bundle cannot
    be loaded (`ModelBundleError`, as for one that is out of reach)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    session_factory = make_session_factory(make_engine(url))
    with session_factory.begin() as session:
        for version, bundle in bundles.items():
            repo.ensure_model_version(
                session=session,
                version=version,
                trained=False,
                metadata=bundle.metadata.to_dict(),
            )

    def load(version: str) -> ModelBundle:
        if version not in bundles:
            raise ModelBundleError(f"model version {version!r} is not registered")
        return bundles[version]

    return StageContext(
        session_factory=session_factory,
        store=store(f"file://{tmp_path / 'storage'}"),
        config=PipelineConfig(num_frames=T),
        load_bundle=load,
        active_version=active,  # type: ignore[arg-type]
    )


def add_segment(
    ctx: StageContext,
    name: str,
    version: str | None,
    seed: int,
    *,
    frames: int = T,
    persons: int = 1,
    person_flow: bool = False,
) -> str:
    """A one-segment video pinned to `version`, its segment in `inference`; the segment id.

    The segment holds `persons` persons; their face tokens, masks and flow tokens are drawn
    from `seed` (one whole-frame flow set shared by all, or one per person with
    `person_flow`). `version=None` leaves the video unpinned.
    """
    rng = np.random.default_rng(seed)
    masks = rng.random((persons, frames)) > 0.3
    masks[:, 0] = True
    with ctx.session_factory.begin() as session:
        video, _ = repo.get_or_create_video(
            session=session,
            content_hash=hashlib.sha256(name.encode()).hexdigest(),
            name=name,
            source_path=f"/in/{name}",
            size_bytes=1,
        )
        if version is not None:
            repo.pin_model_version(session=session, video_id=video.id, version=version)
        repo.transition_video(session=session, video_id=video.id, to_status="extracting")
        [segment_id] = repo.create_segments(
            session=session, video_id=video.id, segments=[plan.Segment(0, 0.0, 1.0)]
        )
        repo.save_segment_persons(
            session=session,
            segment_id=segment_id,
            persons=[
                SegmentPersonRecord(
                    index=index,
                    face_frames=int(masks[index].sum()),
                    first_box=[10.0 + 50 * index, 10.0, 40.0, 40.0],
                    last_box=[10.0 + 50 * index, 10.0, 40.0, 40.0],
                )
                for index in range(persons)
            ],
        )
        repo.finish_segment(
            session=session,
            segment_id=segment_id,
            changes=SegmentUpdate(
                VideoStatus.INFERENCE,
                frames=frames,
                faces_found=int(masks.any(axis=0).sum()),
                persons=persons,
            ),
            from_statuses=None,
        )
        video_id = video.id
    ctx.store.put_arrays(
        LAYOUT.segment_static(video_id, 0),
        tokens=rng.standard_normal((persons, frames, 512)).astype(np.float32),
        mask=masks,
    )
    ctx.store.put_arrays(
        LAYOUT.segment_dynamic(video_id, 0),
        tokens=rng.standard_normal((persons if person_flow else 1, frames, 256)).astype(np.float32),
    )
    return segment_id


@dataclass
class StoredSegment:
    """A segment row, its video row, and each person's stored scores and attention (by
    person index) from one model version."""

    segment: Segment
    video: object
    scores: list[tuple[float, ...]]
    attention: list[np.ndarray | None]

    @property
    def video_id(self) -> str:
        return self.segment.video_id


def stored(ctx: StageContext, segment_id: str, version: str) -> StoredSegment:
    """What inference stored for the segment with `version`'s predictions."""
    from core.traits import TRAITS

    with ctx.session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        assert segment is not None, segment_id
        video = repo.get_video(session=session, video_id=segment.video_id)
        rows = session.execute(
            select(SegmentPrediction)
            .join(SegmentPerson, SegmentPerson.id == SegmentPrediction.segment_person_id)
            .where(
                SegmentPerson.segment_id == segment_id,
                SegmentPrediction.model_version == version,
            )
            .order_by(SegmentPerson.index)
        ).scalars()
        scores, attention = [], []
        for row in rows:
            scores.append(tuple(float(getattr(row, trait)) for trait in TRAITS))
            attention.append(
                repo.load_segment_attention(session=session, segment_prediction_id=row.id)
            )
        session.expunge_all()
    return StoredSegment(segment, video, scores, attention)


def feature_keys(ctx: StageContext, segment_id: str) -> tuple[str, str]:
    """The storage keys of the segment's static and dynamic features."""
    with ctx.session_factory() as session:
        segment = repo.get_segment(session=session, segment_id=segment_id)
        assert segment is not None, segment_id
        return (
            LAYOUT.segment_static(segment.video_id, segment.index),
            LAYOUT.segment_dynamic(segment.video_id, segment.index),
        )
