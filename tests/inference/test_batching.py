"""Batching logic: buckets, padding, the batch runner, and padding's effect on the model."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ArtifactError
from core.model.batching import (
    FeatureSet,
    bucket_sizes,
    choose_bucket,
    compile_buckets,
    pad_batch,
    run_batched,
    split_rows,
)

T = 8


def features(seed: int, frames: int = T, faces: int | None = None) -> FeatureSet:
    rng = np.random.default_rng(seed)
    mask = np.ones(frames, bool)
    if faces is not None:
        mask[faces:] = False
    return FeatureSet(
        rng.standard_normal((frames, 512)).astype(np.float32),
        mask,
        rng.standard_normal((frames, 256)).astype(np.float32),
    )


def test_buckets_are_powers_of_two_up_to_the_largest_batch() -> None:
    assert bucket_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert bucket_sizes(24) == (1, 2, 4, 8, 16, 24)
    assert bucket_sizes(1) == (1,)
    assert [choose_bucket(n, bucket_sizes(32)) for n in (1, 2, 3, 5, 17, 32)] == [
        1,
        2,
        4,
        8,
        32,
        32,
    ]
    assert split_rows(70, bucket_sizes(32)) == [32, 32, 6]
    with pytest.raises(ValueError, match="split first"):
        choose_bucket(33, bucket_sizes(32))
    with pytest.raises(ValueError):
        bucket_sizes(0)


def test_padding_masks_padded_rows_and_frames() -> None:
    short = features(1, frames=5, faces=3)
    batch = pad_batch([features(0), short], batch_size=4, num_frames=T)
    assert batch.static.shape == (4, T, 512) and batch.dynamic.shape == (4, T, 256)
    assert batch.frames == (T, 5)
    assert batch.static_mask[1].tolist() == [True] * 3 + [False] * 5
    assert batch.dynamic_mask[1].tolist() == [True] * 5 + [False] * 3
    assert not batch.static_mask[2:].any() and not batch.dynamic_mask[2:].any()
    assert not batch.static[2:].any() and not batch.static[1, 5:].any()
    np.testing.assert_array_equal(batch.static[1, :5], short.static)


def test_runner_returns_each_video_its_own_outputs_in_order() -> None:
    calls = []

    def fake_predict(static, dynamic, static_mask, dynamic_mask):
        calls.append(len(static))
        scores = np.repeat(static[:, :1, 0], 5, axis=1)  # row i scores = its first token value
        attention = np.broadcast_to(
            static_mask[:, None, None, :, None] & dynamic_mask[:, None, None, None, :],
            (len(static), 2, 4, static.shape[1], static.shape[1]),
        ).astype(np.float32)
        return scores, attention

    items = [features(seed) for seed in range(37)]
    out = run_batched(fake_predict, items, bucket_sizes(16), num_frames=T)
    assert calls == [16, 16, 8]  # 16 + 16 + 5 padded to 8
    assert [c.rows for c in out.calls] == [16, 16, 5]
    assert out.call_of[:16] == [0] * 16 and out.call_of[-1] == 2
    for item, scores, attention in zip(items, out.scores, out.attention, strict=True):
        np.testing.assert_array_equal(scores, np.full(5, item.static[0, 0], np.float32))
        assert attention.shape == (2, 4, T, T)


def test_padding_does_not_change_real_videos_results(default_bundle) -> None:
    """Alone at batch 1 or among others in a padded bucket, a video's outputs are the same."""
    items = [features(10), features(11, faces=2), features(12, frames=5), features(13, faces=6)]
    alone = [run_batched(default_bundle.predict, [item], (1,), T) for item in items]
    together = run_batched(default_bundle.predict, [*items, features(14)], bucket_sizes(8), T)
    assert together.calls[0].bucket == 8
    for index, single in enumerate(alone):
        np.testing.assert_allclose(together.scores[index], single.scores[0], atol=1e-5)
        np.testing.assert_allclose(together.attention[index], single.attention[0], atol=1e-5)
    # The 5-frame video padded to 8 frames equals the same video run at its own length.
    short = items[2]
    static, dynamic = short.static[None], short.dynamic[None]
    scores, attention = default_bundle.predict(static, dynamic, short.static_mask[None], None)
    np.testing.assert_allclose(together.scores[2], scores[0], atol=1e-5)
    np.testing.assert_allclose(together.attention[2], attention[0], atol=1e-5)


def test_compile_buckets_runs_every_bucket_once() -> None:
    sizes = []

    def predict(static, dynamic, static_mask, dynamic_mask):
        sizes.append(static.shape)
        return np.zeros((len(static), 5)), np.zeros((len(static), 2, 4, T, T))

    compile_buckets(predict, bucket_sizes(8), T, 512, 256)
    assert sizes == [(1, T, 512), (2, T, 512), (4, T, 512), (8, T, 512)]


@pytest.mark.parametrize(
    ("static", "mask", "dynamic", "message"),
    [
        ((T, 256), (T,), (T, 256), "shapes"),
        ((T, 512), (T - 1,), (T, 256), "shapes"),
        ((T, 512), (T,), (T - 2, 256), "shapes"),
        ((0, 512), (0,), (0, 256), "shapes"),
        ((T, 512), (T,), (T, 256, 1), "shapes"),
    ],
)
def test_malformed_feature_sets_are_refused_with_what_was_expected(
    static, mask, dynamic, message
) -> None:
    item = FeatureSet(np.zeros(static, np.float32), np.ones(mask, bool), np.zeros(dynamic))
    with pytest.raises(ArtifactError, match=message):
        item.checked(512, 256)


def test_non_finite_or_non_numeric_features_are_refused() -> None:
    item = features(0)
    item.static[3, 7] = np.nan
    with pytest.raises(ArtifactError, match="NaN"):
        item.checked(512, 256)
    text = FeatureSet(np.full((T, 512), "x"), np.ones(T, bool), np.zeros((T, 256)))
    with pytest.raises(ArtifactError, match="dtypes"):
        text.checked(512, 256)
