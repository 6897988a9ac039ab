"""The voice in the fusion model: an audio encoder and a third attention direction.

`CompletePersonalityModel(..., audio_dim=d)` adds one `VoiceAttention` layer beside its
face/flow cross-attention. Audio tokens (`core.audio.voice.audio_tokens`, one per sampled frame) go
through a trainable `AudioEncoder` to `fusion_dim`, get the same sinusoidal frame-index code
as the other streams, and query the flow tokens (voice -> flow: speech comes with mouth and
head movement, which the flow stream carries). The voice context is pooled over the frames
that have audio and joined to the face and flow vectors before the trait head.

A separate direction rather than audio added into the flow tokens keeps the two streams'
attention exactly what it was, and lets a segment without a voice (no track, silence, another
person speaking) drop out by its own mask: its pooled voice vector is zeros, while its face
and flow tokens are untouched. docs/audio.md shows the planted-signal test behind the choice.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from core.model.layers import (
    SERIALIZABLE_PACKAGE,
    AttentionBlock,
    build_once,
    layer_config,
    masked_mean,
    sinusoidal_positions,
    valid_mask,
)


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class AudioEncoder(keras.layers.Layer):
    """Per-frame audio features [B, T, audio_dim] -> tokens [B, T, fusion_dim].

    Features are standardised per dimension first, by a mean and a scale that `adapt` sets
    from the training set's valid tokens (non-trainable weights, saved with the model; before
    `adapt` they are 0 and 1). Log-mel statistics differ between voices by far less than
    between bands, and without that step a small model does not find the difference.
    """

    def __init__(
        self, audio_dim: int, fusion_dim: int = 128, dropout_rate: float = 0.3, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.audio_dim, self.fusion_dim, self.dropout_rate = audio_dim, fusion_dim, dropout_rate
        self.hidden = keras.layers.Dense(fusion_dim, activation="relu", name="hidden")
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.output_dense = keras.layers.Dense(fusion_dim, name="output")

    def build(self, input_shape: Any) -> None:
        if input_shape[-1] is not None and input_shape[-1] != self.audio_dim:
            raise ValueError(f"expected audio features of size {self.audio_dim}, got {input_shape}")
        self.feature_mean = self.add_weight(
            shape=(self.audio_dim,), initializer="zeros", trainable=False, name="feature_mean"
        )
        self.feature_scale = self.add_weight(
            shape=(self.audio_dim,), initializer="ones", trainable=False, name="feature_scale"
        )
        build_once(self.hidden, (None, self.audio_dim))
        build_once(self.output_dense, (None, self.fusion_dim))

    def adapt(self, features: Any, mask: Any = None, floor: float = 1e-3) -> None:
        """Set the standardisation from features [..., audio_dim] (and a mask of the valid)."""
        values = np.asarray(features, np.float32).reshape(-1, self.audio_dim)
        if mask is not None:
            values = values[np.asarray(mask, bool).reshape(-1)]
        if not len(values):
            raise ValueError("adapt needs at least one valid audio token")
        if not self.built:
            self.build((None, None, self.audio_dim))
        self.feature_mean.assign(values.mean(axis=0))
        self.feature_scale.assign(1.0 / np.maximum(values.std(axis=0), floor))

    def call(self, audio: Any, training: Any = False) -> Any:
        batch, length = ops.shape(audio)[0], ops.shape(audio)[1]
        flat = ops.reshape(audio, (-1, self.audio_dim))
        standard = (flat - self.feature_mean) * self.feature_scale
        hidden = self.dropout(self.hidden(standard), training=training)
        return ops.reshape(self.output_dense(hidden), (batch, length, self.fusion_dim))

    def get_config(self) -> dict[str, Any]:
        return layer_config(super().get_config(), self, "audio_dim", "fusion_dim", "dropout_rate")


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class VoiceAttention(keras.layers.Layer):
    """Voice queries over flow tokens; returns the pooled voice vector [B, F] and the weights.

    `call(audio, dynamic_tokens, audio_mask, dynamic_mask)` takes the flow tokens as the
    face/flow cross-attention projects them (`CrossAttention.project`). Frames without audio
    have zero rows in the weights and take no part in the pooling; a segment with no audio at
    all pools to zeros.
    """

    def __init__(
        self,
        audio_dim: int,
        fusion_dim: int = 128,
        num_heads: int = 4,
        dropout_rate: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.audio_dim, self.fusion_dim = audio_dim, fusion_dim
        self.num_heads, self.dropout_rate = num_heads, dropout_rate
        self.encoder = AudioEncoder(audio_dim, fusion_dim, dropout_rate, name="encoder")
        self.audio_to_dynamic = AttentionBlock(
            fusion_dim, num_heads, dropout_rate, name="audio_to_dynamic"
        )
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, audio_shape: Any, dynamic_tokens_shape: Any) -> None:
        build_once(self.encoder, audio_shape)
        tokens = (*tuple(audio_shape)[:-1], self.fusion_dim)
        build_once(self.audio_to_dynamic, tokens, dynamic_tokens_shape)
        build_once(self.norm, (None, self.fusion_dim))

    def call(
        self,
        audio: Any,
        dynamic_tokens: Any,
        audio_mask: Any = None,
        dynamic_mask: Any = None,
        training: Any = False,
    ) -> tuple[Any, Any]:
        tokens = self.encoder(audio, training=training)
        tokens = tokens + sinusoidal_positions(
            ops.shape(tokens)[1], self.fusion_dim, self.compute_dtype
        )
        a_valid, d_valid = valid_mask(tokens, audio_mask), valid_mask(dynamic_tokens, dynamic_mask)
        mask = ops.logical_and(a_valid[:, None, :, None], d_valid[:, None, None, :])
        context, weights = self.audio_to_dynamic(
            tokens, dynamic_tokens, attention_mask=mask, training=training
        )
        pooled = masked_mean(context, a_valid)
        # An all-masked voice pools to zeros and stays zeros: LayerNorm would add its bias.
        present = ops.cast(ops.any(a_valid, axis=1, keepdims=True), pooled.dtype)
        return self.dropout(self.norm(pooled) * present, training=training), weights

    def get_config(self) -> dict[str, Any]:
        names = ("audio_dim", "fusion_dim", "num_heads", "dropout_rate")
        return layer_config(super().get_config(), self, *names)


__all__ = ["AudioEncoder", "VoiceAttention"]
