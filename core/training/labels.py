"""Reading trait labels: ChaLearn First Impressions V2 pickles, V1 CSVs and a generic CSV.

Every reader returns `LabelRow`s with the five scores in the project's O, C, E, A, N order,
whatever order the source uses. The V2 annotations are Python 2 pickles; unpickling runs code
named by the file, so they are read by an unpickler that resolves no global at all and then
accepts only dicts, strings and numbers.
"""

from __future__ import annotations

import csv
import io
import math
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import OceanStreamError
from core.traits import TRAITS

SPLITS = ("train", "validation", "test")
V2_FILES = {
    "train": "annotation_training.pkl",
    "validation": "annotation_validation.pkl",
    "test": "annotation_test.pkl",
}
V1_HEADER = (
    "VideoName",
    "ValueExtraversion",
    "ValueAgreeableness",
    "ValueConscientiousness",
    "ValueNeurotisicm",  # sic: the official files spell it so
    "ValueOpenness",
)
_V1_TRAITS = ("extraversion", "agreeableness", "conscientiousness", "neuroticism", "openness")
VIDEO_COLUMNS = ("video", "path", "file", "filename", "videoname")


class DatasetError(OceanStreamError):
    """A labels file or data set that cannot be used as it is."""


class UnsafePickleError(DatasetError):
    """A pickle asked for something other than plain dicts, strings and numbers."""


@dataclass(frozen=True)
class LabelRow:
    """One labelled clip as its source names it."""

    video: str  # a file name (First Impressions) or a path relative to the labels file
    labels: tuple[float, ...]  # O, C, E, A, N
    split: str | None = None  # the source's own split, when it has one
    group: str | None = None  # an explicit person/source id, when the source gives one


class _PlainUnpickler(pickle.Unpickler):
    """Builds only what the pickle opcodes make by themselves; every global is refused."""

    def __init__(self, file: io.BufferedIOBase, source: Path) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        raise UnsafePickleError(
            f"refused to load {self.source}: it asks for the Python object {module}.{name}, "
            "and a labels pickle may hold only dicts, strings and numbers (loading it could "
            "run code); convert the labels to the generic CSV if the file is trusted"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(
            f"refused to load {self.source}: it refers to external objects (persistent id)"
        )


def _check_plain(value: Any, where: str) -> None:
    """Dicts with string keys, strings and real numbers; anything else is refused."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UnsafePickleError(f"{where}: expected string keys, got {type(key).__name__}")
            _check_plain(item, f"{where}[{key!r}]")
    elif not isinstance(value, str | float | int) or isinstance(value, bool):
        raise UnsafePickleError(
            f"{where}: expected only dicts, strings and numbers, got {type(value).__name__}"
        )


def load_plain_pickle(path: str | Path) -> dict[str, Any]:
    """A Python 2 or 3 pickle of dicts, strings and numbers, decoded as latin-1 strings."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = _PlainUnpickler(handle, path).load()  # type: ignore[arg-type]
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise DatasetError(f"{path} is not a readable pickle: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected a dict, got {type(data).__name__}")
    _check_plain(data, path.name)
    return data


def _score(value: Any, video: str, trait: str, source: Path) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: {video} has a non-numeric {trait} label {value!r}") from None
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise DatasetError(f"{source}: {video} has {trait} = {value!r}, expected a score in [0, 1]")
    return score


def read_first_impressions_v2(path: str | Path, split: str | None = None) -> list[LabelRow]:
    """One `annotation_*.pkl`: `trait -> {"<youtube_id>.<segment>.mp4": score}`.

    Keys other than the five traits (`interview`) are ignored. A video missing from some
    trait's dict has incomplete labels: that is an error naming it.
    """
    path = Path(path)
    data = load_plain_pickle(path)
    missing = [trait for trait in TRAITS if trait not in data]
    if missing:
        raise DatasetError(f"{path}: lacks the trait keys {missing}; found {sorted(data)}")
    per_trait = {trait: data[trait] for trait in TRAITS}
    for trait, scores in per_trait.items():
        if not isinstance(scores, dict):
            raise DatasetError(f"{path}: {trait!r} must map videos to scores")
    videos = sorted(set().union(*(scores.keys() for scores in per_trait.values())))
    rows = []
    for video in videos:
        absent = [trait for trait in TRAITS if video not in per_trait[trait]]
        if absent:
            raise DatasetError(f"{path}: {video} has no {', '.join(absent)} label")
        labels = tuple(_score(per_trait[t][video], video, t, path) for t in TRAITS)
        rows.append(LabelRow(video=video, labels=labels, split=split))
    return rows


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = [name.strip() for name in next(csv.reader(handle), [])]
            rows = list(csv.DictReader(handle, fieldnames=header))
            return header, rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path} as CSV: {exc}") from exc


def csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV file (empty when it has none)."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            return [name.strip() for name in next(csv.reader(handle), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read {path} as CSV: {exc}") from exc


def read_first_impressions_v1(path: str | Path, split: str | None = None) -> list[LabelRow]:
    """A V1 CSV: `VideoName` then E, A, C, N, O scores (`ValueNeurotisicm` as spelled)."""
    path = Path(path)
    header, rows = _read_csv(path)
    if tuple(header[: len(V1_HEADER)]) != V1_HEADER:
        raise DatasetError(f"{path}: expected the V1 header {','.join(V1_HEADER)}, got {header}")
    columns = dict(zip(_V1_TRAITS, V1_HEADER[1:], strict=True))
    out = []
    for row in rows:
        video = (row.get("VideoName") or "").strip()
        if not video:
            raise DatasetError(f"{path}: a row has no VideoName: {row}")
        labels = tuple(_score(row[columns[t]], video, t, path) for t in TRAITS)
        out.append(LabelRow(video=video, labels=labels, split=split))
    return out


def _find_column(header: Iterable[str], wanted: str) -> str | None:
    by_lower = {name.lower(): name for name in header}
    return by_lower.get(wanted.lower())


def read_generic_csv(path: str | Path, video_column: str | None = None) -> list[LabelRow]:
    """A CSV with a video path column and the five trait columns by name (any case, any order).

    The video column is `video_column`, else the first of `video`, `path`, `file`, `filename`,
    `videoname`. Optional `group` (a person or source id) and `split` (train, validation, test)
    columns are used when present; other columns are ignored.
    """
    path = Path(path)
    header, rows = _read_csv(path)
    candidates = [video_column] if video_column else list(VIDEO_COLUMNS)
    column = next((c for c in (_find_column(header, name) for name in candidates) if c), None)
    if column is None:
        raise DatasetError(f"{path}: no video column (tried {candidates}); columns are {header}")
    found = {trait: _find_column(header, trait) for trait in TRAITS}
    missing = [trait for trait, name in found.items() if name is None]
    if missing:
        raise DatasetError(f"{path}: lacks the trait columns {missing}; columns are {header}")
    traits = {trait: str(name) for trait, name in found.items()}
    group_column, split_column = _find_column(header, "group"), _find_column(header, "split")
    out = []
    for row in rows:
        video = (row.get(column) or "").strip()
        if not video:
            raise DatasetError(f"{path}: a row has an empty {column!r}: {row}")
        labels = tuple(_score(row[traits[t]], video, t, path) for t in TRAITS)
        split = _split_name(row[split_column], path) if split_column else None
        group = (row[group_column] or "").strip() or None if group_column else None
        out.append(LabelRow(video=video, labels=labels, split=split, group=group))
    return out


def _split_name(value: str | None, path: Path) -> str:
    text = (value or "").strip().lower()
    aliases = {"training": "train", "val": "validation", "valid": "validation", "testing": "test"}
    text = aliases.get(text, text)
    if text not in SPLITS:
        raise DatasetError(f"{path}: split {value!r} is not one of {', '.join(SPLITS)}")
    return text


def split_from_file_name(path: Path) -> str | None:
    """`training_gt.csv` -> train, `validation...` -> validation, `test...` -> test."""
    name = path.name.lower()
    for prefix, split in (("train", "train"), ("val", "validation"), ("test", "test")):
        if name.startswith(prefix) or f"_{prefix}" in name:
            return split
    return None
