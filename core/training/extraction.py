"""Extracting training inputs with the serving stages: face crops, face mask and flow per clip.

Training must see what serving sees, so every clip goes through the same functions as a
video being analysed: `sample_video`, the persons of `core.persons.tracks` (or, for a data set
extracted with whole-frame flow, `FaceDetector.detect`) and `compute_flow`. What the
encoders would consume (not their tokens: the encoders are trained) is stored per clip as one
`.npz` in an `ArtifactStore`, under the data set's prefix:

    <prefix>/manifest.npz            the labels, groups, clip keys and extraction settings
    <prefix>/clips/<clip id>.npz     crops uint8 [T,S,S,3], mask bool [T], flow float16 [T,S,S,2]
    <prefix>/clips/<clip id>.failed.npz   why a clip could not be extracted
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.errors import ArtifactError, NoFaceError
from core.pipeline import PipelineConfig
from core.storage.artifacts import ArtifactLayout
from core.storage.store import ArtifactStore
from core.training.labels import DatasetError
from core.video.probe import VideoLimits
from core.video.segment_sampling import sample_video

if TYPE_CHECKING:
    from core.persons.faces import FaceDetector

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class ExtractionConfig:
    """The stage settings that shape the stored arrays; a trained bundle records them."""

    num_frames: int = 16
    flow_method: str = "dis"
    detect_width: int = 256
    min_face_confidence: float = 0.9
    frame_max_side: int = 640
    crop_size: int = 112
    flow_size: int = 112
    # What each clip's flow covers: "person", the head and shoulders of the clip's main
    # person (what serving computes for a bundle trained so), or "frame", the whole frame
    # (every data set extracted before persons existed, whose settings lack the field).
    flow_region: str = "frame"

    @classmethod
    def from_pipeline(
        cls, config: PipelineConfig, num_frames: int | None = None
    ) -> ExtractionConfig:
        """The settings a new extraction uses: the serving pipeline's, person-region flow."""
        return cls(
            num_frames=num_frames or config.num_frames,
            flow_method=config.flow_method,
            detect_width=config.detect_width,
            min_face_confidence=config.min_face_confidence,
            frame_max_side=config.frame_max_side,
            flow_region="person",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExtractionConfig:
        return cls(**data)


class DatasetLayout:
    """Where one extracted data set lives in an artifact store."""

    def __init__(self, store: ArtifactStore, prefix: str = "") -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.keys = ArtifactLayout(self.prefix)

    def __str__(self) -> str:
        return self.location

    @property
    def location(self) -> str:
        """The URL of the data set's folder."""
        return self.store.uri(self.prefix) if self.prefix else self.store.url

    def key(self, relative: str) -> str:
        return self.keys.key(relative)

    @property
    def manifest_key(self) -> str:
        return self.keys.manifest

    def clip_key(self, clip_id: str) -> str:
        """`clips/<clip id>.npz`, with characters unsafe in object keys replaced."""
        return self.keys.clip(clip_id)

    def clips_prefix(self) -> str:
        return self.keys.clips_prefix

    def write_manifest(self, manifest: dict[str, Any]) -> str:
        text = json.dumps({"format": MANIFEST_FORMAT, **manifest}, sort_keys=True)
        # UTF-8 bytes: a NumPy string array would store four bytes per character.
        data = np.frombuffer(text.encode("utf-8"), np.uint8)
        return self.store.put_arrays(self.manifest_key, manifest=data)

    def read_manifest(self) -> dict[str, Any] | None:
        """The stored manifest, or None when this data set was never extracted."""
        uri = self.store.uri(self.manifest_key)
        if not self.store.exists(uri):
            return None
        manifest = json.loads(self.store.get_arrays(uri)["manifest"].tobytes().decode("utf-8"))
        if manifest.get("format") != MANIFEST_FORMAT:
            raise DatasetError(
                f"{uri}: manifest format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
            )
        return dict(manifest)


def failure_key(clip_key: str) -> str:
    """Where a failed extraction of `clip_key` leaves its reason."""
    return ArtifactLayout.clip_failure(clip_key)


def extract_clip_arrays(
    path: str | Path,
    detector: FaceDetector,
    config: ExtractionConfig,
    limits: VideoLimits | None = None,
    decode_threads: int = 0,
) -> dict[str, np.ndarray]:
    """Crops, mask and flow of one clip, through the serving stages.

    With `flow_region` "person" the clip's main person (most face frames, as serving's first
    person) gives the crops and mask, and the flow is computed on that person's region;
    with "frame", the most prominent face per frame and the whole frame's flow.

    Raises the stages' `InputError`s (a clip that cannot be decoded, or `NoFaceError` when
    no sampled frame has a face: serving would give such a clip no score either).
    """
    from core.persons.regions import crop_pair
    from core.persons.tracks import find_persons
    from core.video.flow import compute_flow

    sampled = sample_video(path, config.num_frames, limits, config.frame_max_side, decode_threads)
    frames, successors = sampled.frames, sampled.successors
    if config.flow_region == "person":
        persons = find_persons(frames, detector.detect_all(frames), detector)
        if not persons:
            raise NoFaceError(f"no person found in the {len(frames)} sampled frames")
        faces = persons[0].faces
        frames, successors = crop_pair(frames, successors, persons[0].region)
    else:
        faces = detector.detect(frames)
        if faces.faces_found == 0:
            raise NoFaceError(f"no face found in any of the {len(frames)} sampled frames")
    flow = compute_flow(frames, successors, method=config.flow_method, size=config.flow_size)
    return {
        "crops": faces.crops,
        "mask": faces.mask,
        "flow": flow.astype(np.float16),
        "indices": sampled.indices,
        "config": np.array(json.dumps(config.to_dict(), sort_keys=True)),
    }


def clip_config(arrays: dict[str, np.ndarray]) -> ExtractionConfig:
    """The extraction settings a stored clip was made with."""
    if "config" not in arrays:
        raise ArtifactError("stored clip records no extraction settings")
    return ExtractionConfig.from_dict(json.loads(str(arrays["config"])))


def check_clip_arrays(arrays: dict[str, np.ndarray], config: ExtractionConfig) -> None:
    """Refuse a stored clip whose shapes do not match `config`, saying what differs."""
    t, c, f = config.num_frames, config.crop_size, config.flow_size
    expected = {"crops": (t, c, c, 3), "mask": (t,), "flow": (t, f, f, 2)}
    for name, shape in expected.items():
        if name not in arrays:
            raise ArtifactError(f"stored clip lacks {name!r}")
        if arrays[name].shape != shape:
            raise ArtifactError(
                f"stored clip has {name} of shape {arrays[name].shape}, expected {shape} "
                f"(extracted with other settings?)"
            )
