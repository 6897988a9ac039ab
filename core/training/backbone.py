"""Getting a pretrained backbone ready for a training run: installed models and cached features.

`prepare_backbone` loads each part of `--face-backbone` from the installed backbones folder
(a missing one is `BackboneMissingError`, naming `oceanstream backbones install NAME`), runs
the backbone once over every clip that has no stored features yet (`FeatureCache`), and hands
the training loop what it needs (`FaceBackbone`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras

from core.backbones.registry import load_backbone, read_record
from core.backbones.transfer import (
    backbone_metadata,
    backbone_parts,
    build_backbone_features,
    embedding_model,
)
from core.model.runtime import compile_inference
from core.training.data import ClipRef
from core.training.extraction import DatasetLayout, ExtractionConfig
from core.training.features import FeatureCache, FeatureCounts, cache_name
from core.training.loop import FaceBackbone, TrainingConfig


def installed_embeddings(
    name: str, directory: Path
) -> tuple[dict[str, keras.Model], dict[str, dict[str, Any]]]:
    """Each part's embedding model and install record; BackboneMissingError if one is absent."""
    embeddings, records = {}, {}
    for part in backbone_parts(name):
        installed = load_backbone(part, directory)
        embeddings[part] = embedding_model(part, installed)
        records[part] = read_record(directory, part) or {}
    return embeddings, records


def check_installed(name: str, directory: Path) -> None:
    """Fail fast, before any data is read: BackboneMissingError naming the install command."""
    from core.backbones.registry import BackboneMissingError, install_command

    for part in backbone_parts(name):
        if read_record(directory, part) is None:
            raise BackboneMissingError(
                f"backbone {part!r} is not installed in {directory}; run `{install_command(part)}`"
            )


def prepare_backbone(
    layout: DatasetLayout,
    refs: Sequence[ClipRef],
    train_refs: Sequence[ClipRef],
    extraction: ExtractionConfig,
    config: TrainingConfig,
    directory: Path,
    log: Callable[[str], None] = print,
) -> tuple[FaceBackbone, FeatureCache, FeatureCounts]:
    """The backbone to train with, its feature cache (complete for ``refs``), and what it cost."""
    embeddings, records = installed_embeddings(config.face_backbone, directory)
    entry = backbone_metadata(config.face_backbone, records, config.fine_tune_layers)
    hashes = {part: record.get("model_sha256") for part, record in records.items()}
    cache = FeatureCache(layout, cache_name(config.face_backbone, hashes))
    encode = compile_inference(build_backbone_features(embeddings, extraction.crop_size))
    counts = cache.ensure(refs, extraction, encode)
    log(
        f"backbone {config.face_backbone}: features of {counts.computed} clips computed "
        f"({counts.seconds:.1f} s), {counts.reused} reused from {cache.name}"
    )
    backbone = FaceBackbone(entry, embeddings, cache.face_features(train_refs))
    return backbone, cache, counts
