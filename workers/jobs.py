"""Registering input files as a job's videos: shared by `analyze` and `submit`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@dataclass(frozen=True)
class RegisteredVideo:
    video_id: str
    content_hash: str
    created: bool  # False: the same bytes were registered before (by any job)
    problem: OSError | None  # the file could not be read


def register_video(*, session: Session, job_id: str, path: Path, position: int) -> RegisteredVideo:
    """One video row per distinct file content, linked to the job under the name given.

    A file that cannot be read gets a stable key derived from its path, so it can still be
    reported as failed in the job's results.
    """
    from core.files import file_sha256, missing_file_key
    from db import repository as repo

    problem: OSError | None = None
    try:
        content_hash, size = file_sha256(path), path.stat().st_size
    except OSError as exc:
        content_hash, size, problem = missing_file_key(path), 0, exc
    video, created = repo.get_or_create_video(
        session=session,
        content_hash=content_hash,
        name=path.name,
        source_path=str(path.absolute()),
        size_bytes=size,
    )
    repo.attach_video(
        session=session, job_id=job_id, video_id=video.id, name=str(path), position=position
    )
    return RegisteredVideo(video.id, content_hash, created, problem)
