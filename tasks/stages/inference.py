"""Inference: the cross-attention model over batches of videos, pinned version by version.

The same three steps as every stage (`tasks.stages.skeleton`), a batch at a time:

* guard: one transaction claims the batch, counting a delivery per video and failing those
  delivered more than `max_deliveries` times;
* run: videos are grouped by their pinned model version and each version's bundle loaded (one
  that fails its check fails its videos at once; one that cannot be reached now sends them
  back), features are read per video against that bundle's shapes (a missing, corrupt or
  misshapen set fails that video alone), and each group runs through padded, bucketed calls
  of its bundle;
* finish: one transaction stores every outcome (`finish_videos`).

The per-video Celery task is a batch of one, so there is one inference path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.batching import DEFAULT_BUCKETS, FeatureSet, ModelCall, run_batched
from core.errors import InputError, ModelBundleError, ModelIntegrityError, RetryableError
from core.pipeline import scores_problem
from core.status import VideoStatus
from db.repository.inference_batches import (
    ClaimedVideo,
    StageOutcome,
    claim_videos,
    finish_videos,
)
from db.repository.stages import release_delivery
from tasks.context import StageContext
from tasks.stages.feature_reads import load_many
from tasks.stages.skeleton import gave_up

if TYPE_CHECKING:
    from core.bundle import ModelBundle

#: `InferenceBatchReport.statuses`: the video's message should be delivered again later.
RETRY = "retry"
_FROM = [VideoStatus.INFERENCE]


@dataclass
class InferenceBatchReport:
    """What `run_inference_batch` did, per video id, and the model calls it made.

    `statuses[id]` is `done` or `failed` when this call stored that outcome, `RETRY` when the
    video met an outage (storage, a model bundle out of reach) and its message should come
    again, None when
    there was nothing to do (unknown, already finished, a duplicate delivery).
    """

    statuses: dict[str, str | None]
    # Seconds each claimed video waited, from being queued to the start of this batch.
    queue_delays: dict[str, float] = field(default_factory=dict)
    calls: list[ModelCall] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def run_inference(ctx: StageContext, video_id: str) -> str | None:
    """One video as a batch of one: `done`, `failed`, or None (nothing to do).

    An outage raises `RetryableError`, so the task is retried later.
    """
    report = run_inference_batch(ctx, [video_id], buckets=(1,))
    status = report.statuses[video_id]
    if status == RETRY:
        raise RetryableError(report.errors[video_id])
    return status


def run_inference_batch(
    ctx: StageContext,
    video_ids: Sequence[str],
    *,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    sent_at: Mapping[str, float] | None = None,
    started_at: float | None = None,
) -> InferenceBatchReport:
    """The cross-attention model for many videos at once; stores prediction, attention, status.

    The caller acknowledges the messages only after this returns, so a crash before the
    commit leaves them to be delivered again, and a duplicate finds its video done and does
    nothing.

    `sent_at` gives, where known, the epoch second a video's message was sent; otherwise the
    queue delay counts from the video's last state change. `started_at` is the epoch second
    the batch started (now by default). Besides the `inference` seconds, each video's timings
    record `inference_queue` (queue delay, seconds) and `inference_batch` (how many videos
    shared its model call: a count, not seconds).
    """
    started = time.perf_counter()
    started_at = time.time() if started_at is None else started_at
    report = InferenceBatchReport(statuses=dict.fromkeys(video_ids))
    claims = _guard(ctx, video_ids, report)
    for claim in claims:
        sent = (sent_at or {}).get(claim.video_id) or claim.queued_since.timestamp()
        report.queue_delays[claim.video_id] = max(0.0, started_at - sent)
    outcomes = _run(ctx, [c for c in claims if c.model_version], buckets, report)
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        outcome.timings = {
            "inference": elapsed,
            "inference_queue": report.queue_delays.get(outcome.video_id, 0.0),
            **outcome.timings,
        }
    # A video sent back for an outage (features or bundle out of reach) takes its start
    # back: minutes of outage must not use up the delivery cap of a healthy video.
    retried = [v for v, status in report.statuses.items() if status == RETRY]
    with ctx.session_factory.begin() as session:
        moved = finish_videos(session=session, outcomes=outcomes, from_statuses=_FROM)
        for video_id in retried:
            release_delivery(session=session, video_id=video_id, stage="inference")
    for outcome in outcomes:
        report.statuses[outcome.video_id] = outcome.status if outcome.video_id in moved else None
        if outcome.error:
            report.errors[outcome.video_id] = outcome.error
    return report


def _guard(
    ctx: StageContext, video_ids: Sequence[str], report: InferenceBatchReport
) -> list[ClaimedVideo]:
    """Count this delivery of each video in `inference`; fail those delivered too often."""
    with ctx.session_factory.begin() as session:
        claims = claim_videos(
            session=session, video_ids=video_ids, stage="inference", statuses=_FROM
        )
        over = [c for c in claims if c.deliveries > ctx.max_deliveries]
        finish_videos(
            session=session,
            outcomes=[
                StageOutcome(
                    c.video_id, VideoStatus.FAILED, error=gave_up("inference", c.deliveries)
                )
                for c in over
            ],
            from_statuses=_FROM,
        )
    for claim in over:
        report.statuses[claim.video_id] = VideoStatus.FAILED
    return [c for c in claims if c.deliveries <= ctx.max_deliveries]


def _run(
    ctx: StageContext,
    claims: Sequence[ClaimedVideo],
    buckets: Sequence[int],
    report: InferenceBatchReport,
) -> list[StageOutcome]:
    """Load each pinned version's bundle, read its videos' features, predict, version by version.

    Bundles come first: a video pinned to a version that fails its check is failed without
    reading its features, and each set is read against its own model's T and feature sizes.
    """
    outcomes: list[StageOutcome] = []
    pinned: dict[str, list[str]] = {}
    for claim in claims:
        assert claim.model_version is not None  # the caller left out those without
        pinned.setdefault(claim.model_version, []).append(claim.video_id)
    bundles: dict[str, ModelBundle] = {}
    for version, video_ids in pinned.items():
        try:
            bundles[version] = ctx.load_bundle(version)
        except ModelIntegrityError as exc:  # permanent: never passes on a later delivery
            outcomes.extend(StageOutcome(v, VideoStatus.FAILED, error=str(exc)) for v in video_ids)
        except (ModelBundleError, RetryableError) as exc:
            for video_id in video_ids:
                report.statuses[video_id] = RETRY
                report.errors[video_id] = f"model version {version}: {exc}"
    loaded = load_many(
        ctx, {v: bundles[version].metadata for version in bundles for v in pinned[version]}
    )
    groups: dict[str, list[tuple[str, FeatureSet]]] = {}
    for version in bundles:
        for video_id in pinned[version]:
            features = loaded[video_id]
            if isinstance(features, InputError):
                outcomes.append(StageOutcome(video_id, VideoStatus.FAILED, error=str(features)))
            elif isinstance(features, RetryableError):
                report.statuses[video_id] = RETRY
                report.errors[video_id] = str(features)
            elif isinstance(features, Exception):
                raise features  # unforeseen: the batch goes back, bounded by the delivery cap
            else:
                static, dynamic = features
                feature_set = FeatureSet(static.tokens, static.mask, dynamic)
                groups.setdefault(version, []).append((video_id, feature_set))
    for version, members in groups.items():
        outcomes.extend(_predict_group(version, bundles[version], members, buckets, report))
    return outcomes


def _predict_group(
    version: str,
    bundle: ModelBundle,
    members: list[tuple[str, FeatureSet]],
    buckets: Sequence[int],
    report: InferenceBatchReport,
) -> list[StageOutcome]:
    """Outcomes of one model version's videos: padded batched calls of its bundle."""
    meta = bundle.metadata
    outcomes: list[StageOutcome] = []
    ready: list[tuple[str, FeatureSet]] = []
    for video_id, features in members:
        try:
            ready.append((video_id, features.checked(meta.static_dim, meta.dynamic_dim)))
        except InputError as exc:
            outcomes.append(StageOutcome(video_id, VideoStatus.FAILED, error=str(exc)))
    if not ready:
        return outcomes
    predicted = run_batched(bundle.predict, [f for _, f in ready], buckets, meta.num_frames)
    report.calls.extend(predicted.calls)
    for index, (video_id, features) in enumerate(ready):
        scores = predicted.scores[index]
        problem = scores_problem(scores, version)
        if problem is not None:
            outcomes.append(StageOutcome(video_id, VideoStatus.FAILED, error=problem))
            continue
        call = predicted.calls[predicted.call_of[index]]
        outcomes.append(
            StageOutcome(
                video_id,
                VideoStatus.DONE,
                model_version=meta.version,
                model_trained=meta.trained,
                scores=[float(x) for x in scores],
                attention=predicted.attention[index],
                frames=features.num_frames,
                faces_found=int(features.static_mask.sum()),
                timings={"inference_batch": float(call.rows)},
            )
        )
    return outcomes
