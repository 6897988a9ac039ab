"""`run_inference_batch` as a plain function against SQLite and file storage.

It must store what per-video inference stores, fail a video with bad features alone, and
stay idempotent under duplicate and late deliveries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.artifacts import LAYOUT
from core.bundle import build_default_bundle
from core.errors import ModelBundleError, StorageError
from core.pipeline import PipelineConfig
from core.storage import ArtifactStore
from db import repository as repo
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from tasks import stages
from tasks.context import StageContext

T = 8


@pytest.fixture(scope="module")
def bundle():
    return build_default_bundle(num_frames=T)


@pytest.fixture(scope="module")
def other_bundle():
    return build_default_bundle(num_frames=T, seed=99)


class FlakyStore(ArtifactStore):
    """Local storage whose reads of some keys fail as an outage would."""

    down: set[str]

    def get_arrays(self, uri: str, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        if any(key in uri for key in getattr(self, "down", set())):
            raise StorageError(f"cannot read {uri}: connection reset")
        return super().get_arrays(uri, names)


@pytest.fixture
def ctx(tmp_path: Path, bundle, other_bundle) -> StageContext:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    session_factory = make_session_factory(make_engine(url))
    bundles = {b.metadata.version: b for b in (bundle, other_bundle)}
    with session_factory.begin() as session:
        for b in bundles.values():
            meta = b.metadata
            repo.ensure_model_version(
                session=session, version=meta.version, trained=False, metadata=meta.to_dict()
            )

    def load(version: str):
        if version not in bundles:
            raise ModelBundleError(f"model version {version!r} is not registered")
        return bundles[version]

    return StageContext(
        session_factory=session_factory,
        store=FlakyStore(f"file://{tmp_path / 'storage'}"),
        config=PipelineConfig(num_frames=T),
        load_bundle=load,
        active_version=lambda session=None: bundle.metadata.version,
    )


def add_video(ctx: StageContext, name: str, version: str, seed: int, frames: int = T) -> str:
    """A video waiting for inference, with features made from `seed`."""
    rng = np.random.default_rng(seed)
    with ctx.session_factory.begin() as session:
        video, _ = repo.get_or_create_video(
            session=session,
            content_hash=hashlib.sha256(name.encode()).hexdigest(),
            name=name,
            source_path=f"/in/{name}",
            size_bytes=1,
        )
        if version not in ("unregistered",):
            repo.pin_model_version(session=session, video_id=video.id, version=version)
        repo.transition_video(session=session, video_id=video.id, to_status="inference")
    mask = rng.random(frames) > 0.3
    mask[0] = True
    ctx.store.put_arrays(
        LAYOUT.static_features(video.id),
        tokens=rng.standard_normal((frames, 512)).astype(np.float32),
        mask=mask,
    )
    ctx.store.put_arrays(
        LAYOUT.dynamic_features(video.id),
        tokens=rng.standard_normal((frames, 256)).astype(np.float32),
    )
    return video.id


def stored(ctx: StageContext, video_id: str, version: str):
    with ctx.session_factory() as session:
        video = repo.get_video(session=session, video_id=video_id)
        prediction = repo.get_prediction(session=session, video_id=video_id, model_version=version)
        attention = (
            None
            if prediction is None
            else repo.load_attention(session=session, prediction_id=prediction.id)
        )
    return video, prediction, attention


def test_batched_results_equal_per_video_inference(ctx: StageContext, bundle) -> None:
    version = bundle.metadata.version
    seeds = range(11)
    single = [add_video(ctx, f"single-{s}", version, seed=s) for s in seeds]
    batched = [add_video(ctx, f"batched-{s}", version, seed=s) for s in seeds]
    for video_id in single:
        assert stages.run_inference(ctx, video_id) == "done"
    report = stages.run_inference_batch(ctx, batched, buckets=(1, 2, 4, 8))
    assert set(report.statuses.values()) == {"done"}
    assert [(c.rows, c.bucket) for c in report.calls] == [(8, 8), (3, 4)]
    for one, many in zip(single, batched, strict=True):
        video_one, prediction_one, attention_one = stored(ctx, one, version)
        video_many, prediction_many, attention_many = stored(ctx, many, version)
        np.testing.assert_allclose(prediction_many.scores, prediction_one.scores, atol=1e-5)
        np.testing.assert_allclose(attention_many, attention_one, atol=2e-3)  # float16 storage
        assert attention_many.shape == (2, 4, T, T)
        assert video_many.status == "done" and video_many.error is None
        assert (video_many.frames, video_many.faces_found) == (
            video_one.frames,
            video_one.faces_found,
        )
        assert prediction_many.model_trained is False
    rows = {stored(ctx, v, version)[0].timings["inference_batch"] for v in batched}
    assert rows == {8.0, 3.0}


def test_bad_features_fail_their_video_alone(ctx: StageContext, bundle) -> None:
    version = bundle.metadata.version
    good = [add_video(ctx, f"good-{i}", version, seed=i) for i in range(3)]
    missing = add_video(ctx, "missing", version, seed=20)
    ctx.store.delete_prefix(LAYOUT.dynamic_features(missing))
    corrupt = add_video(ctx, "corrupt", version, seed=21)
    path = Path(ctx.store._path(ctx.store.uri(LAYOUT.static_features(corrupt))))
    path.write_bytes(b"PK\x03\x04 not really a zip")
    wrong_shape = add_video(ctx, "wrong-shape", version, seed=22)
    ctx.store.put_arrays(
        LAYOUT.dynamic_features(wrong_shape), tokens=np.zeros((T, 128), np.float32)
    )
    not_finite = add_video(ctx, "not-finite", version, seed=23)
    tokens = np.full((T, 256), np.inf, np.float32)
    ctx.store.put_arrays(LAYOUT.dynamic_features(not_finite), tokens=tokens)

    ids = [good[0], missing, good[1], corrupt, wrong_shape, not_finite, good[2]]
    report = stages.run_inference_batch(ctx, ids)
    assert [report.statuses[v] for v in ids] == ["done", "failed", "done"] + ["failed"] * 3 + [
        "done"
    ]
    expected = {
        missing: "missing",
        corrupt: "corrupt",
        wrong_shape: "stored flow tokens have shape (8, 128) float32, expected at most (T<=8, 256)",
        not_finite: "NaN or infinite",
    }
    for video_id, words in expected.items():
        video, prediction, _ = stored(ctx, video_id, version)
        assert video.status == "failed" and words in video.error
        assert prediction is None
    assert all(stored(ctx, v, version)[1] is not None for v in good)
    assert report.calls[0].rows == 3


def test_features_longer_than_the_models_t_fail_their_video_unread(
    ctx: StageContext, bundle
) -> None:
    """T=1024 would make a 1024x1024 attention row per head: refused from the header."""
    version = bundle.metadata.version
    good = [add_video(ctx, f"fits-{i}", version, seed=i) for i in range(3)]
    long_static = add_video(ctx, "long-static", version, seed=30, frames=1024)
    long_dynamic = add_video(ctx, "long-dynamic", version, seed=31)
    ctx.store.put_arrays(
        LAYOUT.dynamic_features(long_dynamic), tokens=np.zeros((1024, 256), np.float32)
    )
    ids = [good[0], long_static, good[1], long_dynamic, good[2]]
    report = stages.run_inference_batch(ctx, ids)
    assert [report.statuses[v] for v in ids] == ["done", "failed", "done", "failed", "done"]
    expected = {
        long_static: "stored face tokens have shape (1024, 512) float32, expected at most "
        "(T<=8, 512)",
        long_dynamic: "stored flow tokens have shape (1024, 256) float32, expected at most "
        "(T<=8, 256)",
    }
    for video_id, words in expected.items():
        video, prediction, _ = stored(ctx, video_id, version)
        assert video.status == "failed" and words in video.error, video.error
        assert video.error.endswith("not loaded") and prediction is None
    assert report.calls[0].rows == 3  # the others shared one call of the model's own T
    assert report.statuses == {
        **dict.fromkeys(good, "done"),
        long_static: "failed",
        long_dynamic: "failed",
    }


def test_duplicate_and_late_deliveries_change_nothing(ctx: StageContext, bundle) -> None:
    version = bundle.metadata.version
    ids = [add_video(ctx, f"dup-{i}", version, seed=i) for i in range(4)]
    report = stages.run_inference_batch(ctx, [*ids, ids[0], ids[1], "no-such-video"])
    assert report.statuses == {**dict.fromkeys(ids, "done"), "no-such-video": None}
    first = [stored(ctx, v, version)[1].scores for v in ids]
    again = stages.run_inference_batch(ctx, ids)
    assert set(again.statuses.values()) == {None} and again.calls == []
    assert stages.run_inference(ctx, ids[0]) is None
    with ctx.session_factory() as session:
        for video_id, scores in zip(ids, first, strict=True):
            rows = repo.query_results(session=session, video=video_id)
            assert len(rows) == 1 and rows[0].status == "done"
            assert tuple(rows[0].traits.values()) == scores
            video = repo.get_video(session=session, video_id=video_id)
            assert video.deliveries == {"inference": 1}


def test_videos_are_grouped_by_their_pinned_model_version(
    ctx: StageContext, bundle, other_bundle
) -> None:
    old, new = bundle.metadata.version, other_bundle.metadata.version
    ids = [add_video(ctx, f"v{i}", old if i % 2 else new, seed=100 + i) for i in range(6)]
    report = stages.run_inference_batch(ctx, ids)
    assert set(report.statuses.values()) == {"done"}
    assert sorted(c.rows for c in report.calls) == [3, 3]
    for index, video_id in enumerate(ids):
        version = old if index % 2 else new
        _, prediction, _ = stored(ctx, video_id, version)
        assert prediction is not None and prediction.model_version == version
        other = new if index % 2 else old
        assert stored(ctx, video_id, other)[1] is None


def test_outages_ask_for_redelivery_and_store_nothing(ctx: StageContext, bundle) -> None:
    version = bundle.metadata.version
    fine = add_video(ctx, "fine", version, seed=1)
    unreadable = add_video(ctx, "unreadable", version, seed=2)
    ctx.store.down = {unreadable}
    report = stages.run_inference_batch(ctx, [fine, unreadable])
    assert report.statuses == {fine: "done", unreadable: stages.RETRY}
    assert "connection reset" in report.errors[unreadable]
    assert stored(ctx, unreadable, version)[0].status == "inference"
    # An outage longer than the delivery cap: each start is taken back, none fails it.
    for _ in range(ctx.max_deliveries + 2):
        report = stages.run_inference_batch(ctx, [unreadable])
        assert report.statuses == {unreadable: stages.RETRY}
    assert stored(ctx, unreadable, version)[0].deliveries == {"inference": 0}
    ctx.store.down = set()
    assert stages.run_inference_batch(ctx, [unreadable]).statuses == {unreadable: "done"}
    assert stored(ctx, unreadable, version)[0].deliveries == {"inference": 1}


def test_an_unloadable_model_version_asks_for_redelivery(ctx: StageContext, bundle) -> None:
    version = bundle.metadata.version
    with ctx.session_factory.begin() as session:
        repo.ensure_model_version(session=session, version="v-gone", trained=True, metadata={})
    lost = add_video(ctx, "lost", "v-gone", seed=3)
    fine = add_video(ctx, "fine2", version, seed=4)
    report = stages.run_inference_batch(ctx, [lost, fine])
    assert report.statuses == {lost: stages.RETRY, fine: "done"}
    assert "not registered" in report.errors[lost]


def test_a_video_delivered_too_often_fails_with_that_message(ctx: StageContext, bundle) -> None:
    video_id = add_video(ctx, "poison", bundle.metadata.version, seed=5)
    with ctx.session_factory.begin() as session:
        for _ in range(ctx.max_deliveries):
            repo.count_delivery(session=session, video_id=video_id, stage="inference")
    report = stages.run_inference_batch(ctx, [video_id])
    assert report.statuses == {video_id: "failed"}
    video = stored(ctx, video_id, bundle.metadata.version)[0]
    assert video.status == "failed" and "7 times without finishing" in video.error


def test_queue_delay_counts_from_the_send_time_when_given(ctx: StageContext, bundle) -> None:
    version = bundle.metadata.version
    ids = [add_video(ctx, f"q{i}", version, seed=i) for i in range(2)]
    now = time.time()
    report = stages.run_inference_batch(ctx, ids, sent_at={ids[0]: now - 2.5}, started_at=now)
    assert report.queue_delays[ids[0]] == pytest.approx(2.5)
    assert 0 <= report.queue_delays[ids[1]] < 5  # since its move to inference
    timings = stored(ctx, ids[0], version)[0].timings
    assert timings["inference_queue"] == pytest.approx(2.5)
    assert timings["inference_batch"] == 2.0 and timings["inference"] > 0


def test_a_remote_store_is_read_concurrently_with_the_same_results(
    ctx: StageContext, bundle
) -> None:
    # fsspec's in-memory filesystem stands in for a bucket: not local, so the batch's feature
    # sets are read by a pool of threads; outcomes must not depend on which path read them.
    version = bundle.metadata.version
    remote = dataclasses.replace(ctx, store=ArtifactStore(f"memory://bucket-{uuid.uuid4().hex}"))
    assert not remote.store.is_local and ctx.store.is_local
    local_ids = [add_video(ctx, f"local-{s}", version, seed=s) for s in range(6)]
    remote_ids = [add_video(remote, f"remote-{s}", version, seed=s) for s in range(6)]
    remote.store.delete_prefix(LAYOUT.static_features(remote_ids[2]))
    ctx.store.delete_prefix(LAYOUT.static_features(local_ids[2]))
    local = stages.run_inference_batch(ctx, local_ids)
    report = stages.run_inference_batch(remote, remote_ids)
    assert [report.statuses[v] for v in remote_ids] == [local.statuses[v] for v in local_ids]
    assert report.statuses[remote_ids[2]] == "failed" and "missing" in report.errors[remote_ids[2]]
    for one, other in zip(local_ids, remote_ids, strict=True):
        if one == local_ids[2]:
            continue
        np.testing.assert_allclose(
            stored(remote, other, version)[1].scores, stored(ctx, one, version)[1].scores, atol=1e-6
        )
