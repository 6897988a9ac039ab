"""The cross-attention fusion model: face tokens and flow tokens in, five trait scores out.

With ``audio_dim`` set, a third stream joins: per-frame audio tokens (`core.audio.voice`) through a
trainable encoder, attending over the flow tokens (`core.model.audio_layers.VoiceAttention`).
Without it the model is exactly the two-stream one, the same variables in the same order, so every
bundle saved before the voice existed loads and scores as it did.

The layers live in `core.model.layers` and the drawing of attention maps in `core.plots.attention`
(no TensorFlow needed to draw); both are re-exported here and by `core.model`, the model's agreed
import path.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from core.model.audio_layers import AudioEncoder, VoiceAttention
from core.model.layers import (
    MODEL_DIMS,
    SERIALIZABLE_PACKAGE,
    AttentionBlock,
    CrossAttention,
    FeatureFusion,
    PersonalityPredictionHead,
    as_tokens,
    build_once,
    layer_config,
    masked_attention,
    sinusoidal_positions,
    token_shape,
)
from core.plots.attention import plot_attention_map

__all__ = [
    "AttentionBlock",
    "AudioEncoder",
    "CompletePersonalityModel",
    "CrossAttention",
    "FeatureFusion",
    "PersonalityPredictionHead",
    "VoiceAttention",
    "get_attention_weights",
    "masked_attention",
    "plot_attention_map",
    "sinusoidal_positions",
]


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class CompletePersonalityModel(keras.Model):
    """Cross-attention, pooling and the trait head: `model((static, dynamic[, masks]))` -> [B, 5].

    `call(..., return_attention_scores=True)` also returns the attention as [B, 2, H, T, T]
    (direction 0 static->dynamic, 1 dynamic->static), so inference gets scores and maps from
    one compiled call.

    With ``audio_dim``, the model takes ``(static, dynamic, audio)`` or ``(static, dynamic,
    audio, static_mask, dynamic_mask, audio_mask)``, audio [B, T, audio_dim] on the same T
    frames, and its attention is [B, 3, H, T, T]: direction 2 is audio->dynamic.
    """

    def __init__(
        self,
        static_dim: int = 512,
        dynamic_dim: int = 256,
        fusion_dim: int = 128,
        num_heads: int = 4,
        dropout_rate: float = 0.3,
        audio_dim: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if audio_dim is not None and audio_dim < 1:
            raise ValueError(f"audio_dim must be a positive size or None, got {audio_dim}")
        self.audio_dim = audio_dim
        self.static_dim, self.dynamic_dim = static_dim, dynamic_dim
        self.fusion_dim, self.num_heads, self.dropout_rate = fusion_dim, num_heads, dropout_rate
        self.cross_attention: CrossAttention = CrossAttention(
            static_dim, dynamic_dim, fusion_dim, num_heads, dropout_rate, name="cross_attention"
        )
        self.fusion = FeatureFusion(fusion_dim, dropout_rate, name="fusion")
        self.head = PersonalityPredictionHead(fusion_dim, dropout_rate, name="head")
        # Created last, and only for a voice model: a two-stream model's variables stay the
        # ones (and in the order) every existing bundle holds.
        self.voice: VoiceAttention | None = None
        if audio_dim is not None:
            self.voice = VoiceAttention(
                audio_dim, fusion_dim, num_heads, dropout_rate, name="voice"
            )

    @property
    def num_streams(self) -> int:
        return 2 if self.voice is None else 3

    def _check_inputs(self, count: int) -> None:
        streams = self.num_streams
        if count not in (streams, 2 * streams):
            names = ("static", "dynamic", "audio")[:streams]
            masks = ", ".join(f"{name}_mask" for name in names)
            raise ValueError(
                f"expected ({', '.join(names)}) or ({', '.join(names)}, {masks}), "
                f"got {count} inputs"
            )

    def build(self, input_shape: Any) -> None:
        self._check_inputs(len(input_shape))
        static_shape, dynamic_shape = token_shape(input_shape[0]), token_shape(input_shape[1])
        build_once(self.cross_attention, static_shape, dynamic_shape)
        ctx_shape = (static_shape[0], static_shape[1], self.fusion_dim)
        build_once(self.fusion, ctx_shape, (dynamic_shape[0], dynamic_shape[1], self.fusion_dim))
        build_once(self.head, (static_shape[0], self.num_streams * self.fusion_dim))
        if self.voice is not None:
            audio_shape = token_shape(input_shape[2])
            tokens = (dynamic_shape[0], dynamic_shape[1], self.fusion_dim)
            build_once(self.voice, audio_shape, tokens)

    def call(self, inputs: Any, training: Any = None, return_attention_scores: bool = False):
        self._check_inputs(len(inputs))
        streams = self.num_streams
        masks_in = inputs[streams:] if len(inputs) == 2 * streams else (None,) * streams
        static, static_mask = as_tokens(inputs[0], masks_in[0])
        dynamic, dynamic_mask = as_tokens(inputs[1], masks_in[1])
        masks = {"static_mask": static_mask, "dynamic_mask": dynamic_mask}
        (static_ctx, dynamic_ctx), attention = self.cross_attention(
            static, dynamic, **masks, training=training, return_attention_scores=True
        )
        fused = self.fusion(static_ctx, dynamic_ctx, **masks, training=training)
        if self.voice is not None:
            audio, audio_mask = as_tokens(inputs[2], masks_in[2])
            _, dynamic_tokens = self.cross_attention.project(static, dynamic)
            voice, voice_attention = self.voice(
                audio,
                dynamic_tokens,
                audio_mask=audio_mask,
                dynamic_mask=dynamic_mask,
                training=training,
            )
            fused = ops.concatenate([fused, voice], axis=-1)
            attention = (*attention, voice_attention)
        scores = self.head(fused, training=training)
        if return_attention_scores:
            return scores, ops.stack(attention, axis=1)
        return scores

    def get_config(self) -> dict[str, Any]:
        return layer_config(super().get_config(), self, *MODEL_DIMS, "audio_dim")


def get_attention_weights(
    cross_attention: CrossAttention | CompletePersonalityModel,
    static: Any,
    dynamic: Any,
    static_mask: Any = None,
    dynamic_mask: Any = None,
    audio: Any = None,
    audio_mask: Any = None,
) -> np.ndarray:
    """Attention of one eager inference pass as NumPy [B, 2, heads, T, T].

    Direction 0 is static->dynamic (face queries over flow keys), 1 is dynamic->static.
    A whole model is accepted too, for convenience; its `cross_attention` is used. With
    ``audio``, pass a voice model: the result is [B, 3, heads, T, T], direction 2 being
    audio->dynamic (voice queries over flow keys).
    """
    if audio is not None:
        if getattr(cross_attention, "voice", None) is None:
            raise ValueError("audio needs a CompletePersonalityModel built with audio_dim")
        masks = (static_mask, dynamic_mask, audio_mask)
        inputs = (
            (static, dynamic, audio)
            if all(m is None for m in masks)
            else (static, dynamic, audio, *masks)
        )
        _, attention = cross_attention(inputs, training=False, return_attention_scores=True)
        return ops.convert_to_numpy(attention)
    layer: Any = getattr(cross_attention, "cross_attention", cross_attention)
    _, (s_to_d, d_to_s) = layer(
        static,
        dynamic,
        static_mask=static_mask,
        dynamic_mask=dynamic_mask,
        training=False,
        return_attention_scores=True,
    )
    return np.stack([ops.convert_to_numpy(s_to_d), ops.convert_to_numpy(d_to_s)], axis=1)
