"""Small helpers for the database tests."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.models import Video

T = TypeVar("T")


def sha(label: str) -> str:
    """A SHA-256 hex digest standing in for a file's content hash."""
    return hashlib.sha256(label.encode()).hexdigest()


def run_together(count: int, work: Callable[[int], T], timeout: float = 30.0) -> list[T]:
    """Run `work(i)` for i in range(count) on `count` threads released at the same moment."""
    barrier = threading.Barrier(count)

    def start(index: int) -> T:
        barrier.wait(timeout)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(start, index) for index in range(count)]
        return [future.result(timeout) for future in futures]


def add_video(session: Session, label: str, name: str | None = None) -> Video:
    video, _ = repo.get_or_create_video(
        session=session,
        content_hash=sha(label),
        name=name or f"{label}.mp4",
        source_path=f"/data/{label}.mp4",
        size_bytes=1000,
    )
    return video


def add_model(
    session: Session, version: str = "untrained-000000000001", trained: bool = False
) -> str:
    repo.ensure_model_version(
        session=session, version=version, trained=trained, metadata={"num_frames": 16}
    )
    return version


def attention_map(seed: int = 0, heads: int = 4, frames: int = 16) -> np.ndarray:
    """A softmax-normalized [2, heads, T, T] map like the model produces."""
    logits = np.random.default_rng(seed).normal(size=(2, heads, frames, frames))
    weights = np.exp(logits)
    return (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)


def new_video(factory: sessionmaker[Session], label: str, status: str | None = None) -> str:
    """Commit a video (optionally moved to `status`) and return its id."""
    with factory.begin() as session:
        video = add_video(session, label)
        if status is not None:
            repo.transition_video(session=session, video_id=video.id, to_status=status)
        return video.id
