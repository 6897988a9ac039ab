"""FaceRes (HSE): a MobileNet-v1 face-identity network, rebuilt in Keras from its TF.js graph.

The npm package ships the network as a TensorFlow.js graph (`faceres.json`, the graph and a
weights manifest; `faceres.bin`, the weights as float16). The graph is Keras's MobileNet with
batch norm folded in, so the same layers are built here and filled from the file:

* a convolution's BN scale is folded into its kernel and the shift is an `Add`: the BN layer
  becomes gamma 1, beta the shift;
* a depthwise convolution keeps its BN as `Mul` then `Add`: gamma the scale, beta the shift.

Both BN layers use mean 0, variance 1 and epsilon 0, so they compute exactly ``x * gamma +
beta`` as the graph does. Above the trunk the graph has a 1024-d global average (the identity
descriptor), a 256-d ReLU layer `feats`, and two heads on it: `gender_pred` (sigmoid) and
`age_pred` (softmax over 100 years).

Input: [N, 224, 224, 3] RGB in raw 0..255; scaling to 0..1 collapses every face onto one
descriptor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

INPUT_SIZE = 224
DESCRIPTOR_DIM = 1024

# The graph's names for a block's weights, by Keras layer name.
_CONV = "{name}/convolution/merged_input"
_DEPTHWISE = "{name}/depthwise_kernel"
_BN_MUL = "{name}_bn/batchnorm_1/mul"
_BN_SUB = "{name}_bn/batchnorm_1/sub"
_RELU_CAP = "{name}_relu/Cast"


def read_tfjs_weights(graph_json: Path, weights_bin: Path) -> dict[str, np.ndarray]:
    """The weights of a TF.js graph model, by name, as float32 (int32 stays int32).

    The manifest lists each tensor's shape, dtype and quantization in the order its bytes lie
    in the weights file; the one-file float16/float32/int32 layout the package uses is read.
    """
    manifest = json.loads(graph_json.read_text())["weightsManifest"]
    if len(manifest) != 1 or len(manifest[0]["paths"]) != 1:
        raise ValueError(f"{graph_json.name}: expected one weights file, got {manifest!r:.200}")
    data = weights_bin.read_bytes()
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for spec in manifest[0]["weights"]:
        stored = (spec.get("quantization") or {}).get("dtype", spec["dtype"])
        dtype = {"float16": np.float16, "float32": np.float32, "int32": np.int32}[stored]
        count = int(np.prod(spec["shape"], dtype=np.int64))
        end = offset + count * np.dtype(dtype).itemsize
        array = np.frombuffer(data[offset:end], dtype=dtype).reshape(spec["shape"])
        weights[spec["name"]] = array.astype(np.int32 if dtype is np.int32 else np.float32)
        offset = end
    if offset != len(data):
        raise ValueError(f"weights file holds {len(data)} bytes; the manifest describes {offset}")
    return weights


def build_faceres() -> Any:
    """The FaceRes network with untrained weights: outputs (descriptor, gender, age)."""
    import keras

    trunk = keras.applications.MobileNet(
        input_shape=(INPUT_SIZE, INPUT_SIZE, 3), weights=None, include_top=False, pooling=None
    )
    config = trunk.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "BatchNormalization":
            layer["config"]["epsilon"] = 0.0  # BN is x * gamma + beta, as folded in the graph
    trunk = keras.Model.from_config(config)
    pooled = keras.layers.GlobalAveragePooling2D(name="global_pooling")(trunk.output)
    feats = keras.layers.Dense(256, activation="relu", name="feats")(pooled)
    gender = keras.layers.Dense(1, activation="sigmoid", name="gender_pred")(feats)
    age = keras.layers.Dense(100, activation="softmax", name="age_pred")(feats)
    return keras.Model(trunk.input, [pooled, gender, age], name="faceres")


def convert_faceres(graph_json: Path, weights_bin: Path) -> Any:
    """A Keras FaceRes model filled from the package's graph files; every weight is used."""
    weights = read_tfjs_weights(graph_json, weights_bin)
    used: set[str] = {"global_pooling/Mean/reduction_indices"}

    def take(name: str) -> np.ndarray:
        used.add(name)
        return weights[name]

    model = build_faceres()
    for layer in model.layers:
        name = layer.name
        kind = type(layer).__name__
        if kind == "Conv2D":
            layer.set_weights([take(_CONV.format(name=name))])
        elif kind == "DepthwiseConv2D":
            layer.set_weights([take(_DEPTHWISE.format(name=name))])
        elif kind == "BatchNormalization":
            _fill_batch_norm(layer, name.removesuffix("_bn"), weights, take)
        elif kind == "ReLU":
            cap = float(take(_RELU_CAP.format(name=name.removesuffix("_relu"))))
            floor = float(take(f"{name}/Const_1"))
            if (cap, floor) != (float(layer.max_value), 0.0):
                raise ValueError(f"{name}: the graph clips to [{floor}, {cap}], not ReLU6")
        elif kind == "Dense":
            layer.set_weights([take(f"{name}/kernel"), take(f"{name}/bias")])
    unused = sorted(set(weights) - used)
    if unused:
        raise ValueError(f"graph weights not used by the Keras model: {unused}")
    return model


def _fill_batch_norm(layer: Any, block: str, weights: dict[str, np.ndarray], take: Any) -> None:
    shift = take(_BN_SUB.format(name=block))
    scale_name = _BN_MUL.format(name=block)
    # Convolutions carry the scale in their kernel; depthwise ones keep it as a Mul.
    scale = take(scale_name) if scale_name in weights else np.ones_like(shift)
    layer.set_weights([scale, shift, np.zeros_like(shift), np.ones_like(shift)])


def embed(model: Any, faces: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """L2-normalised identity descriptors [N, 1024] of RGB face crops [N, 224, 224, 3] uint8."""
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ValueError(f"expected faces [N, {INPUT_SIZE}, {INPUT_SIZE}, 3]; got {faces.shape}")
    descriptors = []
    for start in range(0, len(faces), batch_size):
        batch = faces[start : start + batch_size].astype(np.float32)  # raw 0..255, not scaled
        descriptors.append(np.asarray(model(batch, training=False)[0]))
    out = np.concatenate(descriptors) if descriptors else np.zeros((0, DESCRIPTOR_DIM), np.float32)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
