"""Per-frame feature extractors: the face CNN (static tokens) and the flow CNN (dynamic tokens).

Both are small functional Keras CNNs, sized so that encoding one clip (T=16 crops) takes
milliseconds on a CPU through a compiled call: a strided stem, then strided depthwise-separable
blocks with batch normalisation, global average pooling and a dense projection. Input scaling is
part of each model, so callers pass pixels (0..255) or flow ([-1, 1]) as they come.
"""

from __future__ import annotations

import keras

# Channel widths of the separable blocks after the stem; each block halves the resolution.
_FACE_WIDTHS = (32, 64, 128, 128)
_FLOW_WIDTHS = (24, 48, 96)


def _conv_block(x: keras.KerasTensor, filters: int, name: str, separable: bool = True):
    """Strided 3x3 (separable) convolution, batch norm and ReLU: halves H and W.

    He initialisation keeps activations at unit scale through the ReLUs, so even the untrained
    default bundle produces tokens of order one rather than vanishing ones. Keras counts a
    depthwise kernel's fan-in as 9 * channels although each output sees only 9 inputs, hence
    the channel factor in its scale.
    """
    options: dict[str, object] = {"strides": 2, "padding": "same", "use_bias": False}
    if separable:
        channels = x.shape[-1]
        depthwise = keras.initializers.VarianceScaling(
            2.0 * channels, distribution="untruncated_normal"
        )
        conv = keras.layers.SeparableConv2D(
            filters,
            3,
            depthwise_initializer=depthwise,
            pointwise_initializer="he_normal",
            name=f"{name}_conv",
            **options,
        )
    else:
        conv = keras.layers.Conv2D(
            filters, 3, kernel_initializer="he_normal", name=f"{name}_conv", **options
        )
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(conv(x))
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _encoder(
    inputs: keras.KerasTensor,
    x: keras.KerasTensor,
    stem: int,
    widths: tuple[int, ...],
    embed_dim: int,
    name: str,
) -> keras.Model:
    x = _conv_block(x, stem, "stem", separable=False)
    for index, width in enumerate(widths):
        x = _conv_block(x, width, f"block{index + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(embed_dim, name="embedding")(x)
    return keras.Model(inputs, outputs, name=name)


def build_face_encoder(embed_dim: int = 512, crop_size: int = 112) -> keras.Model:
    """Face CNN: [N, crop, crop, 3] float32 RGB in 0..255 -> [N, embed_dim] static tokens."""
    inputs = keras.Input((crop_size, crop_size, 3), name="face_crops")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    return _encoder(inputs, x, 16, _FACE_WIDTHS, embed_dim, "face_encoder")


def build_flow_encoder(embed_dim: int = 256, size: int = 112) -> keras.Model:
    """Flow CNN: [N, size, size, 2] float32 (dx, dy) in [-1, 1] -> [N, embed_dim] dynamic tokens.

    `core.video.flow` already delivers zero-centred values in [-1, 1], so no rescaling is needed;
    the stem's batch normalisation adapts to the typical displacement scale during training.
    """
    inputs = keras.Input((size, size, 2), name="flow")
    return _encoder(inputs, inputs, 16, _FLOW_WIDTHS, embed_dim, "flow_encoder")
