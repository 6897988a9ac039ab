"""`oceanstream worker` and `oceanstream flower`: the long-running processes."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

import typer

from workers.cli.app import EXIT_USAGE, app, err, load_settings

if TYPE_CHECKING:
    from workers.settings import Settings


@app.command()
def worker(
    queues: str = typer.Option(
        "ingest,faces,flow,inference", "--queues", "-Q", help="Comma-separated queues."
    ),
    concurrency: int = typer.Option(1, "--concurrency", "-c", min=1, help="Processes."),
    threads: int = typer.Option(
        1, "--threads", min=1, help="Compute threads per process (OpenCV, TensorFlow)."
    ),
    name: str | None = typer.Option(None, "--name", help="Worker name (default: queues@host)."),
    loglevel: str = typer.Option("INFO", "--loglevel"),
    batcher: bool | None = typer.Option(
        None,
        "--batcher/--no-batcher",
        help="Serve inference with the dynamic batcher (the default for a worker that serves "
        "only inference) or with the per-video Celery task.",
    ),
    devices: str | None = typer.Option(
        None,
        "--devices",
        help="Inference pool: one process per listed accelerator (e.g. 0,1), each pinned "
        "with CUDA_VISIBLE_DEVICES.",
    ),
) -> None:
    """Start a worker for some of the pipeline's queues.

    CPU queues (ingest, faces, flow) run a Celery prefork pool of `--concurrency` processes,
    each loading its models after the fork; one process is still a prefork child, since
    only the prefork pool enforces the stages' time limits (the solo pool ignores them). A
    worker that serves only `inference` is the inference pool: one process per accelerator
    (`--devices`; on a CPU host, `--concurrency` processes) that batches videos across
    messages (OCEANSTREAM_MAX_BATCH_SIZE, OCEANSTREAM_MAX_WAIT_MS). A worker that serves
    inference with other queues, or alone with `--no-batcher`, runs it per video.
    """
    from workers import bootstrap
    from workers.celery_app import QUEUES, create_app
    from workers.pool.process import configure_logging
    from workers.signals import connect_worker_signals

    # The CLI shows warnings only; a worker's log is its operators' view (`--loglevel`).
    configure_logging(loglevel)

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if not chosen or unknown:
        err.print(f"error: unknown queues {unknown}; choose from {', '.join(QUEUES)}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    use_batcher = chosen == ["inference"] if batcher is None else batcher
    if use_batcher and chosen != ["inference"]:
        err.print("error: --batcher serves the inference queue alone; use --queues inference")
        raise typer.Exit(EXIT_USAGE)
    if devices is not None and not use_batcher:
        err.print("error: --devices applies to the inference pool (--queues inference)")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings()
    if use_batcher:
        raise typer.Exit(_inference_pool(settings, concurrency, threads, loglevel, devices))
    bootstrap.configure(settings, threads=threads)
    # Per-video inference keeps one process (one model per accelerator).
    processes = 1 if chosen == ["inference"] else concurrency
    celery = create_app(settings)  # the stages' time limits, with the settings' overrides
    connect_worker_signals(threads=threads, settings=settings, queues=frozenset(chosen))
    node = name or f"{'-'.join(chosen)}-{os.getpid()}@{socket.gethostname()}"
    argv = [
        "worker",
        "--queues",
        ",".join(chosen),
        "--pool",
        "prefork",
        "--concurrency",
        str(processes),
        "--hostname",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--task-events",
    ]
    celery.worker_main(argv)


def _inference_pool(
    settings: Settings, processes: int, threads: int, loglevel: str, devices: str | None
) -> int:
    """One batcher process here, or one child per device (or per `--concurrency` on CPU)."""
    from workers.broker.kombu_redis import UnsupportedBrokerSetting, layout_of
    from workers.celery_app import create_app
    from workers.pool.accelerators import pool_environments, set_memory_environment
    from workers.pool.process import child_argv, run_device_processes, run_pool_process

    try:  # before any model is loaded: a broker the pool cannot use is a usage error
        layout_of(create_app(settings))
    except UnsupportedBrokerSetting as exc:
        err.print(f"error: {exc}", soft_wrap=True, markup=False)
        return EXIT_USAGE
    set_memory_environment()
    if devices is None and processes == 1:
        run_pool_process(settings, threads=threads, loglevel=loglevel)
        return 0
    try:
        environments = pool_environments(
            devices, processes, dict(os.environ), settings.metrics_port
        )
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False)
        return EXIT_USAGE
    return run_device_processes(child_argv("inference", threads, loglevel), environments)


@app.command()
def flower(
    port: int = typer.Option(5555, "--port"),
    address: str = typer.Option("127.0.0.1", "--address"),
) -> None:
    """Start Flower for this app (basic auth from OCEANSTREAM_FLOWER_USER / _PASSWORD)."""
    from workers.broker.flower_ui import include_configured_queues
    from workers.celery_app import create_app

    settings = load_settings()
    password = settings.flower_password.get_secret_value() if settings.flower_password else ""
    if not password:
        err.print("error: set OCEANSTREAM_FLOWER_PASSWORD (and optionally _USER) first")
        raise typer.Exit(EXIT_USAGE)
    celery = create_app(settings)
    include_configured_queues()
    # In-process arguments: the password is in no process's command line (`ps`), and Flower
    # logs the broker URL with its password masked.
    celery.start(
        [
            "flower",
            f"--port={port}",
            f"--address={address}",
            f"--basic-auth={settings.flower_user}:{password}",
        ]
    )
