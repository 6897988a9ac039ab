"""Reading stored features for inference, and the thread pool that reads remote stores.

A feature set read from a remote store (a bucket) is a network round trip, so a batch's
sets are read `REMOTE_READS` at a time by one pool of threads per process, created on first
use and shared by the inference pool's runner threads. From a local store the reads are CPU
work and run one after another in the caller's thread.

Each archive's headers are checked against the pinned bundle's T and feature sizes before its
data is read (`core.artifacts.static_specs`, `dynamic_specs`): a set of the wrong shape fails
its own video with that message, instead of reaching (and growing) the batch's model call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from core.artifacts import dynamic_specs, static_specs
from core.errors import ArtifactError
from core.pipeline import StaticFeatures
from tasks.context import StageContext

if TYPE_CHECKING:
    from core.bundle import BundleMetadata

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


def load_features(ctx: StageContext, video_id: str, meta: BundleMetadata) -> Features:
    """The stored static tokens, face mask and dynamic tokens of one video, for `meta`'s model.

    Raises `ArtifactError` for a set that does not fit the model: more frames than its T,
    other feature sizes, or streams of different lengths.
    """
    static_uri = ctx.store.uri(ctx.layout.static_features(video_id))
    static = ctx.store.get_arrays(static_uri, static_specs(meta.num_frames, meta.static_dim))
    dynamic_uri = ctx.store.uri(ctx.layout.dynamic_features(video_id))
    dynamic = ctx.store.get_arrays(dynamic_uri, dynamic_specs(meta.num_frames, meta.dynamic_dim))
    tokens, mask, flow = static["tokens"], static["mask"].astype(bool), dynamic["tokens"]
    if not len(tokens) == len(mask) == len(flow):
        raise ArtifactError(
            f"stored features have shapes {tokens.shape}, {mask.shape} and {flow.shape}; "
            "expected [T, static_dim], [T] and [T, dynamic_dim] with the same T"
        )
    return StaticFeatures(tokens=tokens, mask=mask), flow


def load_many(
    ctx: StageContext, videos: Mapping[str, BundleMetadata]
) -> dict[str, Features | Exception]:
    """Each video's features for its model, or the error reading them raised (for the
    caller to sort)."""

    def read(video_id: str) -> Features | Exception:
        try:
            return load_features(ctx, video_id, videos[video_id])
        except Exception as exc:  # re-raised by the caller, in the batch's thread
            return exc

    ids = list(videos)
    if ctx.store.is_local:
        return {video_id: read(video_id) for video_id in ids}
    return dict(zip(ids, READERS.pool().map(read, ids), strict=True))
