"""Inference-pool processes: `oceanstream worker --queues inference [--devices 0,1]`.

A pool process reports to Flower as `inference-pool-<pid>@<host>` (`workers.pool.events`)
and logs one line per batch. It is stateless (the database holds every segment's state,
storage its features), so adding processes, on one host or many, adds throughput. Each one
serves one accelerator: `--devices` starts one child per listed device, pinned with
`CUDA_VISIBLE_DEVICES`, and stops them all together.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.settings import Settings

log = logging.getLogger("oceanstream.worker")


LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(process)d] %(name)s: %(message)s"


def configure_logging(loglevel: str) -> None:
    """A worker logs at its `--loglevel`, whatever the CLI set up before (`force`)."""
    logging.basicConfig(level=loglevel.upper(), format=LOG_FORMAT, force=True)


def run_pool_process(settings: Settings, *, threads: int = 1, loglevel: str = "INFO") -> None:
    """Set up this process for inference, warm its model, then serve until SIGTERM/SIGINT."""
    configure_logging(loglevel)
    from workers.pool.accelerators import prepare_accelerator, set_memory_environment

    set_memory_environment()
    # Before any model is built: the dtype policy applies to models created after it.
    prepare_accelerator(settings.mixed_precision)
    from workers import bootstrap
    from workers.broker.kombu_redis import layout_of
    from workers.celery_app import QUEUES, create_app
    from workers.metrics import InferenceMetrics, QueueLengthCollector, start_exporter
    from workers.pool.batcher import InferenceBatcher
    from workers.pool.events import PoolEvents
    from workers.signals import limit_threads

    limit_threads(threads)
    bootstrap.configure(settings, threads=threads)
    app = create_app(settings)
    metrics = InferenceMetrics(max_batch_size=settings.max_batch_size)
    queue_lengths = QueueLengthCollector(
        settings.broker_url.get_secret_value(), QUEUES, layout_of(app)
    )
    metrics.registry.register(queue_lengths)
    events = PoolEvents(app)
    batcher = InferenceBatcher(
        app,
        bootstrap.get_context(),
        max_batch_size=settings.max_batch_size,
        max_wait_ms=settings.max_wait_ms,
        metrics=metrics,
        model_refresh_s=settings.model_refresh_s,
        batches_in_flight=settings.batches_in_flight,
        events=events,
    )
    version = batcher.refresh_models()
    if settings.metrics_port is not None:
        queue_lengths.start()
        start_exporter(metrics.registry, settings.metrics_port, settings.metrics_address)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: batcher.stop())
    log.info(
        "process ready with model %s: batches of up to %d, waiting at most %g ms (Flower: %s)",
        version,
        settings.max_batch_size,
        settings.max_wait_ms,
        events.hostname,
    )
    events.start()
    try:
        batcher.serve()
    finally:
        events.stop()
    log.info("inference pool process stopped")


def run_device_processes(argv: list[str], environments: list[dict[str, str]]) -> int:
    """Run `argv` once per environment (one per device); stop all when one stops or on a signal.

    Returns the exit status of the first child to end (0 after a requested stop), so a
    supervisor above (systemd, Kubernetes) restarts the whole set.
    """
    children = [subprocess.Popen(argv, env=env) for env in environments]
    stopping = False

    def forward(signum: int, _: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    status = None
    while status is None:
        for child in children:
            code = child.poll()
            if code is not None:
                status = code
                break
        else:
            time.sleep(0.2)
    if not stopping:
        log.error("an inference process exited with status %s; stopping the others", status)
        forward(signal.SIGTERM, None)
    for child in children:
        try:
            child.wait(60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0 if stopping else int(status or 1)


def child_argv(queues: str, threads: int, loglevel: str) -> list[str]:
    """The command line of one device's pool process."""
    return [
        sys.executable,
        "-m",
        "workers.cli",
        "worker",
        "--queues",
        queues,
        "--threads",
        str(threads),
        "--loglevel",
        loglevel,
    ]
