"""Grouped splits keep every person in one split; the labels' own split is checked for leaks."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from core.training.datasets import group_of
from core.training.labels import SPLITS, DatasetError
from core.training.splits import DataSplit, grouped_split, official_split, shared_groups


def first_impressions_like(persons: int, seed: int = 0) -> dict[str, str]:
    """Clip id -> group, with 1 to 9 clips per YouTube video like First Impressions."""
    rng = np.random.default_rng(seed)
    clips = {}
    for person in range(persons):
        youtube_id = f"yt{person:04d}Xq"
        for segment in range(int(rng.integers(1, 10))):
            clip = f"{youtube_id}.{segment:03d}.mp4"
            clips[clip] = group_of(clip)
    return clips


def test_no_person_is_in_two_splits_and_sizes_follow_the_fractions() -> None:
    groups = first_impressions_like(300)
    split = grouped_split(groups, (0.6, 0.2, 0.2), seed=3)
    assert shared_groups(split, groups) == []
    members = [set(split.ids(name)) for name in SPLITS]
    assert set().union(*members) == set(groups)
    assert sum(len(m) for m in members) == len(groups)
    shares = [len(m) / len(groups) for m in members]
    assert shares == pytest.approx([0.6, 0.2, 0.2], abs=0.03)


def test_grouped_split_is_deterministic_per_seed() -> None:
    groups = first_impressions_like(60)
    assert grouped_split(groups, seed=7) == grouped_split(groups, seed=7)
    assert grouped_split(groups, seed=7).test != grouped_split(groups, seed=8).test


def test_a_random_split_would_leak_and_shared_groups_finds_it() -> None:
    groups = first_impressions_like(40)
    clips = sorted(groups)
    order = np.random.default_rng(0).permutation(len(clips))
    thirds = np.array_split(order, 3)
    leaky = DataSplit(
        *(tuple(clips[i] for i in part) for part in thirds), method="random", rule="by clip"
    )
    assert len(shared_groups(leaky, groups)) > 5


def test_every_split_gets_a_group_even_when_few() -> None:
    groups = {f"p{p}.{s}.mp4": f"p{p}" for p in range(3) for s in range(5)}
    split = grouped_split(groups, (0.6, 0.2, 0.2), seed=0)
    counts = Counter(len(split.ids(name)) for name in SPLITS)
    assert counts == {5: 3}
    with pytest.raises(DatasetError, match="at least 3 groups"):
        grouped_split({"a.1.mp4": "a", "b.1.mp4": "b"})


def test_official_split_and_round_trip() -> None:
    splits = {"a.1.mp4": "train", "b.1.mp4": "validation", "a.2.mp4": "test"}
    split = official_split(splits)
    assert (split.train, split.validation, split.test) == (("a.1.mp4",), ("b.1.mp4",), ("a.2.mp4",))
    assert shared_groups(split, {c: group_of(c) for c in splits}) == ["a"]
    assert DataSplit.from_dict(split.to_dict()) == split
    with pytest.raises(DatasetError, match="no split of their own"):
        official_split({"a.1.mp4": "train", "c.1.mp4": None})


def test_split_metadata_counts_clips_and_persons() -> None:
    groups = first_impressions_like(30)
    split = grouped_split(groups, seed=1)
    meta = split.to_metadata(groups)
    assert sum(meta["clips"].values()) == len(groups)
    assert sum(meta["groups"].values()) == len(set(groups.values()))
    assert meta["method"] == "grouped" and len(meta["digest"]) == 16


def test_training_refuses_a_split_without_validation_clips() -> None:
    from core.training.data import ClipRef
    from core.training.run import ExtractedClips, choose_split

    refs = {c: ClipRef(c, f"clips/{c}.npz", (0.5,) * 5, group_of(c)) for c in ("a.1", "b.1")}
    clips = ExtractedClips(refs=refs, splits={"a.1": "train", "b.1": "test"})
    with pytest.raises(DatasetError, match="no validation clips"):
        choose_split(clips, "official", (0.6, 0.2, 0.2), 0, "person")
