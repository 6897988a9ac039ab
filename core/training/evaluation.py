"""Held-out evaluation: the benchmark's accuracy, the mean-prediction baseline and Pearson r.

First Impressions scores a model by its mean accuracy, 1 - MAE per trait. Predicting the
training mean for every clip already scores about 0.88 there, so every figure is printed next
to that baseline computed on the same clips. Predictions go through the bundle's serving
code (`encode_faces` on the frames with a face, `encode_flow`, `predict`), so the figures
describe the weights exactly as they are served.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from core.traits import TRAITS

if TYPE_CHECKING:
    from core.bundles.bundle import ModelBundle
    from core.training.data import ClipBatches

_ENCODE_CLIPS = 16  # clips per encoder call


def pearson_r(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson correlation, or None when either side is constant (r is undefined)."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    if denominator < 1e-12:
        return None
    return float((dx * dy).sum() / denominator)


def trait_metrics(
    labels: np.ndarray, predictions: np.ndarray, baseline: np.ndarray
) -> dict[str, Any]:
    """Per-trait accuracy (1 - MAE), baseline accuracy and Pearson r, with their means.

    `baseline` is the constant prediction (the training labels' mean) it is compared with.
    """
    labels = np.asarray(labels, np.float64)
    predictions = np.asarray(predictions, np.float64)
    constant = np.broadcast_to(np.asarray(baseline, np.float64), labels.shape)
    accuracy = 1.0 - np.abs(labels - predictions).mean(axis=0)
    base = 1.0 - np.abs(labels - constant).mean(axis=0)
    traits = {}
    for index, trait in enumerate(TRAITS):
        traits[trait] = {
            "accuracy": round(float(accuracy[index]), 4),
            "baseline": round(float(base[index]), 4),
            "pearson_r": _rounded(pearson_r(labels[:, index], predictions[:, index])),
        }
    rs = [t["pearson_r"] for t in traits.values() if t["pearson_r"] is not None]
    return {
        "clips": len(labels),
        "traits": traits,
        "mean": {
            "accuracy": round(float(accuracy.mean()), 4),
            "baseline": round(float(base.mean()), 4),
            "pearson_r": _rounded(float(np.mean(rs)) if rs else None),
        },
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def encode_clips(
    bundle: ModelBundle, clips: ClipBatches
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static tokens [N,T,Ds], dynamic tokens [N,T,Dd] and face masks [N,T], as served.

    Frames without a face get zero static tokens, as in
    `core.persons.segment_analysis.extract_static`. (The face CNN scores each crop on its own at
    inference, so encoding every frame and zeroing those gives the tokens serving computes.) Every
    call has the same shape, the last group of clips padded, so the compiled encoders are traced
    once.
    """
    meta = bundle.metadata
    count, frames = len(clips.refs), meta.num_frames
    static = np.zeros((count, frames, meta.static_dim), np.float32)
    dynamic = np.zeros((count, frames, meta.dynamic_dim), np.float32)
    masks = np.zeros((count, frames), bool)
    for start in range(0, count, _ENCODE_CLIPS):
        indices = list(range(start, min(start + _ENCODE_CLIPS, count)))
        batch = clips.batch_at(indices + [indices[-1]] * (_ENCODE_CLIPS - len(indices)))
        kept = len(indices)
        mask = batch["mask"][:kept]
        faces = bundle.encode_faces(batch["crops"].reshape(-1, *batch["crops"].shape[2:]))
        static[indices] = faces.reshape(_ENCODE_CLIPS, frames, -1)[:kept] * mask[..., None]
        flow = bundle.encode_flow(batch["flow"].reshape(-1, *batch["flow"].shape[2:]))
        dynamic[indices] = flow.reshape(_ENCODE_CLIPS, frames, -1)[:kept]
        masks[indices] = mask
    return static, dynamic, masks


def predict_tokens(
    bundle: ModelBundle,
    static: np.ndarray,
    dynamic: np.ndarray,
    masks: np.ndarray,
    batch_size: int = 32,
) -> np.ndarray:
    """Scores [N, 5] from token sequences, in batches of one shape (the last one padded)."""
    scores = []
    for start in range(0, len(static), batch_size):
        part = np.arange(start, min(start + batch_size, len(static)))
        padded = np.concatenate([part, np.full(batch_size - len(part), part[-1])])
        batch_scores, _ = bundle.predict(static[padded], dynamic[padded], masks[padded])
        scores.append(np.asarray(batch_scores, np.float64)[: len(part)])
    return np.concatenate(scores) if scores else np.zeros((0, len(TRAITS)))


def evaluate_bundle(
    bundle: ModelBundle, clips: ClipBatches, baseline: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """Metrics on `clips`, plus the accuracy with one stream's tokens shuffled across clips.

    Shuffling a stream keeps its distribution but breaks its link to each clip: a trait
    whose accuracy falls to the baseline then depended on that stream.
    """
    static, dynamic, masks = encode_clips(bundle, clips)
    labels = clips.labels
    metrics = trait_metrics(labels, predict_tokens(bundle, static, dynamic, masks), baseline)
    order = np.random.default_rng(seed).permutation(len(labels))
    shuffled_static = predict_tokens(bundle, static[order], dynamic, masks[order])
    shuffled_dynamic = predict_tokens(bundle, static, dynamic[order], masks)
    for name, predictions in (
        ("static_shuffled", shuffled_static),
        ("dynamic_shuffled", shuffled_dynamic),
    ):
        accuracy = 1.0 - np.abs(labels - predictions).mean(axis=0)
        metrics[name] = {t: round(float(a), 4) for t, a in zip(TRAITS, accuracy, strict=True)}
    return metrics


def metrics_table(metrics: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Rows (trait, accuracy, baseline, difference, Pearson r) for printing."""
    rows = []
    for name, values in [*metrics["traits"].items(), ("mean", metrics["mean"])]:
        r = values["pearson_r"]
        rows.append(
            (
                name,
                f"{values['accuracy']:.4f}",
                f"{values['baseline']:.4f}",
                f"{values['accuracy'] - values['baseline']:+.4f}",
                "n/a" if r is None else f"{r:+.3f}",
            )
        )
    return rows
