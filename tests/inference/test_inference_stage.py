"""`run_inference_batch` as a plain function against SQLite and file storage.

It must store what per-segment inference stores (every person of a segment a row of the
batch), fail a segment with bad features alone, and stay idempotent under duplicate and
late deliveries. Each segment here is its video's only one, so finishing it also finishes
(aggregates) its video.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from core.bundles.bundle import build_default_bundle
from core.storage.store import ArtifactStore
from core.traits import TRAITS
from db import repository as repo
from tasks import stages
from tasks.context import StageContext
from tests.inference.helpers import T, add_segment, feature_keys, make_context, stored


@pytest.fixture(scope="module")
def other_bundle():
    return build_default_bundle(num_frames=T, seed=99)


@pytest.fixture
def ctx(tmp_path: Path, default_bundle, other_bundle) -> StageContext:
    bundles = {b.metadata.version: b for b in (default_bundle, other_bundle)}
    return make_context(tmp_path, bundles, lambda session=None: default_bundle.metadata.version)


def test_batched_results_equal_per_segment_inference(ctx: StageContext, default_bundle) -> None:
    version = default_bundle.metadata.version
    seeds = range(11)
    single = [add_segment(ctx, f"single-{s}", version, seed=s) for s in seeds]
    batched = [add_segment(ctx, f"batched-{s}", version, seed=s) for s in seeds]
    for segment_id in single:
        assert stages.run_inference(ctx, segment_id) == "done"
    report = stages.run_inference_batch(ctx, batched, buckets=(1, 2, 4, 8))
    assert report.statuses == dict.fromkeys(batched, "done")
    assert [(c.rows, c.bucket) for c in report.calls] == [(8, 8), (3, 4)]
    for one, many in zip(single, batched, strict=True):
        alone, together = stored(ctx, one, version), stored(ctx, many, version)
        np.testing.assert_allclose(together.scores, alone.scores, atol=1e-5)
        [attention] = together.attention
        np.testing.assert_allclose(attention, alone.attention[0], atol=2e-3)  # float16 storage
        assert attention.shape == (2, 4, T, T)
        assert together.segment.status == "done" and together.segment.error is None
        # Its only segment is final: the video is aggregated, its headline the one person's.
        video = together.video
        assert video.status == "done" and video.error is None
        assert (video.frames, video.faces_found) == (alone.video.frames, alone.video.faces_found)
        with ctx.session_factory() as session:
            prediction = repo.get_prediction(
                session=session, video_id=together.video_id, model_version=version
            )
        np.testing.assert_allclose(prediction.scores, together.scores[0], atol=1e-6)
        assert prediction.model_trained is False
    rows = {stored(ctx, s, version).segment.timings["inference_batch"] for s in batched}
    assert rows == {8.0, 3.0}


def test_every_person_of_a_segment_is_a_row_of_the_batch(ctx: StageContext, default_bundle) -> None:
    """Segments of 1, 2 and 3 persons share one call of 6 rows; each person scores as when
    its segment ran alone, and the persons of one segment score apart."""
    version = default_bundle.metadata.version
    counts = (1, 2, 3)
    alone = [
        add_segment(ctx, f"alone-{n}", version, seed=40 + n, persons=n, person_flow=n == 3)
        for n in counts
    ]
    together = [
        add_segment(ctx, f"together-{n}", version, seed=40 + n, persons=n, person_flow=n == 3)
        for n in counts
    ]
    for segment_id in alone:
        assert stages.run_inference(ctx, segment_id) == "done"
    report = stages.run_inference_batch(ctx, together, buckets=(1, 2, 4, 8))
    assert report.statuses == dict.fromkeys(together, "done")
    assert [(c.rows, c.bucket) for c in report.calls] == [(6, 8)]
    for persons, one, many in zip(counts, alone, together, strict=True):
        expected, got = stored(ctx, one, version), stored(ctx, many, version)
        assert len(got.scores) == len(got.attention) == persons
        np.testing.assert_allclose(got.scores, expected.scores, atol=1e-5)
        assert got.segment.timings["inference_batch"] == 6.0
        if persons > 1:
            assert not np.allclose(got.scores[0], got.scores[1])
    with ctx.session_factory() as session:
        persons = repo.video_persons(
            session=session,
            video_id=stored(ctx, together[2], version).video_id,
            model_version=version,
        )
    assert [p.person for p in persons] == [0, 1, 2] and sum(p.main for p in persons) == 1


def test_bad_features_fail_their_segment_alone(ctx: StageContext, default_bundle) -> None:
    version = default_bundle.metadata.version
    good = [add_segment(ctx, f"good-{i}", version, seed=i) for i in range(3)]
    missing = add_segment(ctx, "missing", version, seed=20)
    ctx.store.delete_prefix(feature_keys(ctx, missing)[1])
    corrupt = add_segment(ctx, "corrupt", version, seed=21)
    path = Path(ctx.store._path(ctx.store.uri(feature_keys(ctx, corrupt)[0])))
    path.write_bytes(b"PK\x03\x04 not really a zip")
    wrong_shape = add_segment(ctx, "wrong-shape", version, seed=22)
    ctx.store.put_arrays(
        feature_keys(ctx, wrong_shape)[1], tokens=np.zeros((1, T, 128), np.float32)
    )
    not_finite = add_segment(ctx, "not-finite", version, seed=23)
    ctx.store.put_arrays(
        feature_keys(ctx, not_finite)[1], tokens=np.full((1, T, 256), np.inf, np.float32)
    )
    # Two persons' face tokens but flow for three: the arrays disagree on the persons.
    disagree = add_segment(ctx, "disagree", version, seed=24, persons=2)
    ctx.store.put_arrays(feature_keys(ctx, disagree)[1], tokens=np.zeros((3, T, 256), np.float32))

    ids = [good[0], missing, good[1], corrupt, wrong_shape, not_finite, disagree, good[2]]
    report = stages.run_inference_batch(ctx, ids)
    assert [report.statuses[s] for s in ids] == (
        ["done", "failed", "done"] + ["failed"] * 4 + ["done"]
    )
    expected = {
        missing: "missing",
        corrupt: "corrupt",
        wrong_shape: "stored flow tokens have shape (1, 8, 128) float32, expected at most (P<=",
        not_finite: "NaN or infinite",
        disagree: "disagree on its persons",
    }
    for segment_id, words in expected.items():
        result = stored(ctx, segment_id, version)
        assert result.segment.status == "failed" and words in result.segment.error, (
            result.segment.error
        )
        assert report.errors[segment_id] == result.segment.error
        assert result.scores == []
        # The failed segment was its video's only one: the video fails, naming it.
        assert result.video.status == "failed"
        assert result.video.error.startswith("segment 0 (0-1 s): ") and words in result.video.error
    assert all(len(stored(ctx, s, version).scores) == 1 for s in good)
    assert [c.rows for c in report.calls] == [3]


def test_features_longer_than_the_models_t_fail_their_segment_unread(
    ctx: StageContext, default_bundle
) -> None:
    """T=1024 would make a 1024x1024 attention row per head: refused from the header."""
    version = default_bundle.metadata.version
    good = [add_segment(ctx, f"fits-{i}", version, seed=i) for i in range(3)]
    long_static = add_segment(ctx, "long-static", version, seed=30, frames=1024)
    long_dynamic = add_segment(ctx, "long-dynamic", version, seed=31)
    ctx.store.put_arrays(
        feature_keys(ctx, long_dynamic)[1], tokens=np.zeros((1, 1024, 256), np.float32)
    )
    ids = [good[0], long_static, good[1], long_dynamic, good[2]]
    report = stages.run_inference_batch(ctx, ids)
    assert report.statuses == {
        **dict.fromkeys(good, "done"),
        long_static: "failed",
        long_dynamic: "failed",
    }
    expected = {
        long_static: "stored face tokens have shape (1, 1024, 512) float32, expected at most ",
        long_dynamic: "stored flow tokens have shape (1, 1024, 256) float32, expected at most ",
    }
    for segment_id, words in expected.items():
        result = stored(ctx, segment_id, version)
        error = result.segment.error
        assert result.segment.status == "failed" and words in error, error
        assert "T<=8" in error and error.endswith("not loaded") and result.scores == []
    assert [c.rows for c in report.calls] == [3]  # the others shared one call of the model's T


def test_duplicate_and_late_deliveries_change_nothing(ctx: StageContext, default_bundle) -> None:
    version = default_bundle.metadata.version
    ids = [add_segment(ctx, f"dup-{i}", version, seed=i, persons=1 + i % 2) for i in range(4)]
    report = stages.run_inference_batch(ctx, [*ids, ids[0], ids[1], "no-such-segment"])
    assert report.statuses == {**dict.fromkeys(ids, "done"), "no-such-segment": None}
    first = [stored(ctx, s, version).scores for s in ids]
    again = stages.run_inference_batch(ctx, ids)
    assert again.statuses == dict.fromkeys(ids) and again.calls == []
    assert stages.run_inference(ctx, ids[0]) is None
    for segment_id, scores in zip(ids, first, strict=True):
        result = stored(ctx, segment_id, version)
        assert result.scores == scores
        assert result.segment.deliveries == {"inference": 1}
        with ctx.session_factory() as session:
            rows = repo.query_results(session=session, video=result.video_id)
            persons = repo.video_persons(
                session=session, video_id=result.video_id, model_version=version
            )
        assert len(rows) == 1 and rows[0].status == "done"
        assert len(persons) == len(scores)
        [main] = [p for p in persons if p.main]
        main_scores = [getattr(main, trait) for trait in TRAITS]
        assert list(rows[0].traits.values()) == pytest.approx(main_scores, abs=1e-6)
        assert any(np.allclose(main_scores, person, atol=1e-6) for person in scores)


def test_segments_are_grouped_by_their_pinned_model_version(
    ctx: StageContext, default_bundle, other_bundle
) -> None:
    old, new = default_bundle.metadata.version, other_bundle.metadata.version
    ids = [add_segment(ctx, f"v{i}", old if i % 2 else new, seed=100 + i) for i in range(6)]
    report = stages.run_inference_batch(ctx, ids)
    assert set(report.statuses.values()) == {"done"}
    assert sorted(c.rows for c in report.calls) == [3, 3]
    for index, segment_id in enumerate(ids):
        version = old if index % 2 else new
        other = new if index % 2 else old
        assert len(stored(ctx, segment_id, version).scores) == 1
        assert stored(ctx, segment_id, other).scores == []
        with ctx.session_factory() as session:
            video_id = repo.get_segment(session=session, segment_id=segment_id).video_id
            assert repo.get_prediction(session=session, video_id=video_id, model_version=version)
            assert not repo.get_prediction(session=session, video_id=video_id, model_version=other)


def test_outages_ask_for_redelivery_and_store_nothing(ctx: StageContext, default_bundle) -> None:
    version = default_bundle.metadata.version
    fine = add_segment(ctx, "fine", version, seed=1)
    unreadable = add_segment(ctx, "unreadable", version, seed=2)
    ctx.store.down = set(feature_keys(ctx, unreadable))
    report = stages.run_inference_batch(ctx, [fine, unreadable])
    assert report.statuses == {fine: "done", unreadable: stages.RETRY}
    assert "connection reset" in report.errors[unreadable]
    assert stored(ctx, unreadable, version).segment.status == "inference"
    # An outage longer than the delivery cap: each start is taken back, none fails it.
    for _ in range(ctx.max_deliveries + 2):
        report = stages.run_inference_batch(ctx, [unreadable])
        assert report.statuses == {unreadable: stages.RETRY}
    result = stored(ctx, unreadable, version)
    assert result.segment.deliveries == {"inference": 0} and result.scores == []
    assert result.video.status == "extracting"
    ctx.store.down = set()
    assert stages.run_inference_batch(ctx, [unreadable]).statuses == {unreadable: "done"}
    result = stored(ctx, unreadable, version)
    assert result.segment.deliveries == {"inference": 1} and result.video.status == "done"


def test_an_unloadable_model_version_asks_for_redelivery(ctx: StageContext, default_bundle) -> None:
    version = default_bundle.metadata.version
    with ctx.session_factory.begin() as session:
        repo.ensure_model_version(session=session, version="v-gone", trained=True, metadata={})
    lost = add_segment(ctx, "lost", "v-gone", seed=3)
    fine = add_segment(ctx, "fine2", version, seed=4)
    report = stages.run_inference_batch(ctx, [lost, fine])
    assert report.statuses == {lost: stages.RETRY, fine: "done"}
    assert "not registered" in report.errors[lost]
    result = stored(ctx, lost, "v-gone")
    assert result.segment.status == "inference" and result.segment.deliveries == {"inference": 0}


def test_a_segment_delivered_too_often_fails_with_that_message(
    ctx: StageContext, default_bundle
) -> None:
    segment_id = add_segment(ctx, "poison", default_bundle.metadata.version, seed=5)
    with ctx.session_factory.begin() as session:
        for _ in range(ctx.max_deliveries):
            repo.count_segment_delivery(session=session, segment_id=segment_id, stage="inference")
    report = stages.run_inference_batch(ctx, [segment_id])
    assert report.statuses == {segment_id: "failed"} and report.calls == []
    result = stored(ctx, segment_id, default_bundle.metadata.version)
    assert result.segment.status == "failed"
    assert result.segment.error.startswith("inference stage started 7 times without finishing")
    assert result.video.status == "failed" and "7 times without finishing" in result.video.error


def test_queue_delay_counts_from_the_send_time_when_given(
    ctx: StageContext, default_bundle
) -> None:
    version = default_bundle.metadata.version
    ids = [add_segment(ctx, f"q{i}", version, seed=i) for i in range(2)]
    now = time.time()
    report = stages.run_inference_batch(ctx, ids, sent_at={ids[0]: now - 2.5}, started_at=now)
    assert report.queue_delays[ids[0]] == pytest.approx(2.5)
    assert 0 <= report.queue_delays[ids[1]] < 5  # since its move to inference
    timings = stored(ctx, ids[0], version).segment.timings
    assert timings["inference_queue"] == pytest.approx(2.5)
    assert timings["inference_batch"] == 2.0 and timings["inference"] > 0


def test_a_remote_store_is_read_concurrently_with_the_same_results(
    ctx: StageContext, default_bundle
) -> None:
    # fsspec's in-memory filesystem stands in for a bucket: not local, so the batch's feature
    # sets are read by a pool of threads; outcomes must not depend on which path read them.
    version = default_bundle.metadata.version
    remote = dataclasses.replace(ctx, store=ArtifactStore(f"memory://bucket-{uuid.uuid4().hex}"))
    assert not remote.store.is_local and ctx.store.is_local
    local_ids = [
        add_segment(ctx, f"local-{s}", version, seed=s, persons=1 + s % 2) for s in range(6)
    ]
    remote_ids = [
        add_segment(remote, f"remote-{s}", version, seed=s, persons=1 + s % 2) for s in range(6)
    ]
    remote.store.delete_prefix(feature_keys(remote, remote_ids[2])[0])
    ctx.store.delete_prefix(feature_keys(ctx, local_ids[2])[0])
    local = stages.run_inference_batch(ctx, local_ids)
    report = stages.run_inference_batch(remote, remote_ids)
    assert [report.statuses[s] for s in remote_ids] == [local.statuses[s] for s in local_ids]
    assert report.statuses[remote_ids[2]] == "failed" and "missing" in report.errors[remote_ids[2]]
    assert [c.rows for c in report.calls] == [c.rows for c in local.calls] == [8]
    for one, other in zip(local_ids, remote_ids, strict=True):
        if one == local_ids[2]:
            continue
        expected = stored(ctx, one, version).scores
        np.testing.assert_allclose(stored(remote, other, version).scores, expected, atol=1e-6)
