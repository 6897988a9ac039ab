"""Where everything lives in the artifact store: one place for every storage key.

Keys are relative to the store's root (`ArtifactStore.uri(key)` makes the URI):

    videos/<content hash><suffix>            an uploaded video, stored once per content
    work/<video id>/frames.npz               sampled frames and their successors (ingest)
    work/<video id>/static.npz               face tokens [T, 512] and face mask [T] (faces)
    work/<video id>/dynamic.npz              flow tokens [T, 256] (flow)
    work/<video id>/segments/<i>/frames.npz  segment i's sampled frames and successors
    work/<video id>/segments/<i>/static.npz  its persons' face tokens [P, T, 512], masks [P, T]
    work/<video id>/segments/<i>/dynamic.npz their flow tokens [P, T, 256] ([1, T, 256] for a
                                             bundle trained on whole frames)
    <data set>/manifest.npz                  a training data set's labels and clip keys
    <data set>/clips/<clip id>.npz           one extracted training clip
    <data set>/clips/<clip id>.failed.npz    why that clip could not be extracted

A key says what it holds; nothing outside this module builds one by hand. What the per-video
archives may hold is here too (`frames_specs`, `static_specs`, `dynamic_specs`): a stage
reading one checks each array's header against them before loading it. They are made once
per set of sizes and shared: never change one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from core.storage.npz import ArraySpec

# Characters kept in a clip id's key; anything else becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._/-]+")


@dataclass(frozen=True)
class ArtifactLayout:
    """Storage keys, optionally under a prefix (a training data set's folder)."""

    prefix: str = ""

    def key(self, relative: str) -> str:
        prefix = self.prefix.strip("/")
        return f"{prefix}/{relative}" if prefix else relative

    # Uploaded videos.
    def video_upload(self, content_hash: str, suffix: str) -> str:
        """`videos/<content hash><suffix>`: the same bytes are stored once, whatever the name."""
        return self.key(f"videos/{content_hash}{suffix.lower()}")

    # Per-video work of the distributed stages.
    def work_prefix(self, video_id: str) -> str:
        return self.key(f"work/{video_id}")

    def frames(self, video_id: str) -> str:
        return self.key(f"work/{video_id}/frames.npz")

    def static_features(self, video_id: str) -> str:
        return self.key(f"work/{video_id}/static.npz")

    def dynamic_features(self, video_id: str) -> str:
        return self.key(f"work/{video_id}/dynamic.npz")

    # Per-segment work: a segment's files live under its video's, erased with them.
    def segment_frames(self, video_id: str, index: int) -> str:
        return self.key(f"work/{video_id}/segments/{int(index)}/frames.npz")

    def segment_static(self, video_id: str, index: int) -> str:
        return self.key(f"work/{video_id}/segments/{int(index)}/static.npz")

    def segment_dynamic(self, video_id: str, index: int) -> str:
        return self.key(f"work/{video_id}/segments/{int(index)}/dynamic.npz")

    # Training data sets (the prefix is the data set's folder).
    @property
    def manifest(self) -> str:
        return self.key("manifest.npz")

    @property
    def clips_prefix(self) -> str:
        return self.key("clips")

    def clip(self, clip_id: str) -> str:
        """`clips/<clip id>.npz`, with characters unsafe in object keys replaced."""
        safe = _UNSAFE.sub("_", clip_id.replace("\\", "/")).strip("/").replace("..", "_")
        return self.key(f"clips/{safe}.npz")

    @staticmethod
    def clip_failure(clip_key: str) -> str:
        """Where a failed extraction of `clip_key` leaves its reason."""
        return clip_key.removesuffix(".npz") + ".failed.npz"


_TOKEN_DTYPES = ("float32", "float16", "float64")


@functools.cache
def frames_specs(num_frames: int, max_side: int) -> dict[str, ArraySpec]:
    """`frames.npz`: T RGB frames and their successors, at most `max_side` on either side."""
    shape = (num_frames, ("H", max_side), ("W", max_side), 3)
    return {
        "frames": ArraySpec("frames", shape, ("uint8",)),
        "successors": ArraySpec("successor frames", shape, ("uint8",)),
    }


@functools.cache
def static_specs(num_frames: int, static_dim: int) -> dict[str, ArraySpec]:
    """`static.npz`: face tokens [T', static_dim] and face mask [T'], T' at most the bundle's T."""
    frames = ("T", num_frames)
    return {
        "tokens": ArraySpec("face tokens", (frames, static_dim), _TOKEN_DTYPES),
        "mask": ArraySpec("face mask", (frames,), ("bool", "uint8")),
    }


@functools.cache
def dynamic_specs(num_frames: int, dynamic_dim: int) -> dict[str, ArraySpec]:
    """`dynamic.npz`: flow tokens [T', dynamic_dim], T' at most the bundle's T."""
    return {"tokens": ArraySpec("flow tokens", (("T", num_frames), dynamic_dim), _TOKEN_DTYPES)}


#: The most persons one segment's features hold (`core.persons.segment_analysis.MAX_PERSONS`).
MAX_PERSONS = 16


@functools.cache
def segment_static_specs(num_frames: int, static_dim: int) -> dict[str, ArraySpec]:
    """A segment's `static.npz`: per person face tokens [P, T', static_dim] and masks [P, T']."""
    persons, frames = ("P", MAX_PERSONS), ("T", num_frames)
    return {
        "tokens": ArraySpec("face tokens", (persons, frames, static_dim), _TOKEN_DTYPES),
        "mask": ArraySpec("face masks", (persons, frames), ("bool", "uint8")),
    }


@functools.cache
def segment_dynamic_specs(num_frames: int, dynamic_dim: int) -> dict[str, ArraySpec]:
    """A segment's `dynamic.npz`: flow tokens [P, T', dynamic_dim] (P = 1: whole frame)."""
    persons, frames = ("P", MAX_PERSONS), ("T", num_frames)
    return {"tokens": ArraySpec("flow tokens", (persons, frames, dynamic_dim), _TOKEN_DTYPES)}


#: The layout of the store's root: uploads and per-video work.
LAYOUT = ArtifactLayout()
