"""The artifact store: uploaded videos and per-stage arrays behind one fsspec URL.

A local folder on one machine, a shared volume or an object-store bucket across machines:
the stages only ever exchange URIs from here, never arrays in messages.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np

from core.errors import ArtifactError, StorageError


class ArtifactStore:
    """Keys are relative paths such as `videos/<sha256>.mp4` or `features/<id>/static.npz`."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
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
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            tmp = f"{path}.partial"
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
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
            with self.fs.open(f"{path}.partial", "wb") as handle:
                handle.write(buffer.getbuffer())
            self.fs.mv(f"{path}.partial", path)
        except OSError as exc:
            raise StorageError(f"cannot write {uri}: {exc}") from exc
        return uri

    def get_arrays(self, uri: str, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """The named arrays of an `.npz` artifact (all of them by default).

        Naming the members a stage needs skips copying the others out of the archive.
        """
        try:
            with self.fs.open(self._path(uri), "rb") as handle:
                data = handle.read()
        except FileNotFoundError as exc:
            raise ArtifactError(f"artifact {uri} is missing") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {uri}: {exc}") from exc
        try:
            return read_npz(data, names)
        except KeyError as exc:
            raise ArtifactError(f"artifact {uri} lacks the array {exc}") from exc
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ArtifactError(f"artifact {uri} is corrupt (damaged or truncated): {exc}") from exc

    @contextlib.contextmanager
    def local_copy(self, uri: str) -> Iterator[Path]:
        """A local path for `uri` (the file itself when the store is a local folder)."""
        path = self._path(uri)
        if self.is_local:
            if not Path(path).exists():
                raise ArtifactError(f"artifact {uri} is missing")
            yield Path(path)
            return
        # A remote store (a bucket or shared service the operator configured): the decoder needs
        # a local file, so the stored video is copied next to this worker for the stage.
        with tempfile.TemporaryDirectory(prefix="oceanstream-") as tmp:
            target = Path(tmp) / Path(path).name
            try:
                self.fs.get_file(path, str(target))
            except FileNotFoundError as exc:
                raise ArtifactError(f"artifact {uri} is missing") from exc
            except OSError as exc:
                raise StorageError(f"cannot fetch {uri}: {exc}") from exc
            yield target

    def delete_prefix(self, key: str) -> None:
        path = self._path(self.uri(key))
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)


def read_npz(data: bytes, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The named arrays (all by default) of `.npz` bytes, read by `np.load` without pickle.

    Raises KeyError naming a missing array, ValueError (object arrays, which would need
    unpickling, included) or `zipfile.BadZipFile` (a member's CRC too) for a damaged archive.
    A hand-written reader once saved about 75 us per archive here; measured end to end it
    did not change the inference pool's throughput (docs/benchmarks.md), so `np.load` reads.
    """
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        wanted = archive.files if names is None else names
        missing = [name for name in wanted if name not in archive.files]
        if missing:
            raise KeyError(missing[0])
        try:
            return {name: archive[name] for name in wanted}
        except ValueError as exc:
            if "allow_pickle" in str(exc):
                raise ValueError("object arrays are refused (they would need unpickling)") from exc
            raise
