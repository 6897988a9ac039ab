"""The layers of the fusion model: attention blocks, bidirectional cross-attention, pooling, head.

Written with Keras 3 layers and `keras.ops` only, so the same code runs on the TensorFlow,
JAX and PyTorch backends. Attention is computed explicitly (matmul + masked softmax) rather
than through `keras.layers.MultiHeadAttention`, so the per-head weights are always available
and masking behaves the same on every backend. `core.model.personality` assembles them into
the model.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from core.traits import NUM_TRAITS

SERIALIZABLE_PACKAGE = "oceanstream"
MODEL_DIMS = ("static_dim", "dynamic_dim", "fusion_dim", "num_heads", "dropout_rate")


def layer_config(base: dict[str, Any], layer: Any, *names: str) -> dict[str, Any]:
    """The base layer config plus the named constructor arguments, for `get_config`."""
    return {**base, **{name: getattr(layer, name) for name in names}}


def sinusoidal_positions(length: Any, dim: int, dtype: str = "float32") -> Any:
    """Fixed [length, dim] frame-index encoding: no weights, so any T works at inference."""
    half = dim // 2
    freqs = np.exp(np.arange(half) * (-math.log(10000.0) / half)).astype(np.float32)
    positions = ops.cast(ops.arange(length), "float32")
    angles = ops.expand_dims(positions, 1) * ops.convert_to_tensor(freqs[None, :])
    return ops.cast(ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1), dtype)


def masked_attention(query: Any, key: Any, value: Any, mask: Any = None) -> tuple[Any, Any]:
    """Scaled dot-product attention over [B, H, T, d] heads; returns (out, weights [B,H,Tq,Tk]).

    `mask` is a boolean [B, 1|H, Tq, Tk] tensor. The softmax is written out so that a masked
    key gets exactly zero weight and a query whose keys are all masked gets an all-zero row
    (and a zero output) instead of NaN.
    """
    logits = ops.matmul(query, ops.swapaxes(key, -1, -2)) / math.sqrt(query.shape[-1])
    if mask is not None:
        floor = -6.0e4 if keras.backend.standardize_dtype(logits.dtype) == "float16" else -1.0e9
        logits = ops.where(mask, logits, ops.cast(floor, logits.dtype))
    scores = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))
    if mask is not None:
        scores = scores * ops.cast(mask, scores.dtype)
    # Any unmasked row holds its maximum, exp(0) = 1, so this only changes all-masked rows.
    weights = scores / ops.maximum(ops.sum(scores, axis=-1, keepdims=True), 1.0)
    return ops.matmul(weights, value), weights


def as_tokens(features: Any, mask: Any) -> tuple[Any, Any]:
    """Treat a [B, D] vector (and a [B] mask) as a one-token sequence."""
    if len(features.shape) == 2:
        features = ops.expand_dims(features, 1)
        if mask is not None and len(mask.shape) == 1:
            mask = ops.expand_dims(mask, 1)
    return features, mask


def valid_mask(tokens: Any, mask: Any) -> Any:
    """A boolean [B, T] mask; None means every frame is valid."""
    if mask is None:
        return ops.ones_like(tokens[..., 0], dtype="bool")
    return ops.cast(mask, "bool")


def build_once(layer: keras.layers.Layer, *shapes: Any) -> None:
    """Build a sublayer unless it already is (it may have been called on its own first)."""
    if not layer.built:
        layer.build(*shapes)


def token_shape(shape: Any) -> tuple[Any, ...]:
    """A [B, D] input shape as a one-token [B, 1, D] sequence; [B, T, D] as it is."""
    shape = tuple(shape)
    return (shape[0], 1, shape[1]) if len(shape) == 2 else shape


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class AttentionBlock(keras.layers.Layer):
    """One direction of cross-attention: queries from one stream, keys/values from the other."""

    def __init__(self, fusion_dim: int, num_heads: int, dropout_rate: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        if fusion_dim % num_heads:
            raise ValueError(f"fusion_dim ({fusion_dim}) must divide by num_heads ({num_heads})")
        self.fusion_dim, self.num_heads, self.dropout_rate = fusion_dim, num_heads, dropout_rate
        self.query_dense = keras.layers.Dense(fusion_dim, name="query")
        self.key_dense = keras.layers.Dense(fusion_dim, name="key")
        self.value_dense = keras.layers.Dense(fusion_dim, name="value")
        self.output_dense = keras.layers.Dense(fusion_dim, name="output")
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")

    def build(self, query_shape: Any, key_shape: Any) -> None:
        for layer in (self.query_dense, self.output_dense, self.norm):
            build_once(layer, query_shape)
        build_once(self.key_dense, key_shape)
        build_once(self.value_dense, key_shape)

    def _heads(self, flat: Any, batch: Any) -> Any:
        """[B*T, F] -> [B, H, T, F/H]."""
        heads = ops.reshape(flat, (batch, -1, self.num_heads, self.fusion_dim // self.num_heads))
        return ops.transpose(heads, (0, 2, 1, 3))

    def call(self, query: Any, key: Any, attention_mask: Any = None, training: Any = False):
        # Dense layers run on flattened [B*T, F] tokens: on TensorFlow a rank-3 matmul becomes
        # a tensordot of a dozen graph ops, which dominates the cost of a batch-1 call.
        batch, length = ops.shape(query)[0], ops.shape(query)[1]
        flat_query = ops.reshape(query, (-1, self.fusion_dim))
        flat_key = ops.reshape(key, (-1, self.fusion_dim))
        heads, weights = masked_attention(
            self._heads(self.query_dense(flat_query), batch),
            self._heads(self.key_dense(flat_key), batch),
            self._heads(self.value_dense(flat_key), batch),
            attention_mask,
        )
        merged = ops.reshape(ops.transpose(heads, (0, 2, 1, 3)), (-1, self.fusion_dim))
        update = self.dropout(self.output_dense(merged), training=training)
        context = self.norm(flat_query + update)
        return ops.reshape(context, (batch, length, self.fusion_dim)), weights

    def get_config(self) -> dict[str, Any]:
        names = ("fusion_dim", "num_heads", "dropout_rate")
        return layer_config(super().get_config(), self, *names)


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class CrossAttention(keras.layers.Layer):
    """Bidirectional cross-attention between face (static) and flow (dynamic) token sequences.

    Both streams are projected to `fusion_dim` and given a sinusoidal frame-index encoding, so
    attention can use both content and timing. Static queries attend over dynamic keys and
    dynamic queries over static keys; padded frames take no part on either side (their rows
    and columns of the weights are zero).
    """

    def __init__(
        self,
        static_dim: int = 512,
        dynamic_dim: int = 256,
        fusion_dim: int = 128,
        num_heads: int = 4,
        dropout_rate: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if fusion_dim % 2:
            raise ValueError(f"fusion_dim must be even for the positional code, got {fusion_dim}")
        self.static_dim, self.dynamic_dim = static_dim, dynamic_dim
        self.fusion_dim, self.num_heads, self.dropout_rate = fusion_dim, num_heads, dropout_rate
        self.static_projection = keras.layers.Dense(fusion_dim, name="static_projection")
        self.dynamic_projection = keras.layers.Dense(fusion_dim, name="dynamic_projection")
        block: dict[str, Any] = {
            "fusion_dim": fusion_dim,
            "num_heads": num_heads,
            "dropout_rate": dropout_rate,
        }
        self.static_to_dynamic = AttentionBlock(**block, name="static_to_dynamic")
        self.dynamic_to_static = AttentionBlock(**block, name="dynamic_to_static")

    def build(self, static_shape: Any, dynamic_shape: Any) -> None:
        static_shape, dynamic_shape = token_shape(static_shape), token_shape(dynamic_shape)
        for name, shape, dim in (
            ("static", static_shape, self.static_dim),
            ("dynamic", dynamic_shape, self.dynamic_dim),
        ):
            if shape[-1] is not None and shape[-1] != dim:
                raise ValueError(f"expected {name} features of size {dim}, got shape {shape}")
        build_once(self.static_projection, static_shape)
        build_once(self.dynamic_projection, dynamic_shape)
        static_tokens = (*static_shape[:-1], self.fusion_dim)
        dynamic_tokens = (*dynamic_shape[:-1], self.fusion_dim)
        build_once(self.static_to_dynamic, static_tokens, dynamic_tokens)
        build_once(self.dynamic_to_static, dynamic_tokens, static_tokens)

    def project(self, static: Any, dynamic: Any) -> tuple[Any, Any]:
        """Projected tokens plus the positional code: what both attention blocks see."""
        static_tokens = self._tokens(self.static_projection, static)
        return static_tokens, self._tokens(self.dynamic_projection, dynamic)

    def _tokens(self, projection: Any, features: Any) -> Any:
        batch, length = ops.shape(features)[0], ops.shape(features)[1]
        flat = projection(ops.reshape(features, (-1, features.shape[-1])))
        tokens = ops.reshape(flat, (batch, length, self.fusion_dim))
        return tokens + sinusoidal_positions(length, self.fusion_dim, self.compute_dtype)

    def call(
        self,
        static: Any,
        dynamic: Any,
        static_mask: Any = None,
        dynamic_mask: Any = None,
        training: Any = False,
        return_attention_scores: bool = False,
    ):
        static, static_mask = as_tokens(static, static_mask)
        dynamic, dynamic_mask = as_tokens(dynamic, dynamic_mask)
        static_tokens, dynamic_tokens = self.project(static, dynamic)
        s_valid = valid_mask(static_tokens, static_mask)
        d_valid = valid_mask(dynamic_tokens, dynamic_mask)
        s_to_d_mask = ops.logical_and(s_valid[:, None, :, None], d_valid[:, None, None, :])
        d_to_s_mask = ops.logical_and(d_valid[:, None, :, None], s_valid[:, None, None, :])
        static_ctx, s_to_d = self.static_to_dynamic(
            static_tokens, dynamic_tokens, attention_mask=s_to_d_mask, training=training
        )
        dynamic_ctx, d_to_s = self.dynamic_to_static(
            dynamic_tokens, static_tokens, attention_mask=d_to_s_mask, training=training
        )
        if return_attention_scores:
            return (static_ctx, dynamic_ctx), (s_to_d, d_to_s)
        return static_ctx, dynamic_ctx

    def get_config(self) -> dict[str, Any]:
        return layer_config(super().get_config(), self, *MODEL_DIMS)


def masked_mean(tokens: Any, mask: Any) -> Any:
    """Mean over valid frames; an all-padded sequence pools to zeros, not NaN."""
    if mask is None:
        return ops.mean(tokens, axis=1)
    weights = ops.expand_dims(ops.cast(mask, tokens.dtype), -1)
    total = ops.sum(tokens * weights, axis=1)
    return total / ops.maximum(ops.sum(weights, axis=1), 1.0)


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class FeatureFusion(keras.layers.Layer):
    """Pools each stream's context over valid frames and joins them into one video vector."""

    def __init__(self, fusion_dim: int = 128, dropout_rate: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fusion_dim, self.dropout_rate = fusion_dim, dropout_rate
        self.norm = keras.layers.LayerNormalization(epsilon=1e-6, name="norm")
        self.dropout = keras.layers.Dropout(dropout_rate)

    def build(self, static_shape: Any, dynamic_shape: Any) -> None:
        build_once(self.norm, (static_shape[0], 2 * self.fusion_dim))

    def call(self, static_ctx, dynamic_ctx, static_mask=None, dynamic_mask=None, training=False):
        pooled = ops.concatenate(
            [masked_mean(static_ctx, static_mask), masked_mean(dynamic_ctx, dynamic_mask)],
            axis=-1,
        )
        return self.dropout(self.norm(pooled), training=training)

    def get_config(self) -> dict[str, Any]:
        return layer_config(super().get_config(), self, "fusion_dim", "dropout_rate")


@keras.saving.register_keras_serializable(package=SERIALIZABLE_PACKAGE)
class PersonalityPredictionHead(keras.layers.Layer):
    """Dense-ReLU-Dropout-Dense(5, sigmoid): five scores in [0, 1], in O, C, E, A, N order."""

    def __init__(self, hidden_dim: int = 128, dropout_rate: float = 0.3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_dim, self.dropout_rate = hidden_dim, dropout_rate
        self.hidden = keras.layers.Dense(hidden_dim, activation="relu", name="hidden")
        self.dropout = keras.layers.Dropout(dropout_rate)
        self.scores = keras.layers.Dense(NUM_TRAITS, activation="sigmoid", name="scores")

    def build(self, input_shape: Any) -> None:
        build_once(self.hidden, input_shape)
        build_once(self.scores, (input_shape[0], self.hidden_dim))

    def call(self, features: Any, training: Any = False) -> Any:
        return self.scores(self.dropout(self.hidden(features), training=training))

    def get_config(self) -> dict[str, Any]:
        return layer_config(super().get_config(), self, "hidden_dim", "dropout_rate")
