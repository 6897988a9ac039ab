"""Putting a file where the stages expect it: a video row and its stored copy."""

from __future__ import annotations

from pathlib import Path

from core.artifacts import LAYOUT
from core.files import file_sha256
from db import repository as repo
from tasks.context import StageContext


def submit(ctx: StageContext, path: Path) -> str:
    """Register `path` as a video, store its copy as `submit` does; returns the video id."""
    with ctx.session_factory.begin() as session:
        video, _ = repo.get_or_create_video(
            session=session,
            content_hash=file_sha256(path),
            name=path.name,
            source_path=str(path),
            size_bytes=path.stat().st_size,
        )
        uri = ctx.store.put_file(path, LAYOUT.video_upload(video.content_hash, path.suffix))
        repo.set_storage_uri(session=session, video_id=video.id, uri=uri)
        return video.id
