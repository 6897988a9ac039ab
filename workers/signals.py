"""Worker lifecycle hooks: per-process set-up after the fork, models warmed before work."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from celery import signals

from core.status import VideoStatus

if TYPE_CHECKING:
    from workers.metrics import QueueLengthCollector
    from workers.settings import Settings

log = logging.getLogger("oceanstream.worker")


def limit_threads(threads: int) -> None:
    """Cap OpenCV and TensorFlow threads: a worker host scales with processes, not threads."""
    import cv2
    import keras

    cv2.setNumThreads(threads)
    if keras.backend.backend() != "tensorflow":
        return  # never import TensorFlow for another backend (a host may not have it)
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except (ImportError, RuntimeError):  # another backend, or already initialised
        pass


def _prepare_process(threads: int, queues: frozenset[str] | None = None) -> None:
    from workers import bootstrap

    bootstrap.reset_after_fork()
    limit_threads(threads)
    context = bootstrap.get_context()
    # Load the active model and trace its compiled functions now, so the first task does
    # not pay for it.
    version = context.active_version()
    warm_models(context, context.load_bundle(version), queues)
    log.info("process ready with model %s", version)


def warm_models(context: object, bundle: object, queues: frozenset[str] | None = None) -> None:
    """Run the models the process's queues use (all when None) once on blank input.

    The fusion model is always warmed; the face encoder and detector only for `faces`, the
    flow encoder only for `flow`. A worker for inference alone thus needs no face detector
    (whose MTCNN runs on TensorFlow only).
    """
    import numpy as np

    meta = bundle.metadata  # type: ignore[attr-defined]
    t, crop, size = meta.num_frames, meta.crop_size, meta.flow_size
    mask = np.ones((1, t), bool)
    bundle.predict(  # type: ignore[attr-defined]
        np.zeros((1, t, meta.static_dim), np.float32),
        np.zeros((1, t, meta.dynamic_dim), np.float32),
        mask,
        mask,
    )
    if queues is None or "faces" in queues:
        bundle.encode_faces(np.zeros((t, crop, crop, 3), np.uint8))  # type: ignore[attr-defined]
        detector = context.detector(crop)  # type: ignore[attr-defined]
        detector.detect(np.zeros((t, 360, 640, 3), np.uint8))
    if queues is None or "flow" in queues:
        bundle.encode_flow(np.zeros((t, size, size, 2), np.float32))  # type: ignore[attr-defined]


def start_queue_metrics(settings: Settings) -> QueueLengthCollector | None:
    """Serve the queue lengths on `OCEANSTREAM_METRICS_PORT`, when it is set.

    Returns the collector, whose thread refreshes the cached lengths (None when off).
    """
    if settings.metrics_port is None:
        return None
    from prometheus_client import CollectorRegistry

    from workers.broker.kombu_redis import (
        BROKER_TRANSPORT_OPTIONS,
        KombuRedisLayout,
        UnsupportedBrokerSetting,
    )
    from workers.celery_app import QUEUES
    from workers.metrics import QueueLengthCollector, start_exporter, storage_metrics

    try:
        layout = KombuRedisLayout.from_transport_options(BROKER_TRANSPORT_OPTIONS)
    except UnsupportedBrokerSetting as exc:
        log.warning("queue lengths are not exported: %s", exc)
        return None
    registry = CollectorRegistry()
    collector = QueueLengthCollector(settings.broker_url.get_secret_value(), QUEUES, layout)
    registry.register(collector.start())
    # Bytes read by stages run in this process (a prefork pool's children count in their own).
    registry.register(storage_metrics().read_bytes)
    start_exporter(registry, settings.metrics_port, settings.metrics_address)
    return collector


def connect_worker_signals(
    *,
    threads: int,
    settings: Settings | None = None,
    queues: frozenset[str] | None = None,
) -> None:
    """The hooks of a Celery worker: its transport, metrics, per-child models, time-outs.

    Every worker runs the prefork pool (only it enforces the stages' time limits), so each
    pool child loads its models after the fork.
    """

    @signals.celeryd_init.connect(weak=False)
    def _transport(conf: object, **_: object) -> None:
        from workers.celery_app import use_worker_transport

        use_worker_transport(conf)  # poison payloads are dead-lettered, not fatal

    if settings is not None:

        @signals.worker_ready.connect(weak=False)
        def _metrics(**_: object) -> None:
            start_queue_metrics(settings)

    @signals.worker_process_init.connect(weak=False)
    def _child(**_: object) -> None:
        _prepare_process(threads, queues)

    if settings is not None:
        from core.backbones.registry import backbones_dir
        from workers.time_limits import stage_time_limits

        limits = stage_time_limits(settings.stage_time_limits)
        fail_videos_past_time_limits(
            settings.effective_database_url,
            limits,
            backbones_dir(settings.home_dir, settings.backbones),
        )


# Where each stage's video (ingest) or segment (the others) is while it runs: a stage stopped
# by its time limit fails it.
_RUNS_FROM = {
    "ingest": (VideoStatus.PENDING, VideoStatus.INGESTING),
    "sample": (VideoStatus.PENDING, VideoStatus.INGESTING),
    "faces": (VideoStatus.EXTRACTING,),
    "flow": (VideoStatus.EXTRACTING,),
    "inference": (VideoStatus.INFERENCE,),
}


def fail_videos_past_time_limits(
    database_url: str, limits: Mapping[str, tuple[float | None, float]], backbones: Path
) -> None:
    """Record a stage stopped by its time limit as that video's (or segment's) failure.

    A segment failed so may be its video's last: the video is then aggregated, its persons
    linked as the workers link them (`backbones` says whether FaceRes is installed).

    Celery acknowledges a timed-out task's message, so without this the video would wait in
    its stage until the reconciler resent it, only to time out again. The soft limit raises
    in the pool child and the hard limit kills it (Celery reports that in the parent); both
    send `task_failure`, and the handler, connected before the fork, runs where it is sent.
    It opens its own short-lived engine: the parent holds no database state to fork.
    """
    from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
    from celery import signals

    @signals.task_failure.connect(weak=False)
    def _timed_out(
        sender: object = None, exception: object = None, args: object = None, **_: object
    ) -> None:
        stage = str(getattr(sender, "name", "")).removeprefix("oceanstream.")
        if stage not in _RUNS_FROM or not isinstance(args, list | tuple) or not args:
            return
        soft, hard = limits[stage]
        if isinstance(exception, SoftTimeLimitExceeded):
            error = f"{stage} stage ran past its soft time limit of {soft:g} s and was stopped"
        elif isinstance(exception, TimeLimitExceeded):
            error = f"{stage} stage ran past its time limit of {hard:g} s and was killed"
        else:
            return
        _fail_row(database_url, backbones, str(args[0]), stage, error)


def _fail_row(database_url: str, backbones: Path, row_id: str, stage: str, error: str) -> None:
    from core.persons.person_links import linker_for
    from db.engine import make_engine, make_session_factory
    from db.repository.stages import StageUpdate, finish_stage
    from tasks.stages.segment_rows import finish_and_aggregate

    log = logging.getLogger("oceanstream.worker")
    kind = "video" if stage == "ingest" else "segment"
    changes = StageUpdate(VideoStatus.FAILED, error=error)
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine).begin() as session:
            if kind == "video":
                failed = finish_stage(
                    session=session,
                    video_id=row_id,
                    changes=changes,
                    from_statuses=_RUNS_FROM[stage],
                )
            else:
                failed = finish_and_aggregate(
                    linker_for(backbones), session, row_id, changes, _RUNS_FROM[stage]
                )
        if failed:  # Celery reports a hard time-out twice; the second finds it failed
            log.warning("%s %s failed: %s", kind, row_id, error)
    except Exception:  # the database is down: the reconciler sends the stage again later
        log.exception("could not record the time-out of %s %s", kind, row_id)
    finally:
        engine.dispose()
