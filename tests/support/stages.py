"""Putting a file where the stages expect it: a video row and its stored copy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.storage.artifacts import LAYOUT
from core.video.files import file_sha256
from db import repository as repo
from db.migrate import upgrade_database
from tasks.context import StageContext
from workers import bootstrap
from workers.settings import Settings


def submit(ctx: StageContext, path: Path, *, stamp: bool = True) -> str:
    """Register `path` as a video, store its copy as `submit` does; returns the video id.

    `stamp=False` stores it as videos were stored before storage stamps were kept."""
    with ctx.session_factory.begin() as session:
        video, _ = repo.get_or_create_video(
            session=session,
            content_hash=file_sha256(path),
            name=path.name,
            source_path=str(path),
            size_bytes=path.stat().st_size,
        )
        uri = ctx.store.put_file(path, LAYOUT.video_upload(video.content_hash, path.suffix))
        recorded = ctx.store.stamp(uri).to_dict() if stamp else None
        repo.set_storage_uri(session=session, video_id=video.id, uri=uri, stamp=recorded)
        return video.id


def segment_ids(ctx: StageContext, video_id: str) -> list[str]:
    """The video's segment ids in index order."""
    with ctx.session_factory() as session:
        return [s.id for s in repo.get_segments(session=session, video_id=video_id)]


def prepare_segments(ctx: StageContext, video_id: str) -> list[str]:
    """Ingest, sample, faces and flow for every segment of the video, as the queues would
    run them; returns the segment ids (those with a face are then in `inference`)."""
    from tasks import stages

    ingested = stages.run_ingest(ctx, video_id)
    for segment_id in ingested:
        waiting = stages.run_sample(ctx, segment_id)
        while waiting:
            stage = waiting.pop(0)
            if stage == "faces":
                waiting += [s for s in stages.run_faces(ctx, segment_id) if s != "inference"]
            elif stage == "flow":
                stages.run_flow(ctx, segment_id)
    return segment_ids(ctx, video_id)


def analyze_with_stages(ctx: StageContext, video_id: str) -> list[str]:
    """Every stage of the video in order, inference a segment at a time; the segment ids."""
    from tasks import stages

    ids = prepare_segments(ctx, video_id)
    for segment_id in ids:
        stages.run_inference(ctx, segment_id)
    return ids


@contextmanager
def worker_context(home: Path, face_detector, num_frames: int = 8) -> Iterator[StageContext]:
    """What a worker builds with OCEANSTREAM_DATABASE_URL unset (a SQLite file in `home`),
    with the session's face detector; the process's settings are reset afterwards."""
    settings = Settings(home=home, num_frames=num_frames, _env_file=None)  # type: ignore[call-arg]
    upgrade_database(settings.effective_database_url)
    bootstrap.configure(settings)
    context = bootstrap.get_context()
    context._detectors[112] = face_detector
    try:
        yield context
    finally:
        bootstrap.configure(Settings(_env_file=None))  # type: ignore[call-arg]
        bootstrap.reset_after_fork()
