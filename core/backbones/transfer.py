"""A pretrained backbone as a bundle's face CNN: backbone features, then a trainable projection.

`oceanstream train --face-backbone faceres|emotion|faceres+emotion` replaces the scratch face
CNN by a face encoder built here:

    crops [N, S, S, 3] RGB 0..255 ──► backbone_features ──► face_projection ──► [N, static_dim]
                                       │ per backbone: BackboneInput (resize, grey, scale as the
                                       │ backbone expects) then its embedding model; the
                                       │ embeddings concatenated ([N, feature_dim])
                                       └ face_projection: FeatureStandardization (fixed from the
                                         training set's features) and Dense to the static tokens

FaceRes takes 224x224 RGB in raw 0..255 (its 1024-d descriptor, before normalising); emotion
64x64 grey scaled to -1..1 (its 128-d embedding): the same preprocessing as
`core.backbones.faceres.embed` and `core.backbones.emotion.prepare_faces`, in the graph, so
training, the feature cache and serving all compute it the same way.

A bundle carries the architecture of each backbone's embedding model as
`backbone-NAME.json` (`architecture_file`) and all weights, the backbone's included, in its
face encoder's weights file: it serves without anything installed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from core.backbones import emotion, faceres

SCRATCH = "scratch"
FACE_BACKBONES = (SCRATCH, "faceres", "emotion", "faceres+emotion")
#: What each backbone's embedding model takes: (side, grey, scale to -1..1) and gives.
BACKBONE_INPUTS: dict[str, tuple[int, bool, bool]] = {
    "faceres": (faceres.INPUT_SIZE, False, False),
    "emotion": (emotion.INPUT_SIZE, True, True),
}
FEATURE_DIMS = {"faceres": faceres.DESCRIPTOR_DIM, "emotion": emotion.EMBEDDING_DIM}
FEATURES = "backbone_features"
PROJECTION = "face_projection"
# ITU-R BT.601 luma, as OpenCV's RGB2GRAY (what `fer` feeds its network).
_LUMA = (0.299, 0.587, 0.114)


def backbone_parts(name: str) -> tuple[str, ...]:
    """The installed backbones a `--face-backbone` choice uses: () for scratch."""
    if name not in FACE_BACKBONES:
        raise ValueError(
            f"unknown face backbone {name!r}; expected one of: {', '.join(FACE_BACKBONES)}"
        )
    return () if name == SCRATCH else tuple(name.split("+"))


def architecture_file(part: str) -> str:
    """The file in a bundle holding the architecture of backbone ``part``'s embedding model."""
    return f"backbone-{part}.json"


@keras.saving.register_keras_serializable(package="oceanstream")
class BackboneInput(keras.layers.Layer):
    """RGB crops in 0..255 to what a backbone takes: resized, grey if asked, -1..1 if asked."""

    def __init__(self, size: int, grey: bool, scale: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size, self.grey, self.scale = size, grey, scale

    def call(self, crops: Any) -> Any:
        x = keras.ops.cast(crops, "float32")
        if self.grey:
            x = keras.ops.sum(x * keras.ops.convert_to_tensor(_LUMA, "float32"), -1, keepdims=True)
        if x.shape[1] != self.size or x.shape[2] != self.size:
            shrinking = x.shape[1] is not None and x.shape[1] > self.size
            x = keras.ops.image.resize(
                x, (self.size, self.size), interpolation="bilinear", antialias=shrinking
            )
        if self.scale:
            x = (x / 255.0 - 0.5) * 2.0
        return x

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.size, self.size, 1 if self.grey else input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "grey": self.grey, "scale": self.scale}


@keras.saving.register_keras_serializable(package="oceanstream")
class FeatureStandardization(keras.layers.Layer):
    """``(features - mean) * scale`` with fixed, non-trainable mean and scale per feature.

    Set once from the training set (`adapt_projection`): the mean per feature, and one scale
    per backbone, the inverse of that backbone's root-mean-square feature deviation. A scale
    per feature would blow up FaceRes's many near-constant descriptor dimensions (a quarter
    have a deviation under 1 % of the median one on a face set) into noise; one per backbone
    keeps each descriptor's geometry and puts FaceRes and emotion on one footing.
    """

    def build(self, input_shape: tuple[Any, ...]) -> None:
        width = (int(input_shape[-1]),)
        self.mean = self.add_weight(width, initializer="zeros", trainable=False, name="mean")
        self.scale = self.add_weight(width, initializer="ones", trainable=False, name="scale")

    def call(self, features: Any) -> Any:
        return (features - self.mean) * self.scale


def embedding_model(part: str, installed: keras.Model) -> keras.Model:
    """The installed network cut to its embedding output (heads not on that path left out)."""
    return keras.Model(installed.inputs[0], installed.outputs[0], name=part)


def embedding_from_json(text: str) -> keras.Model:
    """An embedding model's architecture from a bundle's `backbone-NAME.json` (no weights)."""
    return keras.models.model_from_json(text)


def build_backbone_features(embeddings: Mapping[str, keras.Model], crop_size: int) -> keras.Model:
    """[N, crop, crop, 3] RGB 0..255 -> the backbones' embeddings side by side [N, feature_dim]."""
    crops = keras.Input((crop_size, crop_size, 3), name="face_crops")
    outputs = []
    for part, model in embeddings.items():
        size, grey, scale = BACKBONE_INPUTS[part]
        prepared = BackboneInput(size, grey, scale, name=f"{part}_input")(crops)
        outputs.append(model(prepared))
    joined = outputs[0] if len(outputs) == 1 else keras.layers.Concatenate(name="joined")(outputs)
    return keras.Model(crops, joined, name=FEATURES)


def build_projection(feature_dim: int, static_dim: int) -> keras.Model:
    """Backbone features [N, feature_dim] -> static tokens [N, static_dim]: standardise, Dense.

    The standardisation is set once from the training set's features (`adapt_projection`) and
    is not trained.
    """
    features = keras.Input((feature_dim,), name="backbone_features")
    x = FeatureStandardization(name="feature_norm")(features)
    tokens = keras.layers.Dense(static_dim, name="embedding")(x)
    return keras.Model(features, tokens, name=PROJECTION)


def build_backbone_face_encoder(features: keras.Model, projection: keras.Model) -> keras.Model:
    """The face encoder a backbone bundle serves: crops -> features -> static tokens."""
    crops = keras.Input(features.input_shape[1:], name="face_crops")
    return keras.Model(crops, projection(features(crops)), name="face_encoder")


def adapt_projection(projection: keras.Model, features: Any, parts: tuple[str, ...]) -> None:
    """Set the standardisation from the training set's features [N, feature_dim]."""
    features = np.asarray(features, np.float64)
    mean = features.mean(axis=0)
    scale = np.ones_like(mean)
    start = 0
    for part in parts:
        end = start + FEATURE_DIMS[part]
        rms = float(np.sqrt(features[:, start:end].var(axis=0).mean()))
        scale[start:end] = 1.0 / max(rms, 1e-6)
        start = end
    layer = projection.get_layer("feature_norm")
    layer.mean.assign(mean.astype("float32"))
    layer.scale.assign(scale.astype("float32"))


def fine_tunable_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """An embedding model's layers that fine-tuning may train, input to output.

    Layers with weights, batch normalisation excepted: FaceRes's BN layers hold the folded
    scale and shift of its graph (mean 0, variance 1), which batch statistics would destroy.
    """
    return [
        layer
        for layer in model.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]


def set_fine_tuning(features: keras.Model, layers: int) -> None:
    """Freeze every backbone layer but the last ``layers`` fine-tunable ones of each backbone.

    Frozen batch normalisation runs in inference mode (Keras 3), so statistics never move.
    """
    for model in features.layers:
        if not isinstance(model, keras.Model):
            continue
        chosen = fine_tunable_layers(model)[-layers:] if layers > 0 else []
        for layer in model.layers:
            layer.trainable = any(layer is c for c in chosen)


def feature_dim(parts: tuple[str, ...]) -> int:
    return sum(FEATURE_DIMS[part] for part in parts)


def backbone_metadata(
    name: str, records: Mapping[str, Mapping[str, Any]], layers: int
) -> dict[str, Any]:
    """A bundle's `backbone` metadata: name, widths, fine-tuning, and each part's provenance.

    ``records`` are the install records (`registry.read_record`) of the parts used.
    """
    from core.backbones.registry import backbone_source

    parts = []
    for part in backbone_parts(name):
        source, record = backbone_source(part), records.get(part) or {}
        parts.append(
            {
                "name": part,
                "summary": source.summary,
                "package": source.package,
                "version": source.version,
                "licence": source.licence,
                "upstream": source.upstream,
                "model_sha256": record.get("model_sha256"),
                "source_sha256": record.get("sha256"),
                "feature_dim": FEATURE_DIMS[part],
            }
        )
    return {
        "name": name,
        "feature_dim": feature_dim(backbone_parts(name)),
        "fine_tune_layers": layers,
        "parts": parts,
    }


def check_backbone_entry(entry: Any) -> None:
    """Refuse backbone metadata this code cannot rebuild (a ValueError saying what is wrong)."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"expected a JSON object, got {type(entry).__name__}")
    name = entry.get("name")
    if name == SCRATCH or name not in FACE_BACKBONES:
        known = ", ".join(FACE_BACKBONES[1:])
        raise ValueError(f"name must be one of {known}, got {name!r}")
    parts = entry.get("parts")
    if not isinstance(parts, list) or [
        p.get("name") if isinstance(p, Mapping) else None for p in parts
    ] != list(backbone_parts(name)):
        raise ValueError(f"parts must describe {list(backbone_parts(name))}, got {parts!r:.200}")
    if entry.get("feature_dim") != feature_dim(backbone_parts(name)):
        raise ValueError(f"feature_dim must be {feature_dim(backbone_parts(name))}")


def build_backbone_face_encoder_for(
    entry: Mapping[str, Any],
    embeddings: Mapping[str, keras.Model],
    crop_size: int,
    static_dim: int,
) -> keras.Model:
    """The face encoder of a bundle whose metadata names backbone ``entry``."""
    parts = backbone_parts(entry["name"])
    missing = [part for part in parts if part not in embeddings]
    if missing:
        raise ValueError(f"no embedding model given for backbone parts {missing}")
    features = build_backbone_features({part: embeddings[part] for part in parts}, crop_size)
    return build_backbone_face_encoder(features, build_projection(feature_dim(parts), static_dim))


def backbone_architectures(face_encoder: keras.Model) -> dict[str, str]:
    """The architecture JSON of each backbone in a face encoder, by part name."""
    features = face_encoder.get_layer(FEATURES)
    return {
        layer.name: layer.to_json() for layer in features.layers if isinstance(layer, keras.Model)
    }


def backbone_embeddings(texts: Mapping[str, str]) -> dict[str, keras.Model]:
    """Embedding models (untrained weights) from their architecture JSON, by part name."""
    models = {}
    for part, text in texts.items():
        if part not in BACKBONE_INPUTS:
            raise ValueError(f"unknown backbone part {part!r}")
        model = embedding_from_json(text)
        if model.name != part:
            raise ValueError(f"the architecture of {part!r} describes a model named {model.name!r}")
        models[part] = model
    return models
