"""The cross-attention fusion model: face tokens and flow tokens in, five trait scores out.

The layers live in `core.layers` and the drawing of attention maps in `core.attention_plot`
(no TensorFlow needed to draw); both are re-exported here, the model's agreed import path.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from core.attention_plot import plot_attention_map
from core.layers import (
    _DIMS,
    _PACKAGE,
    AttentionBlock,
    CrossAttention,
    FeatureFusion,
    PersonalityPredictionHead,
    _as_tokens,
    _build,
    _config,
    _token_shape,
    masked_attention,
    sinusoidal_positions,
)

__all__ = [
    "AttentionBlock",
    "CompletePersonalityModel",
    "CrossAttention",
    "FeatureFusion",
    "PersonalityPredictionHead",
    "get_attention_weights",
    "masked_attention",
    "plot_attention_map",
    "sinusoidal_positions",
]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CompletePersonalityModel(keras.Model):
    """Cross-attention, pooling and the trait head: `model((static, dynamic[, masks]))` -> [B, 5].

    `call(..., return_attention_scores=True)` also returns the attention as [B, 2, H, T, T]
    (direction 0 static->dynamic, 1 dynamic->static), so inference gets scores and maps from
    one compiled call.
    """

    def __init__(
        self,
        static_dim: int = 512,
        dynamic_dim: int = 256,
        fusion_dim: int = 128,
        num_heads: int = 4,
        dropout_rate: float = 0.3,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.static_dim, self.dynamic_dim = static_dim, dynamic_dim
        self.fusion_dim, self.num_heads, self.dropout_rate = fusion_dim, num_heads, dropout_rate
        self.cross_attention: CrossAttention = CrossAttention(
            static_dim, dynamic_dim, fusion_dim, num_heads, dropout_rate, name="cross_attention"
        )
        self.fusion = FeatureFusion(fusion_dim, dropout_rate, name="fusion")
        self.head = PersonalityPredictionHead(fusion_dim, dropout_rate, name="head")

    def build(self, input_shape: Any) -> None:
        static_shape, dynamic_shape = _token_shape(input_shape[0]), _token_shape(input_shape[1])
        _build(self.cross_attention, static_shape, dynamic_shape)
        ctx_shape = (static_shape[0], static_shape[1], self.fusion_dim)
        _build(self.fusion, ctx_shape, (dynamic_shape[0], dynamic_shape[1], self.fusion_dim))
        _build(self.head, (static_shape[0], 2 * self.fusion_dim))

    def call(self, inputs: Any, training: Any = None, return_attention_scores: bool = False):
        if len(inputs) not in (2, 4):
            raise ValueError(
                "expected (static, dynamic) or (static, dynamic, static_mask, dynamic_mask), "
                f"got {len(inputs)} inputs"
            )
        static, static_mask = _as_tokens(inputs[0], inputs[2] if len(inputs) == 4 else None)
        dynamic, dynamic_mask = _as_tokens(inputs[1], inputs[3] if len(inputs) == 4 else None)
        masks = {"static_mask": static_mask, "dynamic_mask": dynamic_mask}
        (static_ctx, dynamic_ctx), attention = self.cross_attention(
            static, dynamic, **masks, training=training, return_attention_scores=True
        )
        fused = self.fusion(static_ctx, dynamic_ctx, **masks, training=training)
        scores = self.head(fused, training=training)
        if return_attention_scores:
            return scores, ops.stack(attention, axis=1)
        return scores

    def get_config(self) -> dict[str, Any]:
        return _config(super().get_config(), self, *_DIMS)


def get_attention_weights(
    cross_attention: CrossAttention | CompletePersonalityModel,
    static: Any,
    dynamic: Any,
    static_mask: Any = None,
    dynamic_mask: Any = None,
) -> np.ndarray:
    """Attention of one eager inference pass as NumPy [B, 2, heads, T, T].

    Direction 0 is static->dynamic (face queries over flow keys), 1 is dynamic->static.
    A whole model is accepted too, for convenience; its `cross_attention` is used.
    """
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
