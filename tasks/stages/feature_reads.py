"""Reading stored features for inference, and the thread pool that reads remote stores.

A feature set read from a remote store (a bucket) is a network round trip, so a batch's
sets are read `REMOTE_READS` at a time by one pool of threads per process, created on first
use and shared by the inference pool's runner threads. From a local store the reads are CPU
work and run one after another in the caller's thread.

Each archive's headers are checked against the pinned bundle's T and feature sizes before its
data is read (`core.storage.artifacts.segment_static_specs`, `segment_dynamic_specs`): a set of the
wrong shape fails its own segment with that message, instead of reaching (and growing) the
batch's model call.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.errors import ArtifactError
from core.model.batching import FeatureSet
from core.persons.segment_analysis import person_rows
from core.storage.artifacts import segment_dynamic_specs, segment_static_specs
from tasks.context import StageContext

if TYPE_CHECKING:
    from core.bundles.bundle import BundleMetadata

REMOTE_READS = 16

#: One segment's features: a set per person.
Features = list[FeatureSet]


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


@dataclass(frozen=True)
class SegmentKey:
    """Where a segment's features are stored: its video and index."""

    video_id: str
    index: int


def load_features(ctx: StageContext, key: SegmentKey, meta: BundleMetadata) -> Features:
    """Each person's static tokens, face mask and dynamic tokens of one segment, for `meta`.

    Raises `ArtifactError` for a set that does not fit the model: more frames than its T,
    other feature sizes, or arrays that disagree on the persons or frames.
    """
    static_uri = ctx.store.uri(ctx.layout.segment_static(key.video_id, key.index))
    static = ctx.store.get_arrays(
        static_uri, segment_static_specs(meta.num_frames, meta.static_dim)
    )
    dynamic_uri = ctx.store.uri(ctx.layout.segment_dynamic(key.video_id, key.index))
    dynamic = ctx.store.get_arrays(
        dynamic_uri, segment_dynamic_specs(meta.num_frames, meta.dynamic_dim)
    )
    tokens, masks, flow = static["tokens"], static["mask"], dynamic["tokens"]
    try:
        persons = person_rows(tokens, masks, flow)
    except ValueError as exc:
        raise ArtifactError(f"stored features do not fit together: {exc}") from exc
    if not (tokens.shape[1] == masks.shape[1] == flow.shape[1]) or not persons:
        raise ArtifactError(
            f"stored features have shapes {tokens.shape}, {masks.shape} and {flow.shape}; "
            "expected [P, T, static_dim], [P, T] and [P or 1, T, dynamic_dim], P >= 1"
        )
    return [FeatureSet(p.tokens, p.mask, d) for p, d in persons]


def load_many(
    ctx: StageContext, segments: Mapping[str, tuple[SegmentKey, BundleMetadata]]
) -> dict[str, Features | Exception]:
    """Each segment's features for its model, or the error reading them raised (for the
    caller to sort)."""

    def read(segment_id: str) -> Features | Exception:
        try:
            return load_features(ctx, *segments[segment_id])
        except Exception as exc:  # re-raised by the caller, in the batch's thread
            return exc

    ids = list(segments)
    if ctx.store.is_local:
        return {segment_id: read(segment_id) for segment_id in ids}
    return dict(zip(ids, READERS.pool().map(read, ids), strict=True))
