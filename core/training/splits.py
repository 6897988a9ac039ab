"""Train / validation / test splits that keep every person in one split.

Clips cut from one source video show the same person; with a random split the model can
learn to recognise people seen in training and look better on test than it is. The grouped
split assigns whole groups (by default the clip id before its first `.`) to one split.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.training.labels import SPLITS, DatasetError

METHOD_GROUPED = "grouped"
METHOD_OFFICIAL = "official"


@dataclass(frozen=True)
class DataSplit:
    """Clip ids per split and how they were chosen."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    method: str
    rule: str
    seed: int | None = None
    fractions: tuple[float, float, float] | None = None

    def ids(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        return tuple(getattr(self, split))

    def digest(self) -> str:
        """A short hash of the membership, to recognise the same split later."""
        text = json.dumps({s: sorted(self.ids(s)) for s in SPLITS}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_metadata(self, groups: dict[str, str]) -> dict[str, Any]:
        """Counts of clips and groups per split, the rule and a membership hash."""
        return {
            "method": self.method,
            "rule": self.rule,
            "seed": self.seed,
            "fractions": list(self.fractions) if self.fractions else None,
            "clips": {s: len(self.ids(s)) for s in SPLITS},
            "groups": {s: len({groups[c] for c in self.ids(s)}) for s in SPLITS},
            "digest": self.digest(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rule": self.rule,
            "seed": self.seed,
            "fractions": list(self.fractions) if self.fractions else None,
            **{s: list(self.ids(s)) for s in SPLITS},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSplit:
        fractions = data.get("fractions")
        return cls(
            train=tuple(data["train"]),
            validation=tuple(data["validation"]),
            test=tuple(data["test"]),
            method=str(data["method"]),
            rule=str(data["rule"]),
            seed=data.get("seed"),
            fractions=tuple(fractions) if fractions else None,  # type: ignore[arg-type]
        )


def grouped_split(
    groups: dict[str, str],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    rule: str = "grouped by person",
) -> DataSplit:
    """Assign whole groups to train / validation / test, close to `fractions` of the clips.

    `groups` maps clip id -> group id. Groups are shuffled with `seed`, then each goes to the
    split furthest below its share of clips, so the result is deterministic and every split
    gets at least one group.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    sizes = Counter(groups.values())
    if len(sizes) < 3:
        raise DatasetError(
            f"a grouped split needs at least 3 groups (persons), found {len(sizes)}: "
            f"{sorted(sizes)}"
        )
    order = sorted(sizes)
    np.random.default_rng(seed).shuffle(order)
    total = sum(sizes.values())
    targets = np.asarray(fractions, np.float64) * total
    counts = np.zeros(3)
    assigned: dict[str, int] = {}
    # Seed every split with one group first, the ones with a share first.
    for index in np.argsort(-targets, kind="stable"):
        group = order.pop(0)
        assigned[group], counts[index] = int(index), counts[index] + sizes[group]
    for group in order:
        index = int(np.argmax((targets - counts) / np.maximum(targets, 1e-9)))
        assigned[group], counts[index] = index, counts[index] + sizes[group]
    members: list[list[str]] = [[], [], []]
    for clip in sorted(groups):
        members[assigned[groups[clip]]].append(clip)
    return DataSplit(
        train=tuple(members[0]),
        validation=tuple(members[1]),
        test=tuple(members[2]),
        method=METHOD_GROUPED,
        rule=rule,
        seed=seed,
        fractions=(float(fractions[0]), float(fractions[1]), float(fractions[2])),
    )


def official_split(splits: dict[str, str | None]) -> DataSplit:
    """The split the source itself defines (clip id -> train / validation / test)."""
    unknown = sorted(clip for clip, split in splits.items() if split not in SPLITS)
    if unknown:
        raise DatasetError(
            f"{len(unknown)} clips have no split of their own in the labels (e.g. "
            f"{unknown[:3]}); use the grouped split"
        )
    members = {s: tuple(sorted(c for c, split in splits.items() if split == s)) for s in SPLITS}
    if not members["train"]:
        raise DatasetError("the labels' own split has no training clips")
    return DataSplit(
        train=members["train"],
        validation=members["validation"],
        test=members["test"],
        method=METHOD_OFFICIAL,
        rule="the split given by the labels files",
    )


def shared_groups(split: DataSplit, groups: dict[str, str]) -> list[str]:
    """Groups that appear in more than one split (always empty for a grouped split)."""
    where: dict[str, set[str]] = {}
    for name in SPLITS:
        for clip in split.ids(name):
            where.setdefault(groups[clip], set()).add(name)
    return sorted(group for group, names in where.items() if len(names) > 1)
