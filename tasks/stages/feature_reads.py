"""Reading stored features for inference, and the thread pool that reads remote stores.

A feature set read from a remote store (a bucket) is a network round trip, so a batch's
sets are read `REMOTE_READS` at a time by one pool of threads per process, created on first
use and shared by the inference pool's runner threads. From a local store the reads are CPU
work and run one after another in the caller's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from core.errors import InputError
from core.pipeline import StaticFeatures
from tasks.context import StageContext

REMOTE_READS = 16

Features = tuple[StaticFeatures, np.ndarray]


class FeatureReaders:
    """The process's threads for remote feature reads: one pool, made once, on demand."""

    def __init__(self, threads: int = REMOTE_READS) -> None:
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # runner threads may ask for the pool at once

    def pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="features")
            return self._pool


READERS = FeatureReaders()


def load_features(ctx: StageContext, video_id: str) -> Features:
    """The stored static tokens, face mask and dynamic tokens of one video."""
    static = ctx.store.get_arrays(ctx.store.uri(ctx.layout.static_features(video_id)))
    dynamic_uri = ctx.store.uri(ctx.layout.dynamic_features(video_id))
    dynamic = ctx.store.get_arrays(dynamic_uri, names=("tokens",))["tokens"]
    tokens, mask = static["tokens"], static["mask"].astype(bool)
    if tokens.ndim != 2 or dynamic.ndim != 2 or len(tokens) != len(mask):
        raise InputError(
            f"stored features have shapes {tokens.shape}, {mask.shape}, {dynamic.shape}; "
            "expected [T, static_dim], [T], [T, dynamic_dim]"
        )
    return StaticFeatures(tokens=tokens, mask=mask), dynamic


def load_many(ctx: StageContext, video_ids: Sequence[str]) -> dict[str, Features | Exception]:
    """Each video's features, or the error reading them raised (for the caller to sort)."""

    def read(video_id: str) -> Features | Exception:
        try:
            return load_features(ctx, video_id)
        except Exception as exc:  # re-raised by the caller, in the batch's thread
            return exc

    if ctx.store.is_local:
        return {video_id: read(video_id) for video_id in video_ids}
    return dict(zip(video_ids, READERS.pool().map(read, video_ids), strict=True))
