"""The artifact store: uploaded videos and per-stage arrays behind one fsspec URL.

A local folder on one machine, a shared volume or an object-store bucket across machines:
the stages only ever exchange URIs from here, never arrays in messages.

In a local folder, what the store creates (uploaded videos, stage arrays and the folders
holding them) is readable by the service user only by default: the storage mode `private`
gives files 0600 and folders 0700; `shared` (0640 and 0750) or octal file bits such as
`0660` open it to a group on a shared volume. A bucket's access is its own configuration.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import re
import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec
import numpy as np

from core.errors import ArtifactError, ContentMismatchError, StorageError

STORAGE_MODES = {"private": (0o600, 0o700), "shared": (0o640, 0o750)}
_CHUNK = 1 << 20
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


def storage_modes(setting: str) -> tuple[int, int]:
    """(file mode, folder mode) for a storage mode: `private`, `shared` or octal file bits.

    Octal bits such as `0660` give folders the same bits plus search wherever read is given
    (0770). The owner must keep read and write: the service reads back what it stores.
    """
    if setting in STORAGE_MODES:
        return STORAGE_MODES[setting]
    if re.fullmatch(r"0?[0-7]{3}", setting):
        file_mode = int(setting, 8)
        if file_mode & 0o600 == 0o600:
            return file_mode, file_mode | (file_mode & 0o444) >> 2
    raise ValueError(
        f"unknown storage mode {setting!r}: expected private, shared or octal file bits "
        "that keep the owner's read and write, such as 0640"
    )


class ArtifactStore:
    """Keys are relative paths such as `videos/<sha256>.mp4` or `features/<id>/static.npz`.

    `mode` sets the permissions of what a local store creates (see `storage_modes`).
    """

    def __init__(self, url: str, mode: str = "private") -> None:
        self.url = url.rstrip("/")
        self.file_mode, self.dir_mode = storage_modes(mode)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.protocol = (
            self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        )

    @property
    def is_local(self) -> bool:
        """Whether reads are local file reads (no network round trip per artifact)."""
        return self.protocol in ("file", "local")

    def uri(self, key: str) -> str:
        return f"{self.url}/{key.lstrip('/')}"

    def _path(self, uri: str) -> str:
        if not uri.startswith(self.url + "/"):
            raise ArtifactError(f"artifact {uri!r} is not under this store ({self.url})")
        return f"{self.root}/{uri[len(self.url) + 1 :]}"

    def exists(self, uri: str) -> bool:
        try:
            return bool(self.fs.exists(self._path(uri)))
        except OSError as exc:
            raise StorageError(f"cannot reach storage for {uri}: {exc}") from exc

    def put_file(self, local_path: str | Path, key: str) -> str:
        """Copy a local file in (skipped when the key already exists: keys are content hashes)."""
        uri = self.uri(key)
        path = self._path(uri)
        try:
            if self.fs.exists(path):
                return uri
            self._makedirs(self.fs._parent(path))
            tmp = f"{path}.partial"
            if self.is_local:
                with open(local_path, "rb") as source, self._open_local(tmp) as target:
                    shutil.copyfileobj(source, target, 1 << 20)
            else:
                self.fs.put_file(str(local_path), tmp)
            self.fs.mv(tmp, path)
        except OSError as exc:
            raise StorageError(f"cannot store {local_path} as {uri}: {exc}") from exc
        return uri

    def put_arrays(self, key: str, **arrays: np.ndarray) -> str:
        """Write named arrays as one uncompressed `.npz` (fast, exact, loadable without pickle)."""
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        uri = self.uri(key)
        path = self._path(uri)
        try:
            self._makedirs(self.fs._parent(path))
            opened = (
                self._open_local if self.is_local else functools.partial(self.fs.open, mode="wb")
            )
            with opened(f"{path}.partial") as handle:
                handle.write(buffer.getbuffer())
            self.fs.mv(f"{path}.partial", path)
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        return uri

    def _makedirs(self, folder: str) -> None:
        """`folder` and any missing parents; in a local store, those created get `dir_mode`."""
        if not self.is_local:
            self.fs.makedirs(folder, exist_ok=True)
            return
        missing = []
        path = Path(folder)
        while not path.exists() and path != path.parent:
            missing.append(path)
            path = path.parent
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another writer made it first
                path.mkdir(mode=self.dir_mode)
                path.chmod(self.dir_mode)  # what the umask took away

    def _open_local(self, path: str) -> io.BufferedWriter:
        """A local file opened for writing, created with `file_mode` (whatever the umask)."""
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, self.file_mode)
        os.fchmod(descriptor, self.file_mode)
        return os.fdopen(descriptor, "wb")

    def get_arrays(
        self,
        uri: str,
        names: Members | None = None,
        *,
        archive: Mapping[str, ArraySpec] | None = None,
    ) -> dict[str, np.ndarray]:
        """The named arrays of an `.npz` artifact (all of them by default).

        Naming the members a stage needs skips copying the others out of the archive. Given
        as a mapping to `ArraySpec`s, each member's `.npy` header is checked before its data
        is read, and an archive larger than its specs allow is refused unread; either raises
        `ArtifactError` with the spec's message. `archive` gives the specs of every member
        the archive may hold, for that size bound, when only some are read (default: the
        named ones).
        """
        specs = names if isinstance(names, Mapping) else None
        try:
            with self.fs.open(self._path(uri), "rb") as handle:
                if specs is not None:
                    _check_size(handle, archive if archive is not None else specs)
                data = handle.read()
        except FileNotFoundError as exc:
            raise ArtifactError(f"artifact {uri} is missing") from exc
        except (ValueError, zipfile.BadZipFile, EOFError, struct.error) as exc:
            raise ArtifactError(f"artifact {uri} is corrupt (damaged or truncated): {exc}") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}") from exc
        try:
            return read_npz(data, names)
        except KeyError as exc:
            raise ArtifactError(f"artifact {uri} lacks the array {exc}") from exc
        except (ValueError, OSError, zipfile.BadZipFile, EOFError, struct.error) as exc:
            raise ArtifactError(f"artifact {uri} is corrupt (damaged or truncated): {exc}") from exc

    @contextlib.contextmanager
    def local_copy(self, uri: str, sha256: str | None = None) -> Iterator[Path]:
        """A local path for `uri` (the file itself when the store is a local folder).

        With `sha256`, the bytes are hashed as they are read (a remote store's while they are
        copied) and `ContentMismatchError` is raised when they no longer hash to it: a file
        replaced after it was registered must not be analysed under the original's identity.
        """
        path = self._path(uri)
        if self.is_local:
            if not Path(path).exists():
                raise ArtifactError(f"artifact {uri} is missing")
            if sha256 is not None:
                try:
                    with open(path, "rb") as source:
                        _check_hash(uri, sha256, _hash_chunks(source))
                except FileNotFoundError as exc:
                    raise ArtifactError(f"artifact {uri} is missing") from exc
                except OSError as exc:
                    raise StorageError(f"cannot read {uri}: {exc}") from exc
            yield Path(path)
            return
        # A remote store (a bucket or shared service the operator configured): the decoder needs
        # a local file, so the stored video is copied next to this worker for the stage.
        with tempfile.TemporaryDirectory(prefix="oceanstream-") as tmp:
            target = Path(tmp) / Path(path).name
            try:
                if sha256 is None:
                    self.fs.get_file(path, str(target))
                else:
                    with self.fs.open(path, "rb") as source, open(target, "wb") as copy:
                        _check_hash(uri, sha256, _hash_chunks(source, copy))
            except FileNotFoundError as exc:
                raise ArtifactError(f"artifact {uri} is missing") from exc
            except OSError as exc:
                raise StorageError(f"cannot fetch {uri}: {exc}") from exc
            yield target

    def delete_prefix(self, key: str) -> None:
        path = self._path(self.uri(key))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)


def _hash_chunks(source: IO[bytes], copy: io.BufferedWriter | None = None) -> str:
    """SHA-256 of what `source` reads, written on to `copy` as it goes when one is given."""
    digest = hashlib.sha256()
    while chunk := source.read(_CHUNK):
        digest.update(chunk)
        if copy is not None:
            copy.write(chunk)
    return digest.hexdigest()


def _check_hash(uri: str, expected: str, found: str) -> None:
    if found != expected:
        raise ContentMismatchError(
            f"artifact {uri} hashes to sha256 {found[:16]}..., not the {expected[:16]}... "
            "it was registered with"
        )


def _check_size(handle: IO[bytes], specs: Mapping[str, ArraySpec]) -> None:
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
