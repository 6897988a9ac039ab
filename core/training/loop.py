"""Training the face CNN, the flow CNN and the cross-attention model together.

`EndToEndModel` wraps the three models a bundle holds, so training updates exactly the
weights that are saved and served: it encodes every frame's crop and flow field, zeroes the
tokens of frames without a face (as serving does) and runs the fusion model with the face
mask. Training uses MSE, Adam with a warm-up and cosine learning-rate schedule, gradient
clipping by global norm, early stopping on the validation loss, checkpoints that a later run
resumes from, a fixed seed and, only when an accelerator is present, mixed precision.

With a pretrained backbone (`TrainingConfig.face_backbone`), the face CNN is the backbone plus
a trainable projection (`core.backbones.transfer`). A frozen backbone is not run during
training at all: batches carry its stored features (`core.training.features`) and only the
projection sees them. With `fine_tune_layers` N > 0 batches carry crops, and the backbone's
last N layers train with the rest.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from core.backbones.transfer import (
    FACE_BACKBONES,
    FEATURES,
    PROJECTION,
    SCRATCH,
    adapt_projection,
    backbone_architectures,
    backbone_embeddings,
    set_fine_tuning,
)
from core.bundles.bundle import BundleMetadata, build_models
from core.event_log import ScalarEventLog
from core.model.personality import CompletePersonalityModel
from core.training.checkpoints import TrainingCheckpoint
from core.training.data import ClipBatches
from core.training.extraction import ExtractionConfig

MIXED_PRECISION_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of a training run; stored in the bundle's metadata."""

    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 1e-3
    warmup_epochs: int = 1
    final_lr_fraction: float = 0.05
    clipnorm: float = 1.0
    patience: int = 8
    seed: int = 1234
    bn_momentum: float = 0.9
    fusion_dim: int = 128
    num_heads: int = 4
    dropout_rate: float = 0.3
    mixed_precision: str = "auto"
    face_backbone: str = SCRATCH
    fine_tune_layers: int = 0

    def __post_init__(self) -> None:
        if self.face_backbone not in FACE_BACKBONES:
            raise ValueError(
                f"face_backbone must be one of {', '.join(FACE_BACKBONES)}, "
                f"got {self.face_backbone!r}"
            )
        if self.fine_tune_layers < 0:
            raise ValueError(f"fine_tune_layers must be 0 or more, got {self.fine_tune_layers}")
        if self.fine_tune_layers and self.face_backbone == SCRATCH:
            raise ValueError("--fine-tune-layers needs a pretrained --face-backbone")
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(
                f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, "
                f"got {self.mixed_precision!r}"
            )
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate <= 0 or self.clipnorm <= 0:
            raise ValueError("learning_rate and clipnorm must be positive")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@keras.saving.register_keras_serializable(package="oceanstream")
class EndToEndModel(keras.Model):
    """`{"crops" [B,T,S,S,3], "mask" [B,T], "flow" [B,T,S,S,2]}` -> scores [B, 5].

    With a backbone's `face_projection`, inputs may carry `"features"` [B,T,D] (the frozen
    backbone's stored output) instead of crops: only the projection runs on them.
    """

    def __init__(
        self,
        face_encoder: keras.Model,
        flow_encoder: keras.Model,
        fusion_model: CompletePersonalityModel,
        face_projection: keras.Model | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.face_encoder = face_encoder
        self.flow_encoder = flow_encoder
        self.fusion_model = fusion_model
        self.face_projection = face_projection

    def call(self, inputs: dict[str, Any], training: Any = None) -> Any:
        flow = ops.cast(inputs["flow"], "float32")
        mask = ops.cast(inputs["mask"], "bool")
        batch, frames = ops.shape(flow)[0], ops.shape(flow)[1]
        if "features" in inputs and self.face_projection is not None:
            features = ops.cast(inputs["features"], "float32")
            faces = self.face_projection(
                ops.reshape(features, (-1, features.shape[-1])), training=training
            )
        else:
            crops = ops.cast(inputs["crops"], "float32")
            faces = self.face_encoder(ops.reshape(crops, (-1, *crops.shape[2:])), training=training)
        static = ops.reshape(faces, (batch, frames, faces.shape[-1]))
        static = static * ops.expand_dims(ops.cast(mask, static.dtype), -1)
        motion = self.flow_encoder(ops.reshape(flow, (-1, *flow.shape[2:])), training=training)
        dynamic = ops.reshape(motion, (batch, frames, motion.shape[-1]))
        every_frame = ops.ones_like(mask)
        return self.fusion_model((static, dynamic, mask, every_frame), training=training)


@dataclass
class TrainingResult:
    """The trained models (float32, ready to bundle) and how the run went."""

    face_encoder: keras.Model
    flow_encoder: keras.Model
    fusion_model: CompletePersonalityModel
    history: dict[str, list[float]] = field(default_factory=dict)
    epochs_run: int = 0
    best_epoch: int | None = None
    best_val_loss: float | None = None
    stopped_early: bool = False
    mixed_precision: bool = False
    seconds: float = 0.0


def accelerator_available() -> bool:
    """Whether the Keras backend sees a GPU or TPU (imports only the active backend)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(
            tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        )
    if backend == "jax":
        import jax

        return any(device.platform != "cpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def use_mixed_precision(choice: str) -> bool:
    """`auto`: only with an accelerator. `on` without one is refused: CPUs gain nothing."""
    present = accelerator_available()
    if choice == "on" and not present:
        raise ValueError("mixed precision was asked for, but no GPU or TPU is available")
    return choice == "on" or (choice == "auto" and present)


@dataclass
class FaceBackbone:
    """An installed backbone to train with: the bundle's `backbone` metadata, each part's
    embedding model (installed weights), and the training set's features of frames with a
    face (to standardise the projection's input)."""

    entry: dict[str, Any]
    embeddings: dict[str, keras.Model]
    adapt_features: np.ndarray


def bundle_shapes(
    extraction: ExtractionConfig, config: TrainingConfig, backbone: dict[str, Any] | None = None
) -> BundleMetadata:
    """Metadata with the shapes the models are built for (version and metrics come later)."""
    return BundleMetadata(
        version="",
        trained=True,
        num_frames=extraction.num_frames,
        crop_size=extraction.crop_size,
        flow_size=extraction.flow_size,
        fusion_dim=config.fusion_dim,
        num_heads=config.num_heads,
        dropout_rate=config.dropout_rate,
        flow_method=extraction.flow_method,
        seed=config.seed,
        backbone=backbone,
        # Serving computes flow as the clips were: per person region, or (None) whole frames.
        flow_region="person" if extraction.flow_region == "person" else None,
    )


def _prepare(models: Sequence[keras.Model], config: TrainingConfig, mean: np.ndarray) -> None:
    """Faster-adapting batch norm statistics, and a head that starts at the mean labels."""
    for model in models[:2]:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = config.bn_momentum
    fusion = models[2]
    clipped = np.clip(mean, 1e-3, 1 - 1e-3)
    fusion.head.scores.bias.assign(np.log(clipped / (1 - clipped)).astype("float32"))


def _optimizer(config: TrainingConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    warmup = config.warmup_epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=config.learning_rate / 10 if warmup else config.learning_rate,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
        alpha=config.final_lr_fraction,
        warmup_target=config.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(learning_rate=schedule, global_clipnorm=config.clipnorm)


def _callbacks(run_dir: Path, checkpoint: TrainingCheckpoint, resume: bool) -> list[Any]:
    return [
        checkpoint,
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=resume),
        ScalarEventLog(run_dir / "logs"),
    ]


def _export(metadata: BundleMetadata, trained: Sequence[keras.Model]) -> list[keras.Model]:
    """Fresh float32 models holding the trained weights: what a bundle saves and serves.

    A backbone is rebuilt from its architecture, as loading the bundle will rebuild it.
    """
    embeddings = None
    if metadata.backbone is not None:
        embeddings = backbone_embeddings(backbone_architectures(trained[0]))
    fresh = build_models(metadata, embeddings)
    for target, source in zip(fresh, trained, strict=True):
        target.set_weights(source.get_weights())
    return list(fresh)


def train_models(
    train: ClipBatches,
    validation: ClipBatches,
    extraction: ExtractionConfig,
    config: TrainingConfig,
    run_dir: str | Path,
    resume: bool = False,
    verbose: int | str = "auto",
    backbone: FaceBackbone | None = None,
) -> TrainingResult:
    """Train all three models on `train`, stop early on `validation`; best weights returned.

    With `backbone`, `train` and `validation` carry its features (frozen) or crops
    (`config.fine_tune_layers` > 0).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    mixed = use_mixed_precision(config.mixed_precision)
    metadata = bundle_shapes(extraction, config, None if backbone is None else backbone.entry)
    previous_policy = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        models = build_models(metadata, None if backbone is None else backbone.embeddings)
        _prepare(models, config, train.labels.mean(axis=0))
        projection = None
        if backbone is not None:
            projection = models[0].get_layer(PROJECTION)
            parts = tuple(part["name"] for part in backbone.entry["parts"])
            adapt_projection(projection, backbone.adapt_features, parts)
            set_fine_tuning(models[0].get_layer(FEATURES), config.fine_tune_layers)
        model = EndToEndModel(*models, face_projection=projection)
        model.compile(optimizer=_optimizer(config, train.num_batches), loss="mse", metrics=["mae"])
        model(train.batch_at([0]), training=False)  # builds the wrapper before any restore
        checkpoint = TrainingCheckpoint(run_dir / "checkpoints", patience=config.patience)
        initial_epoch = checkpoint.restore(model) if resume else 0
        history: dict[str, list[float]] = {}
        if not checkpoint.finished and initial_epoch < config.epochs:
            fitted = model.fit(
                train,
                validation_data=validation,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                callbacks=_callbacks(run_dir, checkpoint, resume),
                verbose=verbose,
            )
            history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
        elif checkpoint.exists():  # the restored run had finished: take its best weights
            checkpoint.set_model(model)
            checkpoint.on_train_end()
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    face, flow, fusion = _export(metadata, models)
    state = checkpoint.state
    return TrainingResult(
        face_encoder=face,
        flow_encoder=flow,
        fusion_model=fusion,
        history=history,
        epochs_run=int(state["epoch"]) + 1,
        best_epoch=None if state["best_epoch"] is None else int(state["best_epoch"]) + 1,
        best_val_loss=state["best"],
        stopped_early=bool(state["stopped_early"]),
        mixed_precision=mixed,
        seconds=round(time.perf_counter() - start, 1),
    )
