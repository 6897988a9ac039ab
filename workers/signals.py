"""Worker lifecycle hooks: per-process set-up after the fork, models warmed before work."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import signals

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

    from workers.broker.kombu_redis import KombuRedisLayout, UnsupportedBrokerSetting
    from workers.celery_app import BROKER_TRANSPORT_OPTIONS, QUEUES
    from workers.metrics import QueueLengthCollector, start_exporter

    try:
        layout = KombuRedisLayout.from_transport_options(BROKER_TRANSPORT_OPTIONS)
    except UnsupportedBrokerSetting as exc:
        log.warning("queue lengths are not exported: %s", exc)
        return None
    registry = CollectorRegistry()
    collector = QueueLengthCollector(settings.broker_url.get_secret_value(), QUEUES, layout)
    registry.register(collector.start())
    start_exporter(registry, settings.metrics_port, settings.metrics_address)
    return collector


def connect_worker_signals(
    *,
    threads: int,
    preload_in_main: bool,
    settings: Settings | None = None,
    queues: frozenset[str] | None = None,
) -> None:
    @signals.celeryd_init.connect(weak=False)
    def _transport(conf: object, **_: object) -> None:
        from workers.celery_app import use_worker_transport

        use_worker_transport(conf)  # poison payloads are dead-lettered, not fatal

    if settings is not None:

        @signals.worker_ready.connect(weak=False)
        def _metrics(**_: object) -> None:
            start_queue_metrics(settings)

    if preload_in_main:

        @signals.worker_ready.connect(weak=False)
        def _ready(**_: object) -> None:
            _prepare_process(threads, queues)

    else:

        @signals.worker_process_init.connect(weak=False)
        def _child(**_: object) -> None:
            _prepare_process(threads, queues)
