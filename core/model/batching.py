"""Dynamic batching for the fusion model: buckets, padding, and one batch runner.

A call of the cross-attention model costs far more than the work for one video in it, so
the inference pool runs many videos per call. Batches are padded to a few fixed sizes
(buckets: powers of two up to the largest batch), so a compiled function sees a handful of
shapes that can all be compiled before the first video arrives, instead of one new shape per
batch size. Padding never changes a real video's result: padded rows are separate rows of
the batch, and padded frames are masked out of attention and pooling on both streams.

Pure NumPy around a `predict` callable (`ModelBundle.predict`), so it works on any Keras
backend and knows nothing about brokers or databases.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from core.errors import ArtifactError

#: (static [B,T,Ds], dynamic [B,T,Dd], static_mask [B,T], dynamic_mask [B,T])
#:   -> (scores [B,5], attention [B,2,H,T,T])
PredictFn = Callable[
    [np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]
]


DEFAULT_MAX_BATCH_SIZE = 32


def bucket_sizes(max_batch_size: int) -> tuple[int, ...]:
    """The padded batch sizes: powers of two below `max_batch_size`, then `max_batch_size`.

    `bucket_sizes(32) == (1, 2, 4, 8, 16, 32)`, `bucket_sizes(24) == (1, 2, 4, 8, 16, 24)`.
    A batch is padded to the smallest bucket that holds it, so at most half of a call is
    padding and only `len(buckets)` shapes are ever compiled.
    """
    if max_batch_size < 1:
        raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
    sizes = []
    size = 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch_size)
    return tuple(sizes)


DEFAULT_BUCKETS = bucket_sizes(DEFAULT_MAX_BATCH_SIZE)


def choose_bucket(count: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `count` rows (`count` at most the largest bucket)."""
    if count < 1:
        raise ValueError(f"a batch needs at least one row, got {count}")
    for size in sorted(buckets):
        if size >= count:
            return size
    raise ValueError(f"{count} rows do not fit the largest bucket ({max(buckets)}); split first")


def split_rows(count: int, buckets: Sequence[int]) -> list[int]:
    """Chunk sizes for `count` rows: full largest buckets, then the rest in one chunk."""
    largest = max(buckets)
    chunks = [largest] * (count // largest)
    if count % largest:
        chunks.append(count % largest)
    return chunks


@dataclass(frozen=True)
class FeatureSet:
    """One video's stored features: what the inference stage reads from storage."""

    static: np.ndarray  # [T, static_dim] face tokens
    static_mask: np.ndarray  # [T] bool, False where no face was found
    dynamic: np.ndarray  # [T, dynamic_dim] flow tokens

    @property
    def num_frames(self) -> int:
        return int(self.static.shape[0])

    def checked(self, static_dim: int, dynamic_dim: int) -> FeatureSet:
        """This set as float32/bool arrays, or an `ArtifactError` saying what is wrong with it.

        Checked per video before batching, so a malformed set fails its own video instead of
        the whole batch's model call.
        """
        static = np.asarray(self.static)
        mask = np.asarray(self.static_mask)
        dynamic = np.asarray(self.dynamic)
        expected = f"expected [T, {static_dim}], [T] and [T, {dynamic_dim}] with T >= 1"
        if (
            static.ndim != 2
            or dynamic.ndim != 2
            or mask.ndim != 1
            or static.shape[1] != static_dim
            or dynamic.shape[1] != dynamic_dim
            or not len(static) == len(mask) == len(dynamic) >= 1
        ):
            raise ArtifactError(
                f"stored features have shapes {static.shape}, {mask.shape} and {dynamic.shape}; "
                f"{expected}"
            )
        if not (_numeric(static) and _numeric(dynamic)):
            raise ArtifactError(
                f"stored features have dtypes {static.dtype} and {dynamic.dtype}; expected floats"
            )
        static = static.astype(np.float32, copy=False)
        dynamic = dynamic.astype(np.float32, copy=False)
        if not (np.isfinite(static).all() and np.isfinite(dynamic).all()):
            raise ArtifactError("stored features contain NaN or infinite values")
        return FeatureSet(static, mask.astype(bool, copy=False), dynamic)


def _numeric(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer))


@dataclass(frozen=True)
class PaddedBatch:
    """Model inputs for `len(frames)` real videos padded to `batch_size` rows of `T` frames."""

    static: np.ndarray  # [B, T, static_dim]
    dynamic: np.ndarray  # [B, T, dynamic_dim]
    static_mask: np.ndarray  # [B, T]
    dynamic_mask: np.ndarray  # [B, T]
    frames: tuple[int, ...]  # real frames of each real row

    @property
    def batch_size(self) -> int:
        return int(self.static.shape[0])


def pad_batch(
    items: Sequence[FeatureSet], batch_size: int, num_frames: int | None = None
) -> PaddedBatch:
    """Stack `items` into `batch_size` rows of `max(num_frames, longest item)` frames.

    Padded frames and padded rows have zero features and a False mask on both streams, so
    they take no part in attention or pooling; real frames keep their positions.
    """
    if not items:
        raise ValueError("pad_batch needs at least one feature set")
    if len(items) > batch_size:
        raise ValueError(f"{len(items)} feature sets do not fit a batch of {batch_size}")
    length = max([num_frames or 0, *(item.num_frames for item in items)])
    static_dim, dynamic_dim = items[0].static.shape[1], items[0].dynamic.shape[1]
    static = np.zeros((batch_size, length, static_dim), np.float32)
    dynamic = np.zeros((batch_size, length, dynamic_dim), np.float32)
    static_mask = np.zeros((batch_size, length), bool)
    dynamic_mask = np.zeros((batch_size, length), bool)
    for row, item in enumerate(items):
        frames = item.num_frames
        static[row, :frames] = item.static
        dynamic[row, :frames] = item.dynamic
        static_mask[row, :frames] = item.static_mask
        dynamic_mask[row, :frames] = True
    return PaddedBatch(
        static, dynamic, static_mask, dynamic_mask, tuple(i.num_frames for i in items)
    )


@dataclass(frozen=True)
class ModelCall:
    """One call of the model: how many real videos it held, its padded size, its time."""

    rows: int
    bucket: int
    seconds: float


@dataclass(frozen=True)
class BatchPrediction:
    """Per-video outputs of `run_batched`, in the order of its input, and the calls made."""

    scores: list[np.ndarray]  # [5] each
    attention: list[np.ndarray]  # [2, heads, T, T] each, T the video's own frame count
    calls: list[ModelCall]
    call_of: list[int]  # index into `calls` of each video's call


def run_batched(
    predict: PredictFn,
    items: Sequence[FeatureSet],
    buckets: Sequence[int],
    num_frames: int | None = None,
) -> BatchPrediction:
    """Run `predict` over `items` in as few padded calls as the buckets allow.

    Items are cut into chunks of the largest bucket, each chunk padded to its bucket; each
    video gets back its own scores and its attention cropped to its own frames.
    """
    scores: list[np.ndarray] = []
    attention: list[np.ndarray] = []
    calls: list[ModelCall] = []
    call_of: list[int] = []
    start_row = 0
    for rows in split_rows(len(items), buckets):
        chunk = items[start_row : start_row + rows]
        start_row += rows
        batch = pad_batch(chunk, choose_bucket(rows, buckets), num_frames)
        started = time.perf_counter()
        out_scores, out_attention = predict(
            batch.static, batch.dynamic, batch.static_mask, batch.dynamic_mask
        )
        calls.append(ModelCall(rows, batch.batch_size, time.perf_counter() - started))
        for row, frames in enumerate(batch.frames):
            scores.append(np.asarray(out_scores[row], np.float32))
            attention.append(np.asarray(out_attention[row, :, :, :frames, :frames], np.float32))
            call_of.append(len(calls) - 1)
    return BatchPrediction(scores, attention, calls, call_of)


def compile_buckets(
    predict: PredictFn,
    buckets: Sequence[int],
    num_frames: int,
    static_dim: int,
    dynamic_dim: int,
) -> float:
    """Call `predict` once per bucket on blank input, so no shape compiles under load.

    Returns the seconds it took (mostly compilation).
    """
    started = time.perf_counter()
    blank = FeatureSet(
        np.zeros((num_frames, static_dim), np.float32),
        np.ones(num_frames, bool),
        np.zeros((num_frames, dynamic_dim), np.float32),
    )
    for size in buckets:
        batch = pad_batch([blank] * size, size, num_frames)
        predict(batch.static, batch.dynamic, batch.static_mask, batch.dynamic_mask)
    return time.perf_counter() - started
