"""The planted signal of the voice-model tests: labels that only the voice carries."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.audio.voice import AUDIO_TOKEN_DIM, audio_tokens, decode_audio_window
from tests.audio_clips import write_voices

#: A small model's dimensions.
SMALL = {"static_dim": 12, "dynamic_dim": 8, "fusion_dim": 16, "num_heads": 2}

FRAMES = 6
CLIPS, HELD_OUT = 80, 24
EPOCHS = 30  # full-batch steps


def planted_voice_data(root: Path) -> dict[str, np.ndarray]:
    """Audio tokens of espeak-ng utterances at random pitches, decoded from one WAV file;
    labels from the pitch alone; face and flow tokens of pure noise."""
    rng = np.random.default_rng(0)
    pitches = rng.integers(0, 100, CLIPS)
    path, spans = write_voices(root / "voices.wav", pitches)
    tokens = np.zeros((CLIPS, FRAMES, AUDIO_TOKEN_DIM), np.float32)
    masks = np.zeros((CLIPS, FRAMES), bool)
    for i, (start, end) in enumerate(spans):
        window = decode_audio_window(path, start, end)
        tokens[i], masks[i] = audio_tokens(window, np.linspace(start + 0.5, end - 0.5, FRAMES))
    labels = np.repeat((0.2 + 0.6 * pitches / 99.0)[:, None], 5, axis=1).astype(np.float32)
    noise = np.random.default_rng(1)
    return {
        "static": noise.normal(size=(CLIPS, FRAMES, 12)).astype(np.float32),
        "dynamic": noise.normal(size=(CLIPS, FRAMES, 8)).astype(np.float32),
        "audio": tokens,
        "audio_mask": masks,
        "labels": labels,
    }
