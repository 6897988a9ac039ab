"""Inference: the cross-attention model over batches of segments, person by person.

The same three steps as every stage (`tasks.stages.skeleton`), a batch of segments at a time:

* guard: one transaction claims the batch, counting a delivery per segment and failing those
  delivered more than `max_deliveries` times;
* run: segments are grouped by their video's pinned model version and each version's bundle
  loaded (one that fails its check fails its segments at once; one that cannot be reached
  now sends them back); each segment's features are read against that bundle's shapes (a
  missing, corrupt or misshapen set fails that segment alone) and split into one row per
  person; every row of a version runs through padded, bucketed calls of its bundle;
* finish: one transaction stores each person's prediction and attention map, moves each
  segment, and aggregates each video whose last segment this made final.

The per-segment Celery task is a batch of one, so there is one inference path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InputError, ModelBundleError, ModelIntegrityError, RetryableError
from core.model.batching import DEFAULT_BUCKETS, FeatureSet, ModelCall, run_batched
from core.pipeline import scores_problem
from core.status import VideoStatus
from db import repository as repo
from db.repository.segments import SegmentUpdate
from tasks.context import StageContext
from tasks.stages.feature_reads import SegmentKey, load_many
from tasks.stages.segment_rows import SEGMENT_ROWS, load_segment
from tasks.stages.skeleton import gave_up

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.bundles.bundle import ModelBundle

#: `InferenceBatchReport.statuses`: the segment's message should be delivered again later.
RETRY = "retry"
_FROM = (VideoStatus.INFERENCE,)


@dataclass
class InferenceBatchReport:
    """What `run_inference_batch` did, per segment id, and the model calls it made.

    `statuses[id]` is `done` or `failed` when this call stored that outcome, `RETRY` when the
    segment met an outage (storage, a model bundle out of reach) and its message should come
    again, None when there was nothing to do (unknown, already finished, a duplicate).
    """

    statuses: dict[str, str | None]
    # Seconds each claimed segment waited, from being queued to the start of this batch.
    queue_delays: dict[str, float] = field(default_factory=dict)
    calls: list[ModelCall] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Claim:
    segment_id: str
    model_version: str | None
    deliveries: int
    queued_since: float  # epoch seconds of the segment's last move
    video_id: str
    index: int


@dataclass
class PersonScores:
    scores: list[float]
    attention: np.ndarray
    faces_found: int


@dataclass
class Outcome:
    """One segment's inference: each person's prediction (`done`) or an error (`failed`)."""

    segment_id: str
    status: VideoStatus
    model_version: str | None = None
    model_trained: bool = False
    persons: list[PersonScores] = field(default_factory=list)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


def run_inference(ctx: StageContext, segment_id: str) -> str | None:
    """One segment as a batch of one: `done`, `failed`, or None (nothing to do).

    An outage raises `RetryableError`, so the task is retried later.
    """
    report = run_inference_batch(ctx, [segment_id], buckets=(1,))
    status = report.statuses[segment_id]
    if status == RETRY:
        raise RetryableError(report.errors[segment_id])
    return status


def run_inference_batch(
    ctx: StageContext,
    segment_ids: Sequence[str],
    *,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    sent_at: Mapping[str, float] | None = None,
    started_at: float | None = None,
) -> InferenceBatchReport:
    """The cross-attention model for many segments at once; stores predictions and moves.

    The caller acknowledges the messages only after this returns, so a crash before the
    commit leaves them to be delivered again, and a duplicate finds its segment done.

    `sent_at` gives, where known, the epoch second a segment's message was sent; otherwise
    the queue delay counts from the segment's last move. Besides the `inference` seconds,
    each segment's timings record `inference_queue` (seconds) and `inference_batch` (how many
    person rows shared its model call: a count, not seconds).
    """
    started = time.perf_counter()
    started_at = time.time() if started_at is None else started_at
    report = InferenceBatchReport(statuses=dict.fromkeys(segment_ids))
    claims = _guard(ctx, segment_ids, report)
    for claim in claims:
        sent = (sent_at or {}).get(claim.segment_id) or claim.queued_since
        report.queue_delays[claim.segment_id] = max(0.0, started_at - sent)
    outcomes = _run(ctx, [c for c in claims if c.model_version], buckets, report)
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        outcome.timings = {
            "inference": elapsed,
            "inference_queue": report.queue_delays.get(outcome.segment_id, 0.0),
            **outcome.timings,
        }
    # A segment sent back for an outage takes its start back: minutes of outage must not
    # use up the delivery cap of a healthy segment.
    retried = [s for s, status in report.statuses.items() if status == RETRY]
    with ctx.session_factory.begin() as session:
        moved = {o.segment_id for o in outcomes if _finish(ctx, session, o)}
        for segment_id in retried:
            repo.release_segment_delivery(session=session, segment_id=segment_id, stage="inference")
    for outcome in outcomes:
        report.statuses[outcome.segment_id] = (
            outcome.status if outcome.segment_id in moved else None
        )
        if outcome.error:
            report.errors[outcome.segment_id] = outcome.error
    return report


def _guard(
    ctx: StageContext, segment_ids: Sequence[str], report: InferenceBatchReport
) -> list[Claim]:
    """Count this delivery of each segment in `inference`; fail those delivered too often.

    Segments are locked in id order, so two workers claiming overlapping batches cannot
    deadlock.
    """
    claims: list[Claim] = []
    with ctx.session_factory.begin() as session:
        for segment_id in sorted(set(segment_ids)):
            loaded = load_segment(session, segment_id)
            if loaded is None or loaded[0].status not in _FROM:
                continue
            segment, ref = loaded
            queued = segment.updated_at.timestamp()  # type: ignore[attr-defined]
            starts = repo.count_segment_delivery(
                session=session, segment_id=segment_id, stage="inference"
            )
            if starts > ctx.max_deliveries:
                SEGMENT_ROWS.finish(
                    ctx,
                    session,
                    segment_id,
                    SegmentUpdate(VideoStatus.FAILED, error=gave_up("inference", starts)),
                    _FROM,
                )
                report.statuses[segment_id] = VideoStatus.FAILED
                continue
            assert ref.index is not None
            claims.append(
                Claim(segment_id, ref.model_version, starts, queued, ref.video_id, ref.index)
            )
    return claims


def _run(
    ctx: StageContext,
    claims: Sequence[Claim],
    buckets: Sequence[int],
    report: InferenceBatchReport,
) -> list[Outcome]:
    """Load each pinned version's bundle, read its segments' features, predict per person."""
    outcomes: list[Outcome] = []
    pinned: dict[str, list[str]] = {}
    where = {c.segment_id: SegmentKey(c.video_id, c.index) for c in claims}
    for claim in claims:
        assert claim.model_version is not None  # the caller left out those without
        pinned.setdefault(claim.model_version, []).append(claim.segment_id)
    bundles: dict[str, ModelBundle] = {}
    for version, segment_ids in pinned.items():
        try:
            bundles[version] = ctx.load_bundle(version)
        except ModelIntegrityError as exc:  # permanent: never passes on a later delivery
            outcomes.extend(Outcome(s, VideoStatus.FAILED, error=str(exc)) for s in segment_ids)
        except (ModelBundleError, RetryableError) as exc:
            for segment_id in segment_ids:
                report.statuses[segment_id] = RETRY
                report.errors[segment_id] = f"model version {version}: {exc}"
    loaded = load_many(
        ctx,
        {s: (where[s], bundles[version].metadata) for version in bundles for s in pinned[version]},
    )
    for version, bundle in bundles.items():
        members: list[tuple[str, list[FeatureSet]]] = []
        for segment_id in pinned[version]:
            features = loaded[segment_id]
            if isinstance(features, InputError):
                outcomes.append(Outcome(segment_id, VideoStatus.FAILED, error=str(features)))
            elif isinstance(features, RetryableError):
                report.statuses[segment_id] = RETRY
                report.errors[segment_id] = str(features)
            elif isinstance(features, Exception):
                raise features  # unforeseen: the batch goes back, bounded by the delivery cap
            else:
                members.append((segment_id, features))
        outcomes.extend(_predict_group(version, bundle, members, buckets, report))
    return outcomes


def _predict_group(
    version: str,
    bundle: ModelBundle,
    members: list[tuple[str, list[FeatureSet]]],
    buckets: Sequence[int],
    report: InferenceBatchReport,
) -> list[Outcome]:
    """Outcomes of one model version's segments: every person a row of its batched calls."""
    meta = bundle.metadata
    outcomes: list[Outcome] = []
    rows: list[FeatureSet] = []
    owners: list[tuple[str, int]] = []  # (segment id, rows) in order
    for segment_id, sets in members:
        try:
            checked = [p.checked(meta.static_dim, meta.dynamic_dim) for p in sets]
        except InputError as exc:
            outcomes.append(Outcome(segment_id, VideoStatus.FAILED, error=str(exc)))
            continue
        rows.extend(checked)
        owners.append((segment_id, len(checked)))
    if not rows:
        return outcomes
    predicted = run_batched(bundle.predict, rows, buckets, meta.num_frames)
    report.calls.extend(predicted.calls)
    index = 0
    for segment_id, count in owners:
        scored: list[PersonScores] = []
        problem = None
        batch_rows = 0
        for row in range(index, index + count):
            problem = problem or scores_problem(predicted.scores[row], version)
            batch_rows = max(batch_rows, predicted.calls[predicted.call_of[row]].rows)
            scored.append(
                PersonScores(
                    scores=[float(x) for x in predicted.scores[row]],
                    attention=predicted.attention[row],
                    faces_found=int(rows[row].static_mask.sum()),
                )
            )
        index += count
        if problem is not None:
            outcomes.append(Outcome(segment_id, VideoStatus.FAILED, error=problem))
            continue
        outcomes.append(
            Outcome(
                segment_id,
                VideoStatus.DONE,
                model_version=meta.version,
                model_trained=meta.trained,
                persons=scored,
                timings={"inference_batch": float(batch_rows)},
            )
        )
    return outcomes


def _finish(ctx: StageContext, session: Session, outcome: Outcome) -> bool:
    """Store one segment's predictions and move it, if it is still in `inference`."""
    segment = repo.get_segment(session=session, segment_id=outcome.segment_id)
    if segment is None or segment.status not in _FROM:
        return False
    if outcome.status == VideoStatus.DONE:
        person_ids = [p.id for p in sorted(segment.segment_persons, key=lambda p: p.index)]
        if len(person_ids) != len(outcome.persons):
            outcome.status = VideoStatus.FAILED
            outcome.error = (
                f"stored features hold {len(outcome.persons)} persons but the segment has "
                f"{len(person_ids)} stored"
            )
        else:
            assert outcome.model_version is not None
            for person_id, person in zip(person_ids, outcome.persons, strict=True):
                repo.save_segment_prediction(
                    session=session,
                    segment_person_id=person_id,
                    model_version=outcome.model_version,
                    scores=person.scores,
                    model_trained=outcome.model_trained,
                    attention=person.attention,
                )
    changes = SegmentUpdate(outcome.status, error=outcome.error, timings=outcome.timings)
    return SEGMENT_ROWS.finish(ctx, session, outcome.segment_id, changes, _FROM)
