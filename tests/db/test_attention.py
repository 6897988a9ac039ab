"""Attention maps are stored as zlib-compressed little-endian float16."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from db.attention import decode_attention, encode_attention
from tests.support.rows import attention_map


def test_round_trip_keeps_shape_and_values_within_float16_precision() -> None:
    weights = attention_map(seed=1)
    data, shape, dtype = encode_attention(weights)
    assert (shape, dtype) == ([2, 4, 16, 16], "float16")
    decoded = decode_attention(data, shape, dtype)
    assert decoded.shape == weights.shape
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded, weights, rtol=1e-3, atol=1e-4)


def test_stored_bytes_are_compressed_float16() -> None:
    weights = attention_map(seed=2)
    data, _, _ = encode_attention(weights)
    raw = zlib.decompress(data)
    assert len(raw) == weights.size * 2
    assert np.array_equal(np.frombuffer(raw, "<f2"), weights.astype("<f2").reshape(-1))
    # A map whose rows are mostly equal (frames without a face) compresses well.
    flat = np.full((2, 4, 16, 16), 1 / 16, dtype=np.float32)
    assert len(encode_attention(flat)[0]) < flat.size * 2 / 10


def test_decoded_array_is_writable_and_independent_of_the_bytes() -> None:
    data, shape, dtype = encode_attention(attention_map())
    decoded = decode_attention(data, shape, dtype)
    decoded[0, 0, 0, 0] = 5.0
    assert decode_attention(data, shape, dtype)[0, 0, 0, 0] != 5.0


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 1, 1), (2, 8, 3, 3), (0,)])
def test_round_trip_of_other_shapes(shape: tuple[int, ...]) -> None:
    weights = np.linspace(0, 1, int(np.prod(shape)), dtype=np.float64).reshape(shape)
    data, stored_shape, dtype = encode_attention(weights)
    assert tuple(stored_shape) == shape
    np.testing.assert_allclose(decode_attention(data, stored_shape, dtype), weights, atol=1e-3)


def test_float32_storage_is_exact() -> None:
    weights = attention_map(seed=3)
    data, shape, dtype = encode_attention(weights, dtype="float32")
    assert dtype == "float32"
    assert np.array_equal(decode_attention(data, shape, dtype), weights)


def test_mismatched_shape_is_refused() -> None:
    data, _, dtype = encode_attention(attention_map())
    with pytest.raises(ValueError, match="expected"):
        decode_attention(data, [2, 4, 16, 15], dtype)


def test_unknown_dtype_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported attention dtype"):
        encode_attention(attention_map(), dtype="int8")
    with pytest.raises(ValueError, match="unsupported attention dtype"):
        decode_attention(b"", [0], "float64")


def test_non_numeric_array_is_refused() -> None:
    with pytest.raises(TypeError, match="numeric"):
        encode_attention(np.array(["a", "b"]))
