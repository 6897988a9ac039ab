"""Compact storage of attention maps.

A map is [2 directions, heads, T, T] attention weights in [0, 1]. float16 keeps about three
significant digits, plenty for a heat map, at half the size of float32; zlib then squeezes the
many near-equal weights. The byte order is fixed (little-endian) so a map written on one machine
decodes on any other.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

#: Storage dtypes by name; the name is what the `attention_maps.dtype` column holds.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
}
DEFAULT_DTYPE = "float16"
_COMPRESSION_LEVEL = 6


def encode_attention(array: np.ndarray, dtype: str = DEFAULT_DTYPE) -> tuple[bytes, list[int], str]:
    """Encode `array` as (zlib-compressed bytes, shape, dtype name) for `attention_maps`."""
    storage = _storage_dtype(dtype)
    values = np.asarray(array)
    if not np.issubdtype(values.dtype, np.floating) and not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"attention must be a numeric array, got dtype {values.dtype}")
    raw = np.ascontiguousarray(values, dtype=storage).tobytes()
    return zlib.compress(raw, _COMPRESSION_LEVEL), [int(n) for n in values.shape], dtype


def decode_attention(data: bytes, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Decode what `encode_attention` produced; returns a writable float32 array of `shape`."""
    storage = _storage_dtype(dtype)
    raw = zlib.decompress(data)
    dims = tuple(int(n) for n in shape)
    expected = int(np.prod(dims, dtype=np.int64)) * storage.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"attention data holds {len(raw)} bytes, expected {expected} for shape {dims} "
            f"as {dtype}"
        )
    return np.frombuffer(raw, dtype=storage).reshape(dims).astype(np.float32)


def _storage_dtype(name: str) -> np.dtype:
    try:
        return STORAGE_DTYPES[name]
    except KeyError:
        raise ValueError(
            f"unsupported attention dtype {name!r}; expected one of {sorted(STORAGE_DTYPES)}"
        ) from None
