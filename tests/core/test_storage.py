"""`ArtifactStore` arrays: `put_arrays`/`get_arrays` round trips and damaged archives.

`get_arrays` reads `.npz` members itself (the inference pool reads two archives per video);
whatever it returns must equal what `np.load` returns, and damage must be reported, not
returned as data.
"""

from __future__ import annotations

import hashlib
import io
import stat
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.errors import ArtifactError, ContentMismatchError
from core.storage.artifacts import dynamic_specs, frames_specs, static_specs
from core.storage.npz import read_npz
from core.storage.store import ArtifactStore


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(f"file://{tmp_path / 'store'}")


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "tokens": rng.standard_normal((16, 512)).astype(np.float32),
        "mask": rng.random(16) > 0.5,
        "frames": rng.integers(0, 255, (2, 9, 7, 3), dtype=np.uint8),
        "fortran": np.asfortranarray(rng.standard_normal((5, 3))),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), np.int16),
        "big_endian": np.arange(6, dtype=">i4").reshape(2, 3),
        "many_dims": np.zeros((1,) * 30, np.float32),  # a long header
    }


def test_round_trip_equals_what_np_load_reads(store: ArtifactStore) -> None:
    expected = arrays()
    uri = store.put_arrays("work/a.npz", **expected)
    loaded = store.get_arrays(uri)
    assert set(loaded) == set(expected)
    for name, array in expected.items():
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape
        np.testing.assert_array_equal(loaded[name], array)
        assert loaded[name].flags.writeable
    assert list(store.get_arrays(uri, names=("mask",))) == ["mask"]


def test_compressed_and_version_two_members_are_read_too() -> None:
    expected = arrays()
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **expected)
    for name, array in read_npz(buffer.getvalue()).items():
        np.testing.assert_array_equal(array, expected[name])
    member = io.BytesIO()
    np.lib.format.write_array(member, expected["tokens"], version=(2, 0))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("tokens.npy", member.getvalue())
    np.testing.assert_array_equal(read_npz(archive.getvalue())["tokens"], expected["tokens"])


def test_a_missing_array_is_named(store: ArtifactStore) -> None:
    uri = store.put_arrays("work/b.npz", tokens=np.zeros(3))
    with pytest.raises(ArtifactError, match="lacks the array 'mask'"):
        store.get_arrays(uri, names=("tokens", "mask"))


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda data: data[: len(data) // 2], "corrupt"),  # truncated: no central directory
        (lambda data: data[:200] + bytes([data[200] ^ 0xFF]) + data[201:], "damaged"),  # bit rot
        (lambda data: b"PK\x03\x04 not really a zip", "corrupt"),
    ],
)
def test_damaged_archives_are_reported_not_returned(store: ArtifactStore, damage, words) -> None:
    uri = store.put_arrays("work/c.npz", tokens=np.arange(1000, dtype=np.float32))
    path = Path(store._path(uri))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ArtifactError, match=words):
        store.get_arrays(uri)


def test_object_arrays_are_refused_without_unpickling() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, things=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        read_npz(buffer.getvalue())


def modes(root: Path) -> dict[str, int]:
    """Permission bits of `root` and everything under it, by path relative to `root`."""
    return {
        str(path.relative_to(root)): stat.S_IMODE(path.stat().st_mode)
        for path in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize(
    ("setting", "file_mode", "dir_mode"),
    [
        (None, 0o600, 0o700),
        ("private", 0o600, 0o700),
        ("shared", 0o640, 0o750),
        ("0660", 0o660, 0o770),
        ("644", 0o644, 0o755),
    ],
)
def test_stored_files_and_folders_get_the_configured_modes(
    tmp_path: Path, setting: str | None, file_mode: int, dir_mode: int
) -> None:
    source = tmp_path / "clip.mp4"
    source.write_bytes(b"video bytes")
    source.chmod(0o644)
    root = tmp_path / "store"
    store = ArtifactStore(f"file://{root}", *([] if setting is None else [setting]))
    store.put_file(source, "videos/ab/clip.mp4")
    store.put_arrays("work/1/frames.npz", frames=np.zeros(3))
    found = modes(root)
    assert set(found) == {
        ".",
        "videos",
        "videos/ab",
        "videos/ab/clip.mp4",
        "work",
        "work/1",
        "work/1/frames.npz",
    }
    for name, mode in found.items():
        expected = file_mode if name.endswith((".mp4", ".npz")) else dir_mode
        assert mode == expected, f"{name}: {oct(mode)}"


@pytest.mark.parametrize("setting", ["world", "0777x", "1777", "0800", ""])
def test_an_unknown_storage_mode_is_refused(tmp_path: Path, setting: str) -> None:
    with pytest.raises(ValueError, match="storage mode"):
        ArtifactStore(f"file://{tmp_path / 'store'}", setting)


def test_arrays_meeting_their_specs_read_as_without_them(store: ArtifactStore) -> None:
    specs = static_specs(16, 512)
    expected = {"tokens": arrays()["tokens"], "mask": arrays()["mask"]}
    uri = store.put_arrays("work/s.npz", **expected)
    loaded = store.get_arrays(uri, specs)
    for name, array in expected.items():
        np.testing.assert_array_equal(loaded[name], array)
    short = store.put_arrays("work/short.npz", tokens=np.zeros((5, 512), np.float32))
    assert store.get_arrays(short, {"tokens": specs["tokens"]})["tokens"].shape == (5, 512)


@pytest.mark.parametrize("compressed", [False, True])
def test_an_array_off_its_spec_is_refused_from_its_header(
    store: ArtifactStore, compressed: bool
) -> None:
    buffer = io.BytesIO()
    save = np.savez_compressed if compressed else np.savez
    save(buffer, tokens=np.zeros((1024, 256), np.float32))
    uri = store.uri("work/d.npz")
    Path(store._path(uri)).parent.mkdir(parents=True)
    Path(store._path(uri)).write_bytes(buffer.getvalue())
    with pytest.raises(ArtifactError) as error:
        store.get_arrays(uri, dynamic_specs(16, 256))
    assert str(error.value) == (
        "stored flow tokens have shape (1024, 256) float32, expected at most "
        "(T<=16, 256) float32 or float16 or float64; not loaded"
    )


def test_an_archive_larger_than_its_specs_allow_is_refused_unread(store: ArtifactStore) -> None:
    frames = np.zeros((16, 1500, 1500, 3), np.uint8)  # 108 MB: over the 640 px frame limit
    uri = store.put_arrays("work/f.npz", frames=frames, successors=frames[:, :10, :10])
    del frames
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match=r"stored frames have shape \(16, 1500, 1500, 3\)"):
            store.get_arrays(uri, {"frames": frames_specs(16, 640)["frames"]})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 2**20:.0f} MiB: the archive was read"


def test_a_copy_that_no_longer_hashes_to_its_content_hash_is_refused(
    store: ArtifactStore, tmp_path: Path
) -> None:
    source = tmp_path / "upload.bin"
    source.write_bytes(b"the uploaded video")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    uri = store.put_file(source, f"videos/{digest}.mp4")
    with store.local_copy(uri, sha256=digest) as path:
        assert path.read_bytes() == b"the uploaded video"
    Path(store._path(uri)).write_bytes(b"something else")
    copy = store.local_copy(uri, sha256=digest)
    with pytest.raises(ContentMismatchError, match="hashes to sha256"), copy:
        pass
