"""One training run, from an extracted data set to a saved, evaluated, trained bundle.

A run folder holds everything a run makes and needs to resume:

    run.json           data set, split and settings (a resumed run reuses them)
    split.json         the clip ids of each split
    checkpoints/       see `core.training.checkpoints`
    logs/              TensorBoard event files (train/, validation/)
    history.csv        loss and MAE per epoch
    report.json        held-out metrics, the bundle's version and path
    bundle/            the trained model bundle
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras

from core.bundles.bundle import ModelBundle, load_bundle, save_bundle
from core.bundles.model_card import training_card
from core.training.data import ClipBatches, ClipRef, FaceFeatures, clip_bytes
from core.training.evaluation import evaluate_bundle
from core.training.extraction import DatasetLayout, ExtractionConfig
from core.training.labels import SPLITS, DatasetError
from core.training.loop import SCRATCH, TrainingConfig, bundle_shapes, train_models
from core.training.splits import DataSplit, grouped_split, official_split, shared_groups

RUN_FILE = "run.json"
SPLIT_FILE = "split.json"
DEFAULT_CACHE_BYTES = 4 * 1024**3


@dataclass
class ExtractedClips:
    """The clips of a manifest that can be trained on, and the ones that cannot."""

    refs: dict[str, ClipRef]
    splits: dict[str, str | None]  # clip id -> the labels' own split
    not_extracted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # clip id -> why


def extracted_clips(layout: DatasetLayout, manifest: dict[str, Any]) -> ExtractedClips:
    """Clips whose arrays are in the store; the others are listed with the reason."""
    failed = {cid: f"{v['status']}: {v['error']}" for cid, v in manifest["failed"].items()}
    found = ExtractedClips(refs={}, splits={}, failed=failed)
    for clip in manifest["clips"]:
        if not layout.store.exists(layout.store.uri(clip["key"])):
            if clip["id"] not in failed:
                found.not_extracted.append(clip["id"])
            continue
        failed.pop(clip["id"], None)  # a late result of a clip once given up on
        found.refs[clip["id"]] = ClipRef(
            clip["id"], clip["key"], tuple(clip["labels"]), clip["group"]
        )
        found.splits[clip["id"]] = clip.get("split")
    return found


def choose_split(
    clips: ExtractedClips,
    method: str,
    fractions: tuple[float, float, float],
    seed: int,
    rule: str,
) -> tuple[DataSplit, list[str]]:
    """The split, and the groups it shares between splits (the official one may)."""
    groups = {cid: ref.group for cid, ref in clips.refs.items()}
    if method == "official":
        split = official_split(clips.splits)
    elif method == "grouped":
        split = grouped_split(groups, fractions, seed, rule=f"grouped by {rule}")
    else:
        raise ValueError(f"unknown split method {method!r}; expected 'grouped' or 'official'")
    for name in ("train", "validation"):  # validation drives early stopping
        if not split.ids(name):
            raise DatasetError(f"the {split.method} split has no {name} clips")
    return split, shared_groups(split, groups)


def _batches(
    layout: DatasetLayout,
    refs: list[ClipRef],
    extraction: ExtractionConfig,
    config: TrainingConfig,
    cache: bool,
    shuffle: bool = False,
    features: FaceFeatures | None = None,
) -> ClipBatches:
    return ClipBatches(
        layout,
        refs,
        extraction,
        config.batch_size,
        shuffle=shuffle,
        seed=config.seed,
        cache=cache,
        features=features,
    )


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The settings of an earlier run in `run_dir`, to resume it."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise DatasetError(f"{run_dir} holds no training run to resume ({RUN_FILE} missing)")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def run_training(
    layout: DatasetLayout,
    manifest: dict[str, Any],
    clips: ExtractedClips,
    split: DataSplit,
    config: TrainingConfig,
    run_dir: str | Path,
    resume: bool = False,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    verbose: int | str = "auto",
    log: Callable[[str], None] = print,
    backbones_dir: Path | None = None,
) -> dict[str, Any]:
    """Train, evaluate on validation and test, save the bundle with its model card; returns
    the report.

    A pretrained `config.face_backbone` is loaded from `backbones_dir`; its features are
    computed once per clip and stored (`core.training.features`). Frozen, the training
    batches carry those features; fine-tuned, they carry crops. Evaluation always runs the
    saved bundle on crops, backbone included, as serving does.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    extraction = ExtractionConfig.from_dict(manifest["config"])
    groups = {cid: ref.group for cid, ref in clips.refs.items()}
    dataset = {
        "name": manifest["name"],
        "label_format": manifest["label_format"],
        "source": manifest["source"],
        "store": str(layout),
        "extraction": extraction.to_dict(),
        "clips_used": len(clips.refs),
        "clips_failed": len(clips.failed),
        "clips_not_extracted": len(clips.not_extracted),
    }
    _write_json(run_dir / SPLIT_FILE, split.to_dict())
    _write_json(run_dir / RUN_FILE, {"dataset": dataset, "config": config.to_dict()})
    refs = {name: [clips.refs[cid] for cid in split.ids(name)] for name in SPLITS}
    total = sum(len(r) for r in refs.values()) * clip_bytes(extraction)
    cache = total <= cache_bytes
    log(f"reading {sum(len(r) for r in refs.values())} clips ({total / 1e9:.2f} GB, "
        f"{'in memory' if cache else 'from storage each epoch'})")  # fmt: skip
    backbone, features, backbone_costs = None, None, None
    if config.face_backbone != SCRATCH:
        from core.training.backbone import prepare_backbone

        if backbones_dir is None:
            raise ValueError(f"--face-backbone {config.face_backbone} needs a backbones folder")
        every = [ref for name in SPLITS for ref in refs[name]]
        backbone, feature_cache, counts = prepare_backbone(
            layout, every, refs["train"], extraction, config, backbones_dir, log
        )
        backbone_costs = counts.to_dict()
        features = feature_cache.read if config.fine_tune_layers == 0 else None
    train = _batches(layout, refs["train"], extraction, config, cache, True, features)
    validation = _batches(layout, refs["validation"], extraction, config, cache, False, features)
    result = train_models(
        train, validation, extraction, config, run_dir, resume, verbose, backbone=backbone
    )
    if features is not None:  # evaluation runs the bundle on crops, as serving does
        validation = _batches(layout, refs["validation"], extraction, config, cache)
    metadata = bundle_shapes(extraction, config, None if backbone is None else backbone.entry)
    metadata.dataset = manifest["name"]
    bundle = ModelBundle(metadata, result.face_encoder, result.flow_encoder, result.fusion_model)
    baseline = train.labels.mean(axis=0)
    metrics: dict[str, Any] = {"baseline_prediction": [round(float(v), 4) for v in baseline]}
    for name, batches in (("validation", validation), ("test", None)):
        if batches is None and refs[name]:
            batches = _batches(layout, refs[name], extraction, config, cache)
        if batches is not None:
            metrics[name] = evaluate_bundle(bundle, batches, baseline, seed=config.seed)
    metadata.metrics = metrics
    metadata.training = {
        "settings": config.to_dict(),
        "dataset": dataset,
        "split": split.to_metadata(groups),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss,
        "stopped_early": result.stopped_early,
        "mixed_precision": result.mixed_precision,
        "seconds": result.seconds,
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
    }
    if backbone_costs is not None:
        metadata.training["backbone_features"] = backbone_costs
    metadata.card = training_card(
        dataset,
        metadata.training["split"],
        person_disjoint=not shared_groups(split, groups),
        metrics=metrics,
        backbone=config.face_backbone,
        fine_tune_layers=config.fine_tune_layers,
        person_rule=manifest.get("group_rule"),
    )
    bundle_dir = save_bundle(bundle, run_dir / "bundle")
    _check_round_trip(bundle, bundle_dir)
    report = {
        "version": metadata.version,
        "bundle": str(bundle_dir.absolute()),
        "run_dir": str(run_dir.absolute()),
        "metrics": metrics,
        "training": metadata.training,
        "card": metadata.card,
    }
    _write_json(run_dir / "report.json", report)
    return report


def _check_round_trip(bundle: ModelBundle, directory: Path) -> None:
    """The saved bundle must load as the version evaluated: its weights hash to that version."""
    loaded = load_bundle(directory)
    if loaded.metadata.version != bundle.metadata.version:
        raise RuntimeError(
            f"the bundle saved in {directory} loads as {loaded.metadata.version}, "
            f"not {bundle.metadata.version}"
        )
