"""Model cards: what a bundle was trained on, how well it does, and what it must not be used for.

A card is a JSON object in the bundle's metadata (`BundleMetadata.card`). Training writes one
at the end of a run (`training_card`); the built-in bundle carries `untrained_card`. Bundles
saved before cards existed get one derived from the metadata they do have (`card_of`), with
what they never recorded left as None and shown as unknown.

The fixed texts (intended use, limits) live here only: `oceanstream models show`, the docs
and the README quote them, so a change here is a change everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.traits import TRAITS

CARD_FORMAT = 1
UNKNOWN = "unknown"

INTENDED_USE = (
    "Research and demonstration: estimating the apparent Big Five (OCEAN) impressions that "
    "observers would form of a person from a short video, and studying which frames and "
    "which stream (face or motion) those estimates attend to."
)

LIMITS: tuple[str, ...] = (
    "Apparent personality is the impression observers form of a person from a short clip, "
    "not an assessment of that person's personality: the scores say how someone comes "
    "across, not who they are.",
    "Not for hiring, admission, credit, insurance, policing or any other decision about a "
    "person, and not for diagnosis.",
    "Face data sets carry biases: who is in them (age, gender, skin tone, ethnicity), "
    "lighting, camera and framing, and the language spoken. A model inherits them and can "
    "score people unlike its training data differently for reasons unrelated to them.",
    "First Impressions labels (the benchmark these models follow) are crowd-sourced "
    "impressions of YouTube vlogs, aggregated from pairwise comparisons by online "
    "annotators; they carry those annotators' own biases.",
    "Accuracy is 1 - mean absolute error on scores in [0, 1]: predicting the training mean "
    "for every clip already scores high, so read each figure next to its mean baseline.",
)

UNTRAINED_LIMIT = (
    "Untrained: the weights are seeded, not learned; scores carry no information about anyone."
)

ACCURACY = "1 - mean absolute error per trait (the First Impressions convention)"
BASELINE = "the training labels' mean predicted for every clip, scored on the same clips"

SCRATCH = "scratch"
SCRATCH_TRAINING_DATA = (
    "none before this run: the face CNN starts from random weights and learns from the "
    "training data above only"
)


def backbone_entry(name: str, fine_tune_layers: int = 0) -> dict[str, Any]:
    """The backbone a face CNN was built on (`scratch`, `faceres`, `faceres+emotion`...).

    A pretrained one is named with what it was trained on, its package and its licence, and
    how many of its last layers were fine-tuned (0: frozen, only the projection trained).
    """
    if name == SCRATCH:
        return {"name": SCRATCH, "training_data": SCRATCH_TRAINING_DATA}
    from core.backbones.registry import BACKBONES

    parts, licences = [], []
    for part in name.split("+"):
        source = BACKBONES.get(part)
        parts.append(
            f"{part}: {source.summary} ({source.spec}; licence {source.licence})"
            if source
            else part
        )
        licences.append(f"{part}: {source.licence}" if source else f"{part}: {UNKNOWN}")
    return {
        "name": name,
        "training_data": "; ".join(parts),
        "licence": "; ".join(licences),
        "fine_tune_layers": fine_tune_layers,
    }


def _fixed(trained: bool) -> dict[str, Any]:
    limits = list(LIMITS) if trained else [UNTRAINED_LIMIT, *LIMITS]
    return {"intended_use": INTENDED_USE, "limits": limits}


def untrained_card() -> dict[str, Any]:
    """The built-in bundle's card: nothing learned, nothing measured."""
    return {
        "format": CARD_FORMAT,
        "trained": False,
        "training_data": None,
        "split": None,
        "evaluation": None,
        "backbone": {"name": SCRATCH, "training_data": "none: seeded random weights"},
        **_fixed(trained=False),
    }


def training_card(
    dataset: Mapping[str, Any],
    split: Mapping[str, Any],
    person_disjoint: bool | None,
    metrics: Mapping[str, Any],
    backbone: str = SCRATCH,
    person_rule: str | None = None,
    fine_tune_layers: int = 0,
) -> dict[str, Any]:
    """The card of a trained bundle, from what the run recorded.

    `dataset` is the run's data-set record, `split` the split's `to_metadata`, `metrics` the
    run's held-out metrics (`evaluate_bundle` per split, as stored in the bundle).
    """
    groups = split.get("groups") or {}
    return {
        "format": CARD_FORMAT,
        "trained": True,
        "training_data": {
            "name": dataset.get("name"),
            "source": dataset.get("source"),
            "label_format": dataset.get("label_format"),
            "clips": dataset.get("clips_used"),
            "persons": sum(groups.values()) if groups else None,
            "person_rule": person_rule,
        },
        "split": {
            "method": split.get("method"),
            "rule": split.get("rule"),
            "person_disjoint": person_disjoint,
            "clips": split.get("clips"),
            "persons": groups or None,
        },
        "evaluation": evaluation_entry(metrics),
        "backbone": backbone_entry(backbone, fine_tune_layers),
        **_fixed(trained=True),
    }


def evaluation_entry(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """Per-trait accuracy and mean-baseline accuracy on the test split (else validation)."""
    name = "test" if metrics.get("test") else "validation" if metrics.get("validation") else None
    if name is None:
        return None
    held_out = metrics[name]
    traits = held_out.get("traits") or {}
    mean = held_out.get("mean") or {}
    return {
        "split": name,
        "clips": held_out.get("clips"),
        "accuracy": ACCURACY,
        "baseline": BASELINE,
        "traits": {
            trait: {
                "accuracy": (traits.get(trait) or {}).get("accuracy"),
                "baseline": (traits.get(trait) or {}).get("baseline"),
            }
            for trait in TRAITS
        },
        "mean": {"accuracy": mean.get("accuracy"), "baseline": mean.get("baseline")},
    }


def card_of(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle's own card, or one derived from older metadata (gaps left as None)."""
    card = metadata.get("card")
    if isinstance(card, Mapping):
        return dict(card)
    if not metadata.get("trained"):
        return untrained_card()
    training = metadata.get("training") or {}
    dataset = dict(training.get("dataset") or {})
    dataset.setdefault("name", metadata.get("dataset"))
    split = training.get("split") or {}
    settings = training.get("settings") or {}
    card = training_card(
        dataset,
        split,
        True if split.get("method") == "grouped" else None,
        metadata.get("metrics") or {},
        backbone=str(settings.get("face_backbone") or UNKNOWN),
        fine_tune_layers=int(settings.get("fine_tune_layers") or 0),
    )
    if not split:
        card["split"] = None
    if card["backbone"]["name"] == UNKNOWN:
        card["backbone"] = {"name": None, "training_data": None}
    return card


def limits_markdown() -> str:
    """Intended use and limits as Markdown, the way the docs quote them."""
    lines = [f"**Intended use.** {INTENDED_USE}", "", "**Limits.**", ""]
    lines += [f"- {limit}" for limit in LIMITS]
    lines.append(f"- The built-in bundle adds: {UNTRAINED_LIMIT}")
    return "\n".join(lines)
