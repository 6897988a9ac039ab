"""Labelled video sets: labels from any supported format matched with the video files.

`load_labelled_set(source)` recognises the layout of `source`:

- a folder with `annotation_training.pkl` / `annotation_validation.pkl` /
  `annotation_test.pkl` (ChaLearn First Impressions V2), or one of those files;
- a CSV whose header is the First Impressions V1 one, or a folder of such CSVs (the split is
  read from each file's name: `training...`, `validation...`, `test...`);
- any other CSV: the generic format (a video path column and the five trait columns).

First Impressions files name videos by file name only, so videos are found anywhere under the
video folder (by default the labels' folder). Labels that name no existing video and videos
that have no label are reported in the result, and the rest is used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core.training.labels import (
    V1_HEADER,
    V2_FILES,
    DatasetError,
    LabelRow,
    UnsafePickleError,
    csv_header,
    read_first_impressions_v1,
    read_first_impressions_v2,
    read_generic_csv,
    split_from_file_name,
)
from core.video.files import VIDEO_EXTENSIONS

FORMAT_V2 = "first-impressions-v2"
FORMAT_V1 = "first-impressions-v1"
FORMAT_GENERIC = "generic-csv"
GROUP_RULE = "the clip id before its first '.' (clips cut from one source video share it)"

__all__ = [
    "FORMAT_GENERIC",
    "FORMAT_V1",
    "FORMAT_V2",
    "GROUP_RULE",
    "DatasetError",
    "LabelledClip",
    "LabelledSet",
    "UnsafePickleError",
    "dataset_name",
    "group_of",
    "load_labelled_set",
]


@dataclass(frozen=True)
class LabelledClip:
    """A labelled clip whose video file exists."""

    clip_id: str  # as the labels name it
    path: Path
    labels: tuple[float, ...]  # O, C, E, A, N
    group: str  # the person / source video it comes from
    split: str | None = None  # the source's own split, when it has one


@dataclass
class LabelledSet:
    """The usable clips of a data set, and what could not be matched."""

    name: str
    format: str
    source: str
    clips: list[LabelledClip]
    missing_videos: list[str] = field(default_factory=list)  # labelled, no such file
    unlabelled_videos: list[str] = field(default_factory=list)  # files without a label
    ambiguous_videos: list[str] = field(default_factory=list)  # one name, several files


def group_of(clip_id: str) -> str:
    """The person/source id of a clip: its file name up to the first `.`.

    First Impressions names clips `<youtube_id>.<segment>.mp4`, and every segment of one
    YouTube video shows the same person.
    """
    return Path(clip_id).name.split(".", 1)[0]


def dataset_name(source: str | Path) -> str:
    """A storage-safe name for a data set: its folder's name (a file's parent folder)."""
    path = Path(source).expanduser().absolute()
    base = path.name if path.is_dir() else path.parent.name
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", base).strip("-.")
    return name or "dataset"


def _v2_files(folder: Path) -> dict[str, Path]:
    return {split: folder / name for split, name in V2_FILES.items() if (folder / name).is_file()}


def _is_v1_csv(path: Path) -> bool:
    return tuple(csv_header(path)[: len(V1_HEADER)]) == V1_HEADER


def _read_rows(source: Path, video_column: str | None) -> tuple[str, list[LabelRow]]:
    """The format of `source` and its label rows."""
    if source.is_dir():
        v2 = _v2_files(source)
        if v2:
            return FORMAT_V2, [r for s, p in v2.items() for r in read_first_impressions_v2(p, s)]
        v1 = [p for p in sorted(source.glob("*.csv")) if _is_v1_csv(p)]
        if v1:
            return FORMAT_V1, [
                r for p in v1 for r in read_first_impressions_v1(p, split_from_file_name(p))
            ]
        labels = source / "labels.csv"
        if labels.is_file():
            return FORMAT_GENERIC, read_generic_csv(labels, video_column)
        raise DatasetError(
            f"{source}: found no labels (annotation_*.pkl, First Impressions V1 CSVs or labels.csv)"
        )
    if not source.is_file():
        raise DatasetError(f"labels source {source} does not exist")
    if source.suffix.lower() == ".pkl":
        split = next((s for s, name in V2_FILES.items() if name == source.name), None)
        return FORMAT_V2, read_first_impressions_v2(source, split)
    if _is_v1_csv(source):
        return FORMAT_V1, read_first_impressions_v1(source, split_from_file_name(source))
    return FORMAT_GENERIC, read_generic_csv(source, video_column)


def _check_unique(rows: list[LabelRow], source: Path) -> list[LabelRow]:
    """Drop exact repeats; a clip labelled twice with different values is an error."""
    seen: dict[str, LabelRow] = {}
    for row in rows:
        earlier = seen.get(row.video)
        if earlier is None:
            seen[row.video] = row
        elif (earlier.labels, earlier.split) != (row.labels, row.split):
            raise DatasetError(f"{source}: {row.video} is labelled twice, differently")
    return list(seen.values())


def _video_files(root: Path) -> list[Path]:
    """Every video file under `root`, in sorted order."""
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
    )


def _index_by_name(files: list[Path]) -> tuple[dict[str, Path], set[str]]:
    """Video files by file name, and the names that occur more than once."""
    index: dict[str, Path] = {}
    repeated: set[str] = set()
    for path in files:
        if path.name in index:
            repeated.add(path.name)
        else:
            index[path.name] = path
    return index, repeated


def load_labelled_set(
    source: str | Path,
    videos: str | Path | None = None,
    video_column: str | None = None,
    name: str | None = None,
) -> LabelledSet:
    """Read the labels at `source` and match them with the video files.

    `videos` is the folder the videos are in (default: the labels' folder). First Impressions
    videos are looked up by file name anywhere below it; generic CSV paths are relative to it
    unless absolute.
    """
    source = Path(source).expanduser()
    fmt, rows = _read_rows(source, video_column)
    rows = _check_unique(rows, source)
    root = Path(videos).expanduser() if videos else (source if source.is_dir() else source.parent)
    if not root.is_dir():
        raise DatasetError(f"video folder {root} does not exist")
    files = _video_files(root)
    index, repeated = _index_by_name(files)
    result = LabelledSet(
        name=name or dataset_name(source), format=fmt, source=str(source.absolute()), clips=[]
    )
    used: set[Path] = set()
    for row in sorted(rows, key=lambda r: r.video):
        if fmt == FORMAT_GENERIC:
            path = Path(row.video).expanduser()
            path = path if path.is_absolute() else root / path
            found = path if path.is_file() else None
        else:
            found = index.get(Path(row.video).name)
            if Path(row.video).name in repeated:
                result.ambiguous_videos.append(row.video)
        if found is None:
            result.missing_videos.append(row.video)
            continue
        used.add(found.absolute())
        group = row.group or group_of(row.video)
        clip = LabelledClip(row.video, found, row.labels, group, row.split)
        result.clips.append(clip)
    result.unlabelled_videos = [str(p.relative_to(root)) for p in files if p.absolute() not in used]
    return result
