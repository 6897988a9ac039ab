"""Writers of label files in the formats OceanStream reads, for the tests.

`python2_pickle` emits the bytes Python 2's cPickle writes at protocol 2 for dicts of `str`
and `float`: byte strings as SHORT_BINSTRING/BINSTRING (which Python 3 decodes with the
`encoding` given to the unpickler), floats as big-endian BINFLOAT, memoised with BINPUT.
That is how the First Impressions V2 annotation files were written.
"""

from __future__ import annotations

import csv
import os
import struct
from pathlib import Path
from typing import Any

from core.training.labels import V1_HEADER

PROTO_2, STOP, MARK, SETITEMS = b"\x80\x02", b".", b"(", b"u"
EMPTY_DICT, BINFLOAT, SHORT_BINSTRING, BINSTRING = b"}", b"G", b"U", b"T"
BINPUT, LONG_BINPUT = b"q", b"r"


def python2_pickle(value: dict[str, Any]) -> bytes:
    """`cPickle.dumps(value, 2)` as Python 2 writes it (str as latin-1 byte strings)."""
    out = bytearray(PROTO_2)
    memo = 0

    def put() -> None:
        nonlocal memo
        out.extend(BINPUT + bytes([memo]) if memo < 256 else LONG_BINPUT + struct.pack("<I", memo))
        memo += 1

    def emit(item: Any) -> None:
        if isinstance(item, dict):
            out.extend(EMPTY_DICT)
            put()
            if item:
                out.extend(MARK)
                for key, inner in item.items():
                    emit(key)
                    emit(inner)
                out.extend(SETITEMS)
        elif isinstance(item, str):
            data = item.encode("latin-1")
            if len(data) < 256:
                out.extend(SHORT_BINSTRING + bytes([len(data)]) + data)
            else:
                out.extend(BINSTRING + struct.pack("<i", len(data)) + data)
            put()
        elif isinstance(item, float):
            out.extend(BINFLOAT + struct.pack(">d", item))
        else:
            raise TypeError(f"cannot write {type(item).__name__}")

    emit(value)
    out.extend(STOP)
    return bytes(out)


def v2_annotations(labels: dict[str, tuple[float, ...]], interview: bool = True) -> dict:
    """`trait -> {video: score}` from video -> (O, C, E, A, N), as the V2 files hold them."""
    traits = ("openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism")
    data: dict[str, dict[str, float]] = {
        trait: {video: values[i] for video, values in labels.items()}
        for i, trait in enumerate(traits)
    }
    if interview:
        data["interview"] = {video: 0.5 for video in labels}
    return data


def write_v1_csv(path: Path, labels: dict[str, tuple[float, ...]]) -> Path:
    """A V1 file: VideoName, then E, A, C, N, O (the official order and spelling)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(V1_HEADER)
        for video, (o, c, e, a, n) in labels.items():
            writer.writerow([video, e, a, c, n, o])
    return path


def touch_videos(folder: Path, names: list[str]) -> None:
    """Files with the names labels refer to (matching looks at names, not content)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"\x00")


class RunsCommand:
    """Pickles as `os.system(command)`: what a hostile labels file would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))
