"""What a model bundle must satisfy before any model is built from it.

A bundle's metadata and files are input, refused here with what was expected and what was
found. `check_metadata` holds the format version, trait order and every declared shape to
what this code serves; `check_inside` keeps each bundle file in the bundle's folder;
`read_metadata` reads `bundle.json` as JSON, every failure a `ModelBundleError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from core.errors import ModelBundleError
from core.traits import TRAITS

FORMAT_VERSION = 1
# Upper bounds on the shapes a bundle may declare. Metadata is input: a typo or a hostile file
# asking for T=10**6 or a 10**9-wide layer must be refused here, not by the allocator after
# minutes of building. Each bound is several times the shipped default (T=16, crops of 112,
# 512/256/128-wide tokens, 4 heads); T matches the settings' bound on frames per video.
MAX_DIMENSIONS = {
    "num_frames": 256,
    "crop_size": 512,
    "flow_size": 512,
    "static_dim": 4096,
    "dynamic_dim": 4096,
    "fusion_dim": 4096,
    "num_heads": 64,
}


#: What a bundle's flow may be computed over: one person's region, or the whole frame.
FLOW_REGIONS = ("person", "frame")


class CheckedMetadata(Protocol):
    """The fields `check_metadata` reads (`core.bundles.bundle.BundleMetadata` has them all);
    the shapes in `MAX_DIMENSIONS` are read by name."""

    format_version: int
    traits: list[str]
    dropout_rate: float
    fusion_dim: int
    num_heads: int
    trained: bool
    flow_region: str | None
    card: dict[str, Any] | None


def check_metadata(metadata: CheckedMetadata) -> None:
    """Reject metadata this code cannot serve, with what was expected and what was found."""
    if metadata.format_version != FORMAT_VERSION:
        raise ModelBundleError(
            f"unsupported bundle format_version {metadata.format_version!r}; "
            f"this version of OceanStream reads {FORMAT_VERSION}"
        )
    if list(metadata.traits) != list(TRAITS):
        raise ModelBundleError(f"bundle trait order {metadata.traits} != expected {list(TRAITS)}")
    for name, bound in MAX_DIMENSIONS.items():
        value = getattr(metadata, name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelBundleError(f"bundle {name} must be a positive integer, got {value!r}")
        if value > bound:
            raise ModelBundleError(
                f"bundle {name} is {value}, over the limit of {bound}: refused before "
                "building any model"
            )
    rate = metadata.dropout_rate
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 <= rate < 1:
        raise ModelBundleError(f"bundle dropout_rate must be in [0, 1), got {rate!r}")
    if metadata.fusion_dim % 2 or metadata.fusion_dim % metadata.num_heads:
        raise ModelBundleError(
            f"bundle fusion_dim {metadata.fusion_dim} must be even and divisible by num_heads "
            f"({metadata.num_heads})"
        )
    if not isinstance(metadata.trained, bool):
        raise ModelBundleError(f"bundle 'trained' must be true or false, got {metadata.trained!r}")
    if metadata.flow_region is not None and metadata.flow_region not in FLOW_REGIONS:
        raise ModelBundleError(
            f"bundle flow_region must be one of {list(FLOW_REGIONS)}, got {metadata.flow_region!r}"
        )
    if metadata.card is not None and not isinstance(metadata.card, dict):
        raise ModelBundleError(f"bundle card must be a JSON object, got {type(metadata.card)}")


def check_inside(directory: Path, filename: str) -> None:
    """Refuse a bundle file that is a link leading out of the bundle's folder.

    A bundle is one artifact: its version covers the files in its folder, and whoever may
    replace that folder decides what it serves. A link to a file elsewhere would let that
    file change under the registered version, or read a file the bundle's owner never
    shipped. Links inside the folder (and the folder itself being a link) are fine.
    """
    path = directory / filename
    if not path.is_symlink():
        return
    root = directory.resolve()
    target = path.resolve()
    if not target.is_relative_to(root):
        raise ModelBundleError(
            f"model bundle {str(directory)!r}: {filename} is a link to {str(target)!r}, outside "
            "the bundle folder; copy the file into the bundle instead"
        )


def read_metadata(path: Path) -> Any:
    """The parsed JSON of a bundle's metadata file; missing or unreadable is a ModelBundleError."""
    if not path.is_file():
        raise ModelBundleError(f"model bundle {str(path.parent)!r} lacks {path.name}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelBundleError(f"cannot read bundle metadata {path}: {exc}") from exc
