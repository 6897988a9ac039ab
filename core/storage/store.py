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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import fsspec
import numpy as np

from core.errors import ArtifactError, ContentMismatchError, StorageError
from core.storage.npz import ArraySpec, Members, check_size, read_npz

STORAGE_MODES = {"private": (0o600, 0o700), "shared": (0o640, 0o750)}
_CHUNK = 1 << 20
#: Block size of a remote video's read cache: one ranged GET per block, a segment's window
#: of a phone video (8-16 Mbit/s) spans tens of blocks, its index one or two.
VIDEO_BLOCK_BYTES = 1 << 20
#: Blocks a remote video's read cache keeps (the index stays cached while the window streams).
VIDEO_CACHE_BLOCKS = 16


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
        """Copy a local file in (skipped when the key already exists: keys are content hashes).

        An existing object of another size than the file is not the same content (a copy
        cut off, or replaced): it is written over.
        """
        uri = self.uri(key)
        path = self._path(uri)
        try:
            if self.fs.exists(path) and self.fs.size(path) == os.path.getsize(local_path):
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
                    check_size(handle, archive if archive is not None else specs)
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

    def stamp(self, uri: str) -> StoredStamp:
        """What the store says of `uri` now: its size and version (one metadata request)."""
        path = self._path(uri)
        try:
            if self.is_local:
                stat = os.stat(path)
                # ctime moves on every write and cannot be set back, unlike mtime.
                version = f"ctime_ns={stat.st_ctime_ns};ino={stat.st_ino}"
                return StoredStamp(stat.st_size, version)
            info = self.fs.info(path, refresh=True) if self._refreshes else self.fs.info(path)
        except FileNotFoundError as exc:
            raise ArtifactError(f"artifact {uri} is missing") from exc
        except Exception as exc:  # OSError, or a client library's connection error
            raise StorageError(f"cannot reach storage for {uri}: {exc}") from exc
        return StoredStamp(int(info["size"]), _object_version(info))

    @property
    def _refreshes(self) -> bool:
        # s3fs and gcsfs cache listings; `refresh` asks the store itself.
        return self.protocol in ("s3", "s3a", "gs", "gcs")

    @contextlib.contextmanager
    def open_video(self, uri: str, stamp: StoredStamp | None = None) -> Iterator[StoredVideo]:
        """A stored video for ranged reads, checked against the `stamp` taken when it was stored.

        The check is one metadata request: a video rewritten since it was stored (another
        size, ETag, generation or modification time) raises `ContentMismatchError` before a
        byte of it is read. Keys are content hashes, so an unchanged object still holds the
        content hashed at upload. Without a stamp (a video stored before stamps were kept)
        nothing is checked here.
        """
        now = self.stamp(uri)
        if stamp is not None and now != stamp:
            raise ContentMismatchError(
                f"artifact {uri} changed after it was stored (now {now.size} bytes, "
                f"{now.version}; stored as {stamp.size} bytes, {stamp.version})"
            )
        video = StoredVideo(self, uri, now.size)
        try:
            yield video
        finally:
            video.close()

    def _open_ranged(self, uri: str) -> IO[bytes]:
        """`uri` opened for reading: a local file, or a remote object read through a block cache."""
        path = self._path(uri)
        try:
            if self.is_local:
                return open(path, "rb", buffering=0)
            return self.fs.open(  # type: ignore[no-any-return]
                path,
                "rb",
                block_size=VIDEO_BLOCK_BYTES,
                cache_type="blockcache",
                cache_options={"maxblocks": VIDEO_CACHE_BLOCKS},
            )
        except FileNotFoundError as exc:
            raise ArtifactError(f"artifact {uri} is missing") from exc
        except Exception as exc:  # OSError, or a client library's connection error
            raise StorageError(f"cannot read {uri}: {exc}") from exc

    def delete_prefix(self, key: str) -> None:
        path = self._path(self.uri(key))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)


@dataclass(frozen=True)
class StoredStamp:
    """A stored object's size and version, as its store reports them.

    The version is what the store changes whenever the object is written: the ETag of an S3
    object, the generation of a GCS object, the modification time (and inode) of a file.
    """

    size: int
    version: str

    def to_dict(self) -> dict[str, int | str]:
        return {"size": self.size, "version": self.version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> StoredStamp | None:
        if not data:
            return None
        return cls(int(data["size"]), str(data["version"]))


def _object_version(info: Mapping[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "VersionId"):
        if info.get(key):
            return f"{key}={str(info[key]).strip(chr(34))}"
    for key in ("mtime", "LastModified", "last_modified", "updated"):
        if info.get(key):
            return f"{key}={info[key]}"
    return "unversioned"


class StoredVideo:
    """A video in the store, opened as seekable files by the decoders (PyAV, OpenCV).

    Each `open` gives a new file; `bytes_read` counts what all of them fetched from the
    store: for a local file the bytes the decoders read, for a remote object the bytes of
    the blocks its cache requested (ranged GETs). `str()` is the object's URI, which names
    it in error messages.
    """

    def __init__(self, store: ArtifactStore, uri: str, size: int) -> None:
        self.store = store
        self.uri = uri
        self.size = size
        self._files: list[_CountingFile] = []
        self._closed_bytes = 0

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"StoredVideo({self.uri!r}, {self.size} bytes)"

    def open(self) -> io.BufferedIOBase:
        file = _CountingFile(self.store._open_ranged(self.uri))
        self._files.append(file)
        return file

    @property
    def bytes_read(self) -> int:
        return self._closed_bytes + sum(file.fetched for file in self._files)

    def close(self) -> None:
        for file in self._files:
            self._closed_bytes += file.fetched
            file.close()
        self._files.clear()


class _CountingFile(io.BufferedIOBase):
    """A read-only file that counts the bytes it fetches from the store beneath."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._delivered = 0
        self.name = str(getattr(raw, "full_name", None) or getattr(raw, "name", "a stored video"))

    @property
    def fetched(self) -> int:
        cache = getattr(self._raw, "cache", None)
        requested = getattr(cache, "total_requested_bytes", None)
        return self._delivered if requested is None else int(requested)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._raw.read(-1 if size is None else size)
        except Exception as exc:
            # Whatever the filesystem raises (s3fs lets botocore's connection errors through);
            # the decoders re-raise it: an outage, retried, not a bad video.
            raise StorageError(f"cannot read {self.name}: {exc}") from exc
        self._delivered += len(data)
        return data

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return self._raw.seek(offset, whence)
        except Exception as exc:
            raise StorageError(f"cannot read {self.name}: {exc}") from exc

    def tell(self) -> int:
        return self._raw.tell()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


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
