"""A small NumPy interpreter of TensorFlow.js graph models: the reference for conversions.

It runs the graph in ``model.json`` node by node, as the file describes it, with no Keras or
TensorFlow involved, so a converted Keras model can be compared with the source graph itself.
Only the ops the backbones use are known; any other op is an error naming it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.backbones.faceres import read_tfjs_weights

Op = Callable[[dict[str, Any], list[np.ndarray]], np.ndarray]


def run_graph(
    graph_json: Path, weights_bin: Path, feeds: dict[str, np.ndarray], outputs: list[str]
) -> list[np.ndarray]:
    """The values of ``outputs`` (node names) with the Placeholders fed from ``feeds``."""
    graph = json.loads(graph_json.read_text())
    nodes = {node["name"]: node for node in graph["modelTopology"]["node"]}
    values: dict[str, np.ndarray] = dict(read_tfjs_weights(graph_json, weights_bin))
    values.update({name: np.asarray(value, np.float32) for name, value in feeds.items()})

    def evaluate(name: str) -> np.ndarray:
        name = name.split(":")[0]
        stack = [name]
        while stack:  # iterative: the graph is deeper than Python's recursion limit likes
            current = stack[-1]
            if current in values:
                stack.pop()
                continue
            node = nodes[current]
            inputs = [i.split(":")[0] for i in node.get("input", [])]
            pending = [i for i in inputs if i not in values]
            if pending:
                stack.extend(pending)
                continue
            op = _OPS.get(node["op"])
            if op is None:
                raise NotImplementedError(f"op {node['op']} ({current}) is not interpreted")
            args = [values[i] for i in inputs]
            values[current] = op(node.get("attr", {}), args)
            stack.pop()
        return values[name]

    return [evaluate(name) for name in outputs]


def _text(attr: dict[str, Any], key: str) -> str:
    return base64.b64decode(attr[key]["s"]).decode()


def _strides(attr: dict[str, Any]) -> tuple[int, int]:
    strides = [int(s) for s in attr["strides"]["list"]["i"]]
    if _text(attr, "data_format") != "NHWC" or strides[0] != 1 or strides[3] != 1:
        raise NotImplementedError(f"layout {_text(attr, 'data_format')} strides {strides}")
    dilations = [int(d) for d in attr.get("dilations", {}).get("list", {}).get("i", [1, 1, 1, 1])]
    if dilations != [1, 1, 1, 1]:
        raise NotImplementedError(f"dilations {dilations}")
    return strides[1], strides[2]


def _patches(x: np.ndarray, kh: int, kw: int, strides: tuple[int, int], padding: str) -> np.ndarray:
    """[N, OH, OW, KH, KW, C] windows of NHWC ``x`` with TensorFlow's SAME/VALID padding."""
    _, h, w, _ = x.shape
    sh, sw = strides
    if padding == "SAME":
        oh, ow = -(-h // sh), -(-w // sw)
        ph = max((oh - 1) * sh + kh - h, 0)
        pw = max((ow - 1) * sw + kw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    elif padding != "VALID":
        raise NotImplementedError(f"padding {padding}")
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))
    return windows[:, ::sh, ::sw].transpose(0, 1, 2, 4, 5, 3)


def _conv2d(attr: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    x, kernel = args
    windows = _patches(x, kernel.shape[0], kernel.shape[1], _strides(attr), _text(attr, "padding"))
    return np.tensordot(windows, kernel, axes=([3, 4, 5], [0, 1, 2])).astype(np.float32)


def _depthwise(attr: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    x, kernel = args
    if kernel.shape[3] != 1:
        raise NotImplementedError(f"depth multiplier {kernel.shape[3]}")
    windows = _patches(x, kernel.shape[0], kernel.shape[1], _strides(attr), _text(attr, "padding"))
    return np.einsum("nhwijc,ijc->nhwc", windows, kernel[:, :, :, 0]).astype(np.float32)


def _fused_matmul(attr: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    a, b, *extra = args
    if attr.get("transpose_a", {}).get("b") or attr.get("transpose_b", {}).get("b"):
        raise NotImplementedError("transposed MatMul")
    out = a @ b
    for fused, arg in zip(_fused_ops(attr), [*extra, None, None], strict=False):
        if fused == "BiasAdd":
            out = out + arg
        elif fused == "Relu":
            out = np.maximum(out, 0)
        else:
            raise NotImplementedError(f"fused op {fused}")
    return out.astype(np.float32)


def _fused_ops(attr: dict[str, Any]) -> list[str]:
    return [
        base64.b64decode(s).decode() for s in attr.get("fused_ops", {}).get("list", {}).get("s", [])
    ]


def _mean(attr: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    x, axes = args
    keep = bool(attr.get("keep_dims", {}).get("b", False))
    return x.mean(axis=tuple(int(a) for a in np.atleast_1d(axes)), keepdims=keep, dtype=np.float32)


def _softmax(attr: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    shifted = np.exp(args[0] - args[0].max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _placeholder(attr: dict[str, Any], args: list[np.ndarray]) -> np.ndarray:
    raise KeyError("a Placeholder was not fed")


_OPS: dict[str, Op] = {
    "Placeholder": _placeholder,
    "Conv2D": _conv2d,
    "DepthwiseConv2dNative": _depthwise,
    "Add": lambda attr, args: args[0] + args[1],
    "AddV2": lambda attr, args: args[0] + args[1],
    "BiasAdd": lambda attr, args: args[0] + args[1],
    "Mul": lambda attr, args: args[0] * args[1],
    "Relu": lambda attr, args: np.maximum(args[0], 0),
    "Relu6": lambda attr, args: np.clip(args[0], 0, 6),
    "Minimum": lambda attr, args: np.minimum(args[0], args[1]),
    "Maximum": lambda attr, args: np.maximum(args[0], args[1]),
    "Mean": _mean,
    "MatMul": lambda attr, args: _fused_matmul(attr, args),
    "_FusedMatMul": _fused_matmul,
    "Sigmoid": lambda attr, args: (1 / (1 + np.exp(-args[0]))).astype(np.float32),
    "Softmax": _softmax,
    "Reshape": lambda attr, args: args[0].reshape([int(d) for d in args[1]]),
}


def installed_backbones(base: Path, names: tuple[str, ...] = ("faceres", "emotion")) -> Path:
    """A backbones folder under ``base`` with ``names`` installed by the real command.

    Test modules share one session's install by passing the session's base temp folder:
    the install is idempotent, so whichever module comes second finds it done.
    """
    import os
    import subprocess
    import sys

    directory = base / "backbones"
    env = {**os.environ, "OCEANSTREAM_BACKBONES": str(directory)}
    for name in names:
        done = subprocess.run(
            [sys.executable, "-m", "workers.cli", "backbones", "install", name],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stderr
    return directory
