"""Extracting a whole labelled set: the manifest, one clip at a time, skip what is done.

`extract_to_store` is the unit of work, shared by the in-process loop here and by the
`oceanstream.extract_clip` Celery task: it skips a clip whose arrays already exist, and
records why a clip could not be extracted instead of raising, so one bad clip never stops a
data set.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import InputError, NoFaceError
from core.storage.store import ArtifactStore
from core.training.datasets import GROUP_RULE, LabelledSet
from core.training.extraction import (
    DatasetLayout,
    ExtractionConfig,
    extract_clip_arrays,
    failure_key,
)
from core.training.labels import DatasetError
from core.traits import TRAITS
from core.video.probe import VideoLimits

if TYPE_CHECKING:
    from core.persons.faces import FaceDetector

EXTRACTED = "extracted"
SKIPPED = "skipped"  # already extracted earlier
NO_FACE = "no_face"
FAILED = "failed"


@dataclass(frozen=True)
class ClipOutcome:
    clip_id: str
    status: str  # EXTRACTED, SKIPPED, NO_FACE or FAILED
    error: str | None = None
    seconds: float = 0.0


def extract_to_store(
    store: ArtifactStore,
    key: str,
    video: str | Path,
    detector: FaceDetector,
    config: ExtractionConfig,
    limits: VideoLimits | None = None,
    decode_threads: int = 0,
) -> tuple[str, str | None]:
    """Extract one clip to `key` unless it is there; returns (status, error message).

    A clip that fails leaves `<key>.failed.npz` with its status and message, so whoever waits
    for the clip (the CLI polling storage) learns the outcome; a later success removes it.
    """
    if store.exists(store.uri(key)):
        return SKIPPED, None
    try:
        arrays = extract_clip_arrays(video, detector, config, limits, decode_threads)
    except InputError as exc:
        status = NO_FACE if isinstance(exc, NoFaceError) else FAILED
        record_failure(store, key, status, str(exc))
        return status, str(exc)
    store.put_arrays(key, **arrays)
    store.delete_prefix(failure_key(key))
    return EXTRACTED, None


def record_failure(store: ArtifactStore, key: str, status: str, error: str) -> None:
    """Leave `<key>.failed.npz` with the status and message of a failed extraction."""
    store.put_arrays(failure_key(key), status=np.array(status), error=np.array(error))


def read_failure(store: ArtifactStore, key: str) -> tuple[str, str] | None:
    """(status, message) a failed extraction of `key` left, or None."""
    uri = store.uri(failure_key(key))
    if not store.exists(uri):
        return None
    arrays = store.get_arrays(uri)
    return str(arrays["status"]), str(arrays["error"])


def build_manifest(
    labelled: LabelledSet, layout: DatasetLayout, config: ExtractionConfig
) -> dict[str, Any]:
    """What training needs to find and label every clip, without the videos."""
    return {
        "name": labelled.name,
        "label_format": labelled.format,
        "source": labelled.source,
        "traits": list(TRAITS),
        "config": config.to_dict(),
        "group_rule": GROUP_RULE,
        "clips": [
            {
                "id": clip.clip_id,
                "labels": list(clip.labels),
                "group": clip.group,
                "split": clip.split,
                "key": layout.clip_key(clip.clip_id),
                "video": str(clip.path.absolute()),
            }
            for clip in labelled.clips
        ],
        "missing_videos": labelled.missing_videos,
        "unlabelled_videos": labelled.unlabelled_videos,
        "ambiguous_videos": labelled.ambiguous_videos,
        "failed": {},
        "updated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def prepare_dataset(
    labelled: LabelledSet, layout: DatasetLayout, config: ExtractionConfig, force: bool = False
) -> dict[str, Any]:
    """Write the manifest for a (re-)extraction, refusing to mix extraction settings.

    A data set extracted earlier with other settings (frame count, flow method...) would mix
    clips of two kinds; that is refused unless `force` clears the old clips first.
    """
    previous = layout.read_manifest()
    if previous is not None and previous.get("config") != config.to_dict() and not force:
        raise DatasetError(
            f"{layout} was extracted with {previous.get('config')}, not {config.to_dict()}; "
            "re-extract everything with --force, or choose another name"
        )
    if force:
        layout.store.delete_prefix(layout.clips_prefix())
    manifest = build_manifest(labelled, layout, config)
    layout.write_manifest(manifest)
    return manifest


def extract_dataset(
    manifest: dict[str, Any],
    layout: DatasetLayout,
    detector: FaceDetector,
    limits: VideoLimits | None = None,
    on_clip: Callable[[ClipOutcome], None] | None = None,
) -> list[ClipOutcome]:
    """Extract every clip of the manifest in this process; records failures in the manifest."""
    config = ExtractionConfig.from_dict(manifest["config"])
    outcomes = []
    for clip in manifest["clips"]:
        start = time.perf_counter()
        status, error = extract_to_store(
            layout.store, clip["key"], clip["video"], detector, config, limits
        )
        outcome = ClipOutcome(clip["id"], status, error, time.perf_counter() - start)
        outcomes.append(outcome)
        if on_clip is not None:
            on_clip(outcome)
    record_outcomes(layout, manifest, outcomes)
    return outcomes


def record_outcomes(
    layout: DatasetLayout, manifest: dict[str, Any], outcomes: list[ClipOutcome]
) -> None:
    """Store which clips could not be extracted, and why, in the manifest."""
    manifest["failed"] = {
        o.clip_id: {"status": o.status, "error": o.error}
        for o in outcomes
        if o.status in (NO_FACE, FAILED)
    }
    manifest["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    layout.write_manifest(manifest)
