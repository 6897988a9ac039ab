"""The pipeline stages as plain functions over ids: what each Celery task runs.

Each stage is idempotent and guarded by the video's state in the database, so a message
delivered twice, late, or after the video moved on does nothing harmful. The return value
says what to enqueue next; the caller (the task) does the enqueueing after the commit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from core.batching import (
    DEFAULT_BUCKETS,
    FeatureSet,
    ModelCall,
    run_batched,
)
from core.errors import InputError, ModelBundleError, NoFaceError, RetryableError
from core.pipeline import (
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_NO_FACE,
    StaticFeatures,
    VideoResult,
    extract_dynamic,
    extract_static,
    predict_one,
    sample_video,
)
from db import repository as repo
from db.repository.inference_batches import (
    ClaimedVideo,
    StageOutcome,
    claim_videos,
    finish_videos,
)
from db.results import store_result
from tasks.context import StageContext

FINAL_STATUSES = frozenset({STATUS_DONE, STATUS_NO_FACE, STATUS_FAILED})
#: `run_inference_batch`: the video's message should be delivered again later (an outage).
RETRY = "retry"


def frames_key(video_id: str) -> str:
    return f"work/{video_id}/frames.npz"


def static_key(video_id: str) -> str:
    return f"work/{video_id}/static.npz"


def dynamic_key(video_id: str) -> str:
    return f"work/{video_id}/dynamic.npz"


@dataclass(frozen=True)
class VideoRef:
    """A detached snapshot of the fields a stage needs."""

    id: str
    storage_uri: str | None
    model_version: str | None
    # The video already reached the state this stage's success leads to (see `_begin`).
    moved_on: bool = False


def _begin(
    ctx: StageContext,
    video_id: str,
    stage: str,
    allowed: set[str],
    leads_to: str | None = None,
) -> VideoRef | None:
    """Count this delivery and check the video is where this stage expects it.

    Returns None when the stage must not run: the video is unknown, already past this
    stage, or was delivered more often than `max_deliveries` (then it is failed, so a
    message that kills its worker every time cannot loop forever).

    A video found in `leads_to` gives a ref with `moved_on` set, and no delivery is counted:
    a worker can die after committing that move and before sending the next stage's
    messages, and the redelivered message then finds the move done. The caller sends the
    next messages again; the stages are idempotent, so a duplicate costs nothing but the
    check, and nothing is left waiting for the reconciler.
    """
    with ctx.session_factory.begin() as session:
        video = repo.get_video(session=session, video_id=video_id)
        if video is not None and leads_to is not None and video.status == leads_to:
            return VideoRef(video.id, video.storage_uri, video.model_version, moved_on=True)
        if video is None or video.status not in allowed:
            return None
        deliveries = repo.count_delivery(session=session, video_id=video_id, stage=stage)
        if deliveries > ctx.max_deliveries:
            repo.transition_video(
                session=session,
                video_id=video_id,
                to_status=STATUS_FAILED,
                from_statuses=sorted(allowed),
                error=f"{stage} stage was delivered {deliveries} times without finishing "
                f"(its worker died or timed out each time); gave up",
            )
            return None
        return VideoRef(video.id, video.storage_uri, video.model_version)


def _fail(ctx: StageContext, video_id: str, allowed: set[str], status: str, error: str) -> None:
    with ctx.session_factory.begin() as session:
        repo.transition_video(
            session=session,
            video_id=video_id,
            to_status=status,
            from_statuses=sorted(allowed),
            error=error,
        )


def run_ingest(ctx: StageContext, video_id: str) -> bool:
    """Probe and sample the stored video, write the frames; True: enqueue faces and flow."""
    allowed = {"pending", "ingesting"}
    ref = _begin(ctx, video_id, "ingest", allowed, leads_to="extracting")
    if ref is None:
        return False
    if ref.moved_on:  # send the next stage's messages again
        return True
    with ctx.session_factory.begin() as session:
        repo.transition_video(
            session=session, video_id=video_id, to_status="ingesting", from_statuses=["pending"]
        )
        # The first ingest to pin a version wins; a racing duplicate uses the same one.
        version = repo.pin_model_version(
            session=session, video_id=video_id, version=ref.model_version or ctx.active_version()
        )
    bundle = ctx.load_bundle(version)
    start = time.perf_counter()
    try:
        if ref.storage_uri is None:
            raise InputError("video has no stored copy to read")
        with ctx.store.local_copy(ref.storage_uri) as path:
            sampled = sample_video(
                path,
                bundle.metadata.num_frames,
                ctx.config.limits,
                ctx.config.frame_max_side,
                ctx.config.decode_threads,
            )
    except InputError as exc:
        _fail(ctx, video_id, allowed, STATUS_FAILED, str(exc))
        return False
    seconds = time.perf_counter() - start
    ctx.store.put_arrays(frames_key(video_id), frames=sampled.frames, successors=sampled.successors)
    with ctx.session_factory.begin() as session:
        repo.record_probe(session=session, video_id=video_id, info=sampled.info.to_dict())
        repo.record_timings(session=session, video_id=video_id, timings={"sample": seconds})
        repo.record_counts(session=session, video_id=video_id, frames=len(sampled.frames))
        moved = repo.transition_video(
            session=session,
            video_id=video_id,
            to_status="extracting",
            from_statuses=["ingesting"],
        )
        if moved:  # a duplicate delivery that lost the race must not touch the flags
            repo.reset_stage_flags(session=session, video_id=video_id)
        return moved


def _finish_feature_stage(
    ctx: StageContext, video_id: str, stage: str, timings: dict[str, float], **counts: int
) -> bool:
    """Record the stage as done; True for exactly one of faces/flow: enqueue inference."""
    with ctx.session_factory.begin() as session:
        repo.record_timings(session=session, video_id=video_id, timings=timings)
        if counts:
            repo.record_counts(session=session, video_id=video_id, **counts)
        both_ready = repo.mark_stage_ready(session=session, video_id=video_id, stage=stage)
        if both_ready:
            return repo.transition_video(
                session=session,
                video_id=video_id,
                to_status="inference",
                from_statuses=["extracting"],
            )
        return False


def run_faces(ctx: StageContext, video_id: str) -> bool:
    """Faces and face CNN; writes static tokens and the face mask. True: enqueue inference."""
    ref = _begin(ctx, video_id, "faces", {"extracting"}, leads_to="inference")
    if ref is None:
        return False
    if ref.moved_on:  # send the next stage's messages again
        return True
    if ref.model_version is None:
        return False
    bundle = ctx.load_bundle(ref.model_version)
    timings: dict[str, float] = {}
    try:
        uri = ctx.store.uri(frames_key(video_id))
        frames = ctx.store.get_arrays(uri, names=("frames",))["frames"]
        detector = ctx.detector(bundle.metadata.crop_size)
        static = extract_static(frames, detector, bundle, timings)
    except NoFaceError as exc:
        with ctx.session_factory.begin() as session:
            repo.record_counts(session=session, video_id=video_id, faces_found=0)
            repo.record_timings(session=session, video_id=video_id, timings=timings)
        _fail(ctx, video_id, {"extracting"}, STATUS_NO_FACE, str(exc))
        return False
    except InputError as exc:
        _fail(ctx, video_id, {"extracting"}, STATUS_FAILED, str(exc))
        return False
    ctx.store.put_arrays(static_key(video_id), tokens=static.tokens, mask=static.mask)
    return _finish_feature_stage(ctx, video_id, "faces", timings, faces_found=static.faces_found)


def run_flow(ctx: StageContext, video_id: str) -> bool:
    """Optical flow and flow CNN; writes dynamic tokens. True: enqueue inference."""
    ref = _begin(ctx, video_id, "flow", {"extracting"}, leads_to="inference")
    if ref is None:
        return False
    if ref.moved_on:  # send the next stage's messages again
        return True
    if ref.model_version is None:
        return False
    bundle = ctx.load_bundle(ref.model_version)
    timings: dict[str, float] = {}
    try:
        arrays = ctx.store.get_arrays(ctx.store.uri(frames_key(video_id)))
        dynamic = extract_dynamic(
            arrays["frames"], arrays["successors"], bundle, ctx.config.flow_method, timings
        )
    except InputError as exc:
        _fail(ctx, video_id, {"extracting"}, STATUS_FAILED, str(exc))
        return False
    ctx.store.put_arrays(dynamic_key(video_id), tokens=dynamic)
    return _finish_feature_stage(ctx, video_id, "flow", timings)


def load_features(ctx: StageContext, video_id: str) -> tuple[StaticFeatures, np.ndarray]:
    """The stored static tokens, face mask and dynamic tokens of one video."""
    static = ctx.store.get_arrays(ctx.store.uri(static_key(video_id)))
    dynamic = ctx.store.get_arrays(ctx.store.uri(dynamic_key(video_id)), names=("tokens",))[
        "tokens"
    ]
    tokens, mask = static["tokens"], static["mask"].astype(bool)
    if tokens.ndim != 2 or dynamic.ndim != 2 or len(tokens) != len(mask):
        raise InputError(
            f"stored features have shapes {tokens.shape}, {mask.shape}, {dynamic.shape}; "
            "expected [T, static_dim], [T], [T, dynamic_dim]"
        )
    return StaticFeatures(tokens=tokens, mask=mask), dynamic


def run_inference(ctx: StageContext, video_id: str) -> str | None:
    """The cross-attention model for one video; stores prediction, attention and status."""
    ref = _begin(ctx, video_id, "inference", {"inference"})
    if ref is None or ref.model_version is None:
        return None
    bundle = ctx.load_bundle(ref.model_version)
    start = time.perf_counter()
    try:
        static, dynamic = load_features(ctx, video_id)
        scores, attention = predict_one(bundle, static, dynamic)
    except InputError as exc:
        _fail(ctx, video_id, {"inference"}, STATUS_FAILED, str(exc))
        return STATUS_FAILED
    result = VideoResult(
        path=video_id,
        status=STATUS_DONE,
        model_version=bundle.metadata.version,
        model_trained=bundle.metadata.trained,
        scores=scores,
        attention=attention,
        faces_found=static.faces_found,
        frames=len(dynamic),
        timings={"inference": time.perf_counter() - start},
    )
    with ctx.session_factory.begin() as session:
        store_result(session=session, video_id=video_id, result=result, from_statuses=["inference"])
    return STATUS_DONE


@dataclass
class InferenceBatchReport:
    """What `run_inference_batch` did, per video id, and the model calls it made.

    `statuses[id]` is `done` or `failed` when this call stored that outcome, `RETRY` when the
    video met an outage (storage, model bundle) and its message should come again, None when
    there was nothing to do (unknown, already finished, a duplicate delivery).
    """

    statuses: dict[str, str | None]
    # Seconds each claimed video waited, from being queued to the start of this batch.
    queue_delays: dict[str, float] = field(default_factory=dict)
    calls: list[ModelCall] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


@dataclass
class _Claimed:
    video_id: str
    version: str
    features: FeatureSet


def run_inference_batch(
    ctx: StageContext,
    video_ids: Sequence[str],
    *,
    buckets: Sequence[int] = DEFAULT_BUCKETS,
    sent_at: Mapping[str, float] | None = None,
    started_at: float | None = None,
) -> InferenceBatchReport:
    """The cross-attention model for many videos at once; stores what `run_inference` stores.

    One transaction claims the batch (counting a delivery per video, failing those past
    `max_deliveries`), features are read per video (a missing or corrupt set fails that video
    alone), videos are grouped by their pinned model version and each group runs through
    padded, bucketed calls of its bundle, and one transaction stores every outcome. The
    caller acknowledges the messages only after this returns, so a crash before the commit
    leaves them to be delivered again, and a duplicate finds its video done and does nothing.

    `sent_at` gives, where known, the epoch second a video's message was sent; otherwise the
    queue delay counts from the video's last state change. `started_at` is the epoch second
    the batch started (now by default). Besides the `inference` seconds, each video's timings
    record `inference_queue` (queue delay, seconds) and `inference_batch` (how many videos
    shared its model call: a count, not seconds).
    """
    started = time.perf_counter()
    started_at = time.time() if started_at is None else started_at
    report = InferenceBatchReport(statuses=dict.fromkeys(video_ids))
    outcomes: list[StageOutcome] = []
    groups: dict[str, list[_Claimed]] = {}
    claims = _claim_batch(ctx, video_ids, report)
    loaded = _load_batch_features(ctx, [c.video_id for c in claims if c.model_version])
    for claim in claims:
        sent = (sent_at or {}).get(claim.video_id) or claim.queued_since.timestamp()
        report.queue_delays[claim.video_id] = max(0.0, started_at - sent)
        if claim.model_version is None:
            continue
        try:
            features = loaded[claim.video_id]
            if isinstance(features, Exception):
                raise features
            static, dynamic = features
        except InputError as exc:
            outcomes.append(StageOutcome(claim.video_id, STATUS_FAILED, error=str(exc)))
            continue
        except RetryableError as exc:
            report.statuses[claim.video_id] = RETRY
            report.errors[claim.video_id] = str(exc)
            continue
        features = FeatureSet(static.tokens, static.mask, dynamic)
        groups.setdefault(claim.model_version, []).append(
            _Claimed(claim.video_id, claim.model_version, features)
        )
    for version, members in groups.items():
        outcomes.extend(_predict_group(ctx, version, members, buckets, report))
    elapsed = time.perf_counter() - started
    for outcome in outcomes:
        outcome.timings = {
            "inference": elapsed,
            "inference_queue": report.queue_delays.get(outcome.video_id, 0.0),
            **outcome.timings,
        }
    with ctx.session_factory.begin() as session:
        moved = finish_videos(session=session, outcomes=outcomes, from_statuses=["inference"])
    for outcome in outcomes:
        report.statuses[outcome.video_id] = outcome.status if outcome.video_id in moved else None
        if outcome.error:
            report.errors[outcome.video_id] = outcome.error
    return report


# Feature sets read at once from a remote store (a bucket): each read is a network round trip.
_REMOTE_READS = 16
_readers: ThreadPoolExecutor | None = None
_readers_lock = threading.Lock()  # the pool's runner threads share one set of readers


def _load_batch_features(
    ctx: StageContext, video_ids: Sequence[str]
) -> dict[str, tuple[StaticFeatures, np.ndarray] | Exception]:
    """Each video's features, or the error reading them raised: one after another from a
    local store (the reads are CPU work there), `_REMOTE_READS` at a time from a remote one."""
    global _readers

    def read(video_id: str) -> tuple[StaticFeatures, np.ndarray] | Exception:
        try:
            return load_features(ctx, video_id)
        except Exception as exc:  # re-raised by the caller, in the batch's thread
            return exc

    if ctx.store.is_local:
        return {video_id: read(video_id) for video_id in video_ids}
    with _readers_lock:
        if _readers is None:
            _readers = ThreadPoolExecutor(_REMOTE_READS, thread_name_prefix="features")
        readers = _readers
    return dict(zip(video_ids, readers.map(read, video_ids), strict=True))


def _claim_batch(
    ctx: StageContext, video_ids: Sequence[str], report: InferenceBatchReport
) -> list[ClaimedVideo]:
    """Count this delivery of each video in `inference`; fail those delivered too often."""
    with ctx.session_factory.begin() as session:
        claims = claim_videos(
            session=session, video_ids=video_ids, stage="inference", statuses=["inference"]
        )
        over = [c for c in claims if c.deliveries > ctx.max_deliveries]
        finish_videos(
            session=session,
            outcomes=[
                StageOutcome(
                    c.video_id,
                    STATUS_FAILED,
                    error=f"inference stage was delivered {c.deliveries} times without "
                    "finishing (its worker died or timed out each time); gave up",
                )
                for c in over
            ],
            from_statuses=["inference"],
        )
    for claim in over:
        report.statuses[claim.video_id] = STATUS_FAILED
    return [c for c in claims if c.deliveries <= ctx.max_deliveries]


def _predict_group(
    ctx: StageContext,
    version: str,
    members: list[_Claimed],
    buckets: Sequence[int],
    report: InferenceBatchReport,
) -> list[StageOutcome]:
    """Outcomes of one model version's videos: padded batched calls of its bundle."""
    try:
        bundle = ctx.load_bundle(version)
    except (ModelBundleError, RetryableError) as exc:
        for member in members:
            report.statuses[member.video_id] = RETRY
            report.errors[member.video_id] = f"model version {version}: {exc}"
        return []
    meta = bundle.metadata
    outcomes: list[StageOutcome] = []
    ready: list[tuple[_Claimed, FeatureSet]] = []
    for member in members:
        try:
            ready.append((member, member.features.checked(meta.static_dim, meta.dynamic_dim)))
        except InputError as exc:
            outcomes.append(StageOutcome(member.video_id, STATUS_FAILED, error=str(exc)))
    if not ready:
        return outcomes
    predicted = run_batched(bundle.predict, [f for _, f in ready], buckets, meta.num_frames)
    report.calls.extend(predicted.calls)
    for index, (member, features) in enumerate(ready):
        scores = predicted.scores[index]
        if not (np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()):
            outcomes.append(
                StageOutcome(
                    member.video_id,
                    STATUS_FAILED,
                    error=f"model {version} produced invalid scores {scores.tolist()}",
                )
            )
            continue
        call = predicted.calls[predicted.call_of[index]]
        outcomes.append(
            StageOutcome(
                member.video_id,
                STATUS_DONE,
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
