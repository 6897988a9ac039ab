"""Stored arrays: `.npz` archives read without NumPy's per-call overhead, checked first.

`read_npz` reads the archives the stages write (`np.savez`, stored or deflated members);
`np.load` costs several times more per small archive, which the inference pool pays per
video. An `ArraySpec` says what a member may be; `check_size` and the member reads check
each `.npy` header (and the archive's size) before any data is read, so a stored archive of
the wrong shape or size fails its video with the spec's message instead of some unrelated
error or gigabytes of memory.
"""

from __future__ import annotations

import functools
import io
import struct
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO

import numpy as np

from core.errors import ArtifactError

# Room an archive takes besides its arrays' data: zip and `.npy` headers, per member.
_MEMBER_OVERHEAD = 4096

#: One axis of an `ArraySpec`: an exact size, or (its name, the most it may be).
Axis = int | tuple[str, int]


@dataclass(frozen=True)
class ArraySpec:
    """What a stored array may be, checked from its `.npy` header before its data is read.

    A stored archive is data written by another process: one of the wrong shape would make
    the stage that loads it fail in some unrelated place (or take gigabytes of memory) on
    every delivery. Checked against the header, it fails its video once, with this message.
    """

    label: str  # what the array is, in messages: "frames", "face tokens"
    shape: tuple[Axis, ...]
    dtypes: tuple[str, ...]

    @property
    def bounded(self) -> bool:
        return any(isinstance(axis, tuple) for axis in self.shape)

    @property
    def max_bytes(self) -> int:
        """The most data bytes an array meeting this spec holds."""
        count = 1
        for axis in self.shape:
            count *= axis[1] if isinstance(axis, tuple) else axis
        return count * max(np.dtype(name).itemsize for name in self.dtypes)

    def describe(self) -> str:
        """`(16, H<=640, W<=640, 3) uint8`."""
        axes = [f"{a[0]}<={a[1]}" if isinstance(a, tuple) else str(a) for a in self.shape]
        inner = ", ".join(axes) + ("," if len(axes) == 1 else "")
        return f"({inner}) {' or '.join(self.dtypes)}"

    def problem(self, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
        """Why an array of `shape` and `dtype` does not meet this spec, or None."""
        fits = len(shape) == len(self.shape) and all(
            size <= axis[1] if isinstance(axis, tuple) else size == axis
            for size, axis in zip(shape, self.shape, strict=False)
        )
        if fits and dtype.name in self.dtypes:
            return None
        expected = f"at most {self.describe()}" if self.bounded else self.describe()
        verb = "have" if self.label.endswith("s") else "has"
        return f"stored {self.label} {verb} shape {shape} {dtype}, expected {expected}; not loaded"


#: Members to read: names, or names with the spec each must meet (see `ArtifactStore.get_arrays`).
Members = Iterable[str] | Mapping[str, ArraySpec]


def check_size(handle: IO[bytes], specs: Mapping[str, ArraySpec]) -> None:
    """Refuse, unread, an archive larger than its specs allow, naming the array that is."""
    size = handle.seek(0, io.SEEK_END)
    handle.seek(0)
    limit = sum(spec.max_bytes + _MEMBER_OVERHEAD for spec in specs.values())
    if size <= limit:
        return
    with zipfile.ZipFile(handle) as archive:  # reads the headers only
        for info in archive.infolist():
            spec = specs.get(info.filename.removesuffix(".npy"))
            if spec is not None:
                with archive.open(info) as member:
                    shape, _, dtype = _stream_header(member)
                _refuse(spec, shape, dtype)
    raise ValueError(f"the archive takes {size} bytes, more than its arrays may ({limit})")


def _refuse(spec: ArraySpec, shape: tuple[int, ...], dtype: np.dtype) -> None:
    problem = _problem(spec, shape, dtype)
    if problem is not None:
        raise ArtifactError(problem)


@functools.lru_cache(maxsize=256)
def _problem(spec: ArraySpec, shape: tuple[int, ...], dtype: np.dtype) -> str | None:
    """`spec.problem`, once per distinct header: the pool reads the same few per video."""
    return spec.problem(shape, dtype)


def read_npz(data: bytes, names: Members | None = None) -> dict[str, np.ndarray]:
    """The named arrays (all by default) of `.npz` bytes, as `np.load` reads them, faster.

    The inference pool reads two small archives per video, and `np.load` spends most of its
    time on per-member bookkeeping (about 100 us an archive here) rather than on the data.
    Members stored uncompressed, as `put_arrays` writes them, are sliced straight out of the
    bytes (their CRC still checked) and their headers parsed once per distinct header;
    anything else (a compressed member) is read from its stream, header first. Never
    unpickles. Raises KeyError for a missing name and ValueError (or `zipfile.BadZipFile`)
    for a damaged archive. Measured against `np.load`, it is worth 15-18% of the saturated
    inference pool's throughput on a 2-core host (docs/benchmarks.md).

    `names` given as a mapping to `ArraySpec`s has each member's header checked before its
    data is copied or decompressed (`ArtifactError` for one that does not meet its spec).
    """
    view = memoryview(data)
    specs = names if isinstance(names, dict | Mapping) else None
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        arrays = {}
        for name in members if names is None else names:
            info = members[name]
            spec = None if specs is None else specs[name]
            if info.compress_type != zipfile.ZIP_STORED:
                with archive.open(info) as handle:
                    arrays[name] = _stream_array(handle, spec)
                continue
            if data[info.header_offset : info.header_offset + 4] != b"PK\x03\x04":
                raise zipfile.BadZipFile(f"member {info.filename!r} has no local header")
            name_length, extra_length = struct.unpack_from("<HH", data, info.header_offset + 26)
            start = info.header_offset + 30 + name_length + extra_length
            member = view[start : start + info.file_size]
            if len(member) != info.file_size or zlib.crc32(member) != info.CRC:
                raise zipfile.BadZipFile(f"member {info.filename!r} is truncated or damaged")
            arrays[name] = _npy_array(member, spec)
    return arrays


def _stream_header(handle: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) from the head of a `.npy` stream, its data left unread."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)


def _stream_array(handle: IO[bytes], spec: ArraySpec | None) -> np.ndarray:
    """The array of a `.npy` stream (a compressed member), its header checked before its data.

    The check comes first, so a compressed archive that would inflate to gigabytes is refused
    after a few hundred bytes.
    """
    shape, fortran_order, dtype = _stream_header(handle)
    if spec is not None:
        _refuse(spec, shape, dtype)
    if dtype.hasobject:
        raise ValueError("object arrays are refused (they would need unpickling)")
    count = int(np.prod(shape, dtype=np.int64))
    data = handle.read(count * dtype.itemsize)
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"a member holds {len(data)} bytes of its {count * dtype.itemsize}")
    flat = np.frombuffer(data, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran_order else "C").copy()


def _npy_array(member: memoryview, spec: ArraySpec | None = None) -> np.ndarray:
    """A writable copy of the array in `.npy` bytes (its header checked against `spec`)."""
    prefix = bytes(member[:12])
    if prefix[:6] != b"\x93NUMPY":
        raise ValueError("not a .npy member")
    if prefix[6] not in (1, 2):  # a format version this fast path does not know
        return _stream_array(io.BytesIO(member), spec)
    if prefix[6] == 1:
        (length,) = struct.unpack_from("<H", prefix, 8)
        header_end = 10 + length
    else:
        (length,) = struct.unpack_from("<I", prefix, 8)
        header_end = 12 + length
    shape, fortran_order, dtype = _npy_header(bytes(member[:header_end]))
    if spec is not None:
        _refuse(spec, shape, dtype)
    if dtype.hasobject:
        raise ValueError("object arrays are refused (they would need unpickling)")
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.frombuffer(member, dtype=dtype, count=count, offset=header_end)
    return flat.reshape(shape, order="F" if fortran_order else "C").copy()


@functools.lru_cache(maxsize=256)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of a `.npy` header; feature sets repeat a few headers."""
    handle = io.BytesIO(header)
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(handle)
    return np.lib.format.read_array_header_2_0(handle)
