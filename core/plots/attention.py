"""Drawing cross-attention maps as PNG files.

Imports only NumPy and matplotlib (its Agg canvas, never pyplot), so drawing a stored map
does not load TensorFlow or Keras, and calling it never changes matplotlib's global backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# Row labels for the two directions of `get_attention_weights` / stored maps: query, key.
DIRECTIONS = (("face", "flow"), ("flow", "face"))
# A model with the voice (`audio_dim`) adds a third direction: voice queries over flow keys.
VOICE_DIRECTION = ("voice", "flow")
_SHAPES = "[B, 2, H, T, T], [2, H, T, T] or [H, T, T] (3 directions with the voice)"


def plot_attention_map(
    weights: Any, save_path: str | Path, title: str | None = None, warning: str | None = None
) -> list[Path]:
    """Draw attention weights as PNG files and return the paths written, in order.

    Accepts what `get_attention_weights` returns and what is stored per video:

    - [2, H, T, T] (one video) or [1, 2, H, T, T] (a batch of one): one figure at `save_path`
      itself, a row per direction (face queries over flow keys, then flow over face) and a
      column per head. [3, H, T, T] (a model with the voice) adds a third row, voice queries
      over flow keys.
    - [H, T, T]: one direction; one figure at `save_path`, a single row.
    - [B, 2, H, T, T] with B > 1: one figure per sample, `<stem>_0<suffix>` ...
      `<stem>_<B-1><suffix>` next to `save_path` (samples are separate videos, so they are
      not averaged), each titled with its index.

    All panels of a figure share one colour scale. `warning` (for example that the model is
    untrained) is written in red, bold, under every figure. Raises ValueError for any other
    shape.
    """
    maps = np.asarray(weights, dtype=np.float32)
    save_path = Path(save_path)
    if maps.ndim == 5 and maps.shape[0] == 1:
        maps = maps[0]
    if maps.ndim == 3:
        maps = maps[None]
        rows: tuple[tuple[str, str], ...] = (("query", "key"),)
    elif maps.ndim in (4, 5) and maps.shape[-4] in (2, 3):
        rows = DIRECTIONS if maps.shape[-4] == 2 else (*DIRECTIONS, VOICE_DIRECTION)
    else:
        raise ValueError(f"expected attention {_SHAPES}, got shape {tuple(maps.shape)}")
    if maps.size == 0:
        raise ValueError(f"expected non-empty attention {_SHAPES}, got shape {maps.shape}")
    save_path.parent.mkdir(parents=True, exist_ok=True)
    if maps.ndim == 4:
        _draw(maps, rows, save_path, title, warning)
        return [save_path]
    paths = []
    suffix = save_path.suffix or ".png"
    for index, sample in enumerate(maps):
        path = save_path.with_name(f"{save_path.stem}_{index}{suffix}")
        _draw(sample, rows, path, f"{title} [{index}]" if title else f"sample {index}", warning)
        paths.append(path)
    return paths


def _draw(
    maps: np.ndarray,
    rows: tuple[tuple[str, str], ...],
    path: Path,
    title: str | None,
    warning: str | None = None,
) -> None:
    """One figure: maps [rows, H, Tq, Tk], a row per direction and a column per head."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    num_rows, num_heads = maps.shape[0], maps.shape[1]
    figure = Figure(figsize=(3.2 * num_heads + 1.2, 3.2 * num_rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(num_rows, num_heads, squeeze=False)
    vmax = max(float(maps.max()), 1e-6)
    images = []
    for row, (query, key) in enumerate(rows):
        for head in range(num_heads):
            axis = axes[row, head]
            images.append(axis.imshow(maps[row, head], vmin=0.0, vmax=vmax, cmap="viridis"))
            axis.set_title(f"{query} → {key}, head {head}")
            axis.set_xlabel(f"{key} frame (key)")
            if head == 0:
                axis.set_ylabel(f"{query} frame (query)")
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    figure.colorbar(images[0], ax=axes.ravel().tolist(), label="attention weight", shrink=0.8)
    figure.suptitle(title or "cross-attention")
    if warning:
        figure.supxlabel(warning, color="tab:red", fontweight="bold")
    figure.savefig(path, dpi=100)
