"""The personality model: layers, the fusion model, encoders, compiled calls and batching.

`from core.model import CompletePersonalityModel, get_attention_weights, plot_attention_map, ...`
is the model's agreed import path. The names resolve on first use, so importing a light part of
the package (`core.model.batching`, which the CPU stages use) loads no Keras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.model.personality import (
        AttentionBlock,
        AudioEncoder,
        CompletePersonalityModel,
        CrossAttention,
        FeatureFusion,
        PersonalityPredictionHead,
        VoiceAttention,
        get_attention_weights,
        masked_attention,
        plot_attention_map,
        sinusoidal_positions,
    )

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("core.model.personality"), name)
    raise AttributeError(f"module 'core.model' has no attribute {name!r}")
