"""Benchmark: reading a feature set's `.npz` bytes with `np.load` vs the hand-written reader.

Shapes are the inference pool's: static [16,512] float32 tokens + [16] bool mask, dynamic
[16,256] float32 tokens. Prints reads/s for both and their ratio.

    .venv/bin/python -m tests.benchmarks.npz_read [--seconds 2]
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable

import numpy as np


def archive(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def with_np_load(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def rate(read: Callable[[bytes], object], archives: list[bytes], seconds: float) -> float:
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for data in archives:
            read(data)
        count += len(archives)
    return count / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per reader")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    static = archive(
        tokens=rng.standard_normal((16, 512)).astype(np.float32), mask=rng.random(16) > 0.2
    )
    dynamic = archive(tokens=rng.standard_normal((16, 256)).astype(np.float32))
    readers: dict[str, Callable[[bytes], object]] = {"np.load": with_np_load}
    try:
        from core.storage.npz import read_npz

        readers["read_npz"] = read_npz
    except ImportError:
        pass
    rates = {name: rate(read, [static, dynamic], args.seconds) for name, read in readers.items()}
    for name, value in rates.items():
        print(f"{name:>9}: {value:9.0f} archives/s ({1e6 / value:6.1f} us each)")
    if len(rates) == 2:
        print(f"    ratio: read_npz is {rates['read_npz'] / rates['np.load']:.2f}x np.load")


if __name__ == "__main__":
    main()
