"""Model bundles: the three Keras models plus JSON metadata, as one versioned artifact.

A bundle directory holds `bundle.json` and one `.weights.h5` file per model. Its version is
derived from its content (SHA-256 over the weights, and for trained bundles the metadata too),
so two bundles with the same version make the same predictions, and a file changed after
saving is caught at load. Without a trained bundle, `build_default_bundle` makes a seeded,
reproducible one flagged `trained=False`. What a bundle must satisfy before anything is built
from it (format, shapes, files kept in its folder) is `core.bundles.checks`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from core.backbones.transfer import (
    architecture_file,
    backbone_architectures,
    backbone_embeddings,
    build_backbone_face_encoder_for,
    check_backbone_entry,
)
from core.bundles.checks import FORMAT_VERSION, check_inside, check_metadata, read_metadata
from core.bundles.model_card import untrained_card
from core.errors import ModelBundleError
from core.model.encoders import build_face_encoder, build_flow_encoder
from core.model.personality import CompletePersonalityModel
from core.model.runtime import InferenceFn, compile_inference
from core.traits import TRAITS

METADATA_FILE = "bundle.json"
WEIGHT_FILES = {
    "face_encoder": "face_encoder.weights.h5",
    "flow_encoder": "flow_encoder.weights.h5",
    "fusion_model": "fusion_model.weights.h5",
}
# Fields that describe a save, not the content: left out of the content version.
_UNVERSIONED = ("version", "created_at")
# Fields added after format 1, hashed only when set: a bundle saved before they existed (the
# key absent from its bundle.json) keeps the version it was saved with.
_ADDED_LATER = ("card", "flow_region", "backbone")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class BundleMetadata:
    """What a bundle is: its version, whether it was trained, and the shapes it was built for."""

    version: str
    trained: bool
    num_frames: int
    crop_size: int = 112
    flow_size: int = 112
    traits: list[str] = field(default_factory=lambda: list(TRAITS))
    created_at: str = field(default_factory=_now_iso)
    static_dim: int = 512
    dynamic_dim: int = 256
    fusion_dim: int = 128
    num_heads: int = 4
    dropout_rate: float = 0.3
    flow_method: str = "dis"
    seed: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    format_version: int = FORMAT_VERSION
    # The model card (`core.bundles.model_card`): training data, split, accuracy against the mean
    # baseline, backbone, intended use and limits. None in bundles saved before cards.
    card: dict[str, Any] | None = None
    # What each person's optical flow is computed over (`FLOW_REGIONS`): "person", the head
    # and shoulders around their face (`core.persons.regions`), or "frame", the whole frame. None in
    # bundles saved before persons existed, which were all trained on whole frames.
    flow_region: str | None = None

    @property
    def region_mode(self) -> str:
        """The flow region inference must use: what the bundle was trained with."""
        return self.flow_region or "frame"

    # The pretrained backbone of the face CNN (`core.backbones.transfer`): its name, feature
    # width, fine-tuned layers, and each part's package, version and licence. None: the face
    # CNN was trained from scratch (every bundle saved before backbones).
    backbone: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> BundleMetadata:
        """Parse metadata; unknown keys are an error (a newer format), missing optional ones
        take their defaults (an older writer)."""
        if not isinstance(data, dict):
            raise ModelBundleError(f"bundle metadata must be a JSON object, got {type(data)}")
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ModelBundleError(f"unknown bundle metadata keys {unknown}; known: {list(known)}")
        required = [
            name
            for name, f in known.items()
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [name for name in required if name not in data]
        if missing:
            raise ModelBundleError(f"bundle metadata lacks required keys {missing}")
        return cls(**data)

    def validate(self) -> None:
        """Reject metadata this code cannot serve, with what was expected and what was found."""
        check_metadata(self)
        if self.backbone is not None:
            try:
                check_backbone_entry(self.backbone)
            except ValueError as exc:
                raise ModelBundleError(f"bundle backbone: {exc}") from None


class ModelBundle:
    """The face encoder, flow encoder and fusion model that one analysis uses, with metadata.

    Inference goes through compiled functions (`core.model.runtime`), built once per bundle on first
    use; `Model.predict` would cost tens of milliseconds per call.
    """

    def __init__(
        self,
        metadata: BundleMetadata,
        face_encoder: keras.Model,
        flow_encoder: keras.Model,
        fusion_model: CompletePersonalityModel,
    ) -> None:
        self.metadata = metadata
        self.face_encoder = face_encoder
        self.flow_encoder = flow_encoder
        self.fusion_model = fusion_model
        self._compiled: dict[str, InferenceFn] = {}

    def __repr__(self) -> str:
        return f"ModelBundle(version={self.metadata.version!r}, trained={self.metadata.trained})"

    def _compiled_fn(self, name: str) -> InferenceFn:
        if name not in self._compiled:
            if name == "fusion":
                fn = compile_inference(self.fusion_model, return_attention_scores=True)
            else:
                fn = compile_inference(getattr(self, f"{name}_encoder"))
            self._compiled[name] = fn
        return self._compiled[name]

    def encode_faces(self, crops: np.ndarray) -> np.ndarray:
        """[T, crop, crop, 3] RGB crops (uint8 or float 0..255) -> [T, static_dim] float32."""
        size = self.metadata.crop_size
        return self._encode("face", crops, (size, size, 3), self.metadata.static_dim)

    def encode_flow(self, flow: np.ndarray) -> np.ndarray:
        """[T, size, size, 2] flow in [-1, 1] -> [T, dynamic_dim] float32."""
        size = self.metadata.flow_size
        return self._encode("flow", flow, (size, size, 2), self.metadata.dynamic_dim)

    def _encode(
        self, name: str, images: np.ndarray, shape: tuple[int, ...], dim: int
    ) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != shape:
            raise ValueError(
                f"expected {name} input [T, {', '.join(map(str, shape))}], got {images.shape}"
            )
        if len(images) == 0:
            return np.zeros((0, dim), np.float32)
        return self._compiled_fn(name)(images.astype(np.float32, copy=False))

    def predict(
        self,
        static: np.ndarray,
        dynamic: np.ndarray,
        static_mask: np.ndarray | None = None,
        dynamic_mask: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scores [B, 5] (O, C, E, A, N) and attention [B, 2, heads, T, T] for a batch.

        Masks are [B, T] booleans (True = frame present); None means every frame is present.
        """
        static = np.asarray(static, np.float32)
        dynamic = np.asarray(dynamic, np.float32)
        dims = (self.metadata.static_dim, self.metadata.dynamic_dim)
        if (
            static.ndim != 3
            or dynamic.ndim != 3
            or static.shape[:2] != dynamic.shape[:2]
            or (static.shape[2], dynamic.shape[2]) != dims
        ):
            raise ValueError(
                f"expected static [B, T, {dims[0]}] and dynamic [B, T, {dims[1]}] with the same "
                f"B and T, got {static.shape} and {dynamic.shape}"
            )
        static_mask = _mask(static_mask, static.shape[:2])
        dynamic_mask = _mask(dynamic_mask, dynamic.shape[:2])
        return self._compiled_fn("fusion")((static, dynamic, static_mask, dynamic_mask))


def _mask(mask: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask, bool)
    if mask.shape != shape:
        raise ValueError(f"expected a mask of shape {shape}, got {mask.shape}")
    return mask


def build_models(
    metadata: BundleMetadata, embeddings: Mapping[str, keras.Model] | None = None
) -> tuple[keras.Model, keras.Model, CompletePersonalityModel]:
    """Fresh, built (randomly initialised) models for the shapes `metadata` describes.

    A bundle with a backbone needs each backbone's embedding model (`embeddings`: installed
    ones when training, the bundle's own architecture files when loading); its face encoder
    uses them as they are, weights included.
    """
    if metadata.backbone is None:
        face = build_face_encoder(metadata.static_dim, metadata.crop_size)
    else:
        face = build_backbone_face_encoder_for(
            metadata.backbone, embeddings or {}, metadata.crop_size, metadata.static_dim
        )
    flow = build_flow_encoder(metadata.dynamic_dim, metadata.flow_size)
    fusion = CompletePersonalityModel(
        metadata.static_dim,
        metadata.dynamic_dim,
        metadata.fusion_dim,
        metadata.num_heads,
        metadata.dropout_rate,
    )
    fusion.build(
        (
            (None, metadata.num_frames, metadata.static_dim),
            (None, metadata.num_frames, metadata.dynamic_dim),
        )
    )
    return face, flow, fusion


def content_version(bundle: ModelBundle) -> str:
    """`untrained-<12 hex>` over the weights, or `v-<12 hex>` over weights and metadata.

    Variables are hashed by position, shape, dtype and bytes (not by name: Keras names depend
    on how many layers a process has created), so the value is stable across processes.
    """
    digest = hashlib.sha256()
    for name in WEIGHT_FILES:
        digest.update(name.encode())
        for index, variable in enumerate(getattr(bundle, name).weights):
            array = np.ascontiguousarray(keras.ops.convert_to_numpy(variable))
            digest.update(f"{index}:{array.dtype.str}:{array.shape}".encode())
            digest.update(array.tobytes())
    if bundle.metadata.backbone is not None:
        for part, text in backbone_architectures(bundle.face_encoder).items():
            digest.update(f"{part}:{text}".encode())
    if not bundle.metadata.trained:
        return "untrained-" + digest.hexdigest()[:12]
    metadata = {
        k: v
        for k, v in bundle.metadata.to_dict().items()
        if k not in _UNVERSIONED and not (k in _ADDED_LATER and v is None)
    }
    digest.update(json.dumps(metadata, sort_keys=True).encode())
    return "v-" + digest.hexdigest()[:12]


def build_default_bundle(num_frames: int = 16, seed: int = 1234) -> ModelBundle:
    """The built-in untrained bundle: the same seed gives bit-identical weights in any process.

    Seeds Keras's global generators (and Python's, NumPy's and the backend's) through
    `keras.utils.set_random_seed`, which every initializer draws from.
    """
    keras.utils.set_random_seed(seed)
    metadata = BundleMetadata(
        version="", trained=False, num_frames=num_frames, seed=seed, card=untrained_card()
    )
    bundle = ModelBundle(metadata, *build_models(metadata))
    metadata.version = content_version(bundle)
    return bundle


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Write the weights, then `bundle.json` (last, so a half-written directory never loads).

    The bundle's version is recomputed from its content first and stored in its metadata.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bundle.metadata.version = content_version(bundle)
    try:
        text = json.dumps(bundle.metadata.to_dict(), indent=2, sort_keys=True)
    except TypeError as exc:
        raise ModelBundleError(f"bundle metadata is not JSON-serialisable: {exc}") from exc
    for name, filename in WEIGHT_FILES.items():
        getattr(bundle, name).save_weights(directory / filename)
    if bundle.metadata.backbone is not None:
        for part, architecture in backbone_architectures(bundle.face_encoder).items():
            (directory / architecture_file(part)).write_text(architecture, encoding="utf-8")
    (directory / METADATA_FILE).write_text(text + "\n", encoding="utf-8")
    return directory


def load_bundle(path: str | Path) -> ModelBundle:
    """Rebuild a saved bundle; any missing, malformed or mismatched part is a ModelBundleError."""
    directory = Path(path)
    if directory.is_file() and directory.name == METADATA_FILE:
        directory = directory.parent
    if not directory.is_dir():
        raise ModelBundleError(f"model bundle {str(path)!r} is not an existing directory")
    for filename in (METADATA_FILE, *WEIGHT_FILES.values()):
        check_inside(directory, filename)
    metadata = BundleMetadata.from_dict(read_metadata(directory / METADATA_FILE))
    metadata.validate()
    models = build_models(metadata, _bundled_embeddings(directory, metadata))
    for model, (name, filename) in zip(models, WEIGHT_FILES.items(), strict=True):
        weights = directory / filename
        if not weights.is_file():
            raise ModelBundleError(f"model bundle {str(directory)!r} lacks {filename}")
        try:
            model.load_weights(weights)
        except Exception as exc:  # h5py and Keras raise OSError, ValueError, KeyError...
            raise ModelBundleError(f"cannot load {name} weights from {weights}: {exc}") from exc
    bundle = ModelBundle(metadata, *models)
    expected = content_version(bundle)
    if metadata.version != expected:
        raise ModelBundleError(
            f"bundle {str(directory)!r} says version {metadata.version!r} but its content hashes "
            f"to {expected!r}: a file was changed after saving"
        )
    return bundle


def _bundled_embeddings(directory: Path, metadata: BundleMetadata) -> dict[str, keras.Model]:
    """The backbone architectures a bundle carries (weights come with its face encoder)."""
    if metadata.backbone is None:
        return {}
    texts = {}
    for part in metadata.backbone["parts"]:
        filename = architecture_file(part["name"])
        check_inside(directory, filename)
        path = directory / filename
        if not path.is_file():
            raise ModelBundleError(
                f"model bundle {str(directory)!r} lacks {filename}, the architecture of the "
                f"{part['name']} backbone it was trained with"
            )
        texts[part["name"]] = path.read_text(encoding="utf-8")
    try:
        return backbone_embeddings(texts)
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError... on bad configs
        raise ModelBundleError(f"cannot rebuild the backbone of {directory}: {exc}") from exc
