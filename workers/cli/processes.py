"""`oceanstream worker` and `oceanstream flower`: the long-running processes."""

from __future__ import annotations

import os
import socket

import typer

from workers.cli.app import EXIT_USAGE, app, err, load_settings


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
) -> None:
    """Start a Celery worker for some of the pipeline's queues.

    CPU queues (ingest, faces, flow) run a prefork pool of `--concurrency` processes, each
    loading its models after the fork. A worker that serves only `inference` runs one
    process (one per accelerator: start one worker per GPU with CUDA_VISIBLE_DEVICES).
    """
    from workers import bootstrap
    from workers.celery_app import QUEUES, create_app
    from workers.signals import connect_worker_signals

    chosen = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = sorted(set(chosen) - set(QUEUES))
    if not chosen or unknown:
        err.print(f"error: unknown queues {unknown}; choose from {', '.join(QUEUES)}")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings()
    bootstrap.configure(settings, threads=threads)
    solo = chosen == ["inference"] or concurrency == 1
    celery = create_app(settings)
    connect_worker_signals(threads=threads, preload_in_main=solo)
    node = name or f"{'-'.join(chosen)}-{os.getpid()}@{socket.gethostname()}"
    argv = [
        "worker",
        "--queues",
        ",".join(chosen),
        "--pool",
        "solo" if solo else "prefork",
        "--concurrency",
        str(1 if solo else concurrency),
        "--hostname",
        node,
        "--loglevel",
        loglevel,
        "--without-gossip",
        "--without-mingle",
        "--task-events",
    ]
    celery.worker_main(argv)


@app.command()
def flower(
    port: int = typer.Option(5555, "--port"),
    address: str = typer.Option("127.0.0.1", "--address"),
) -> None:
    """Start Flower for this app (basic auth from OCEANSTREAM_FLOWER_USER / _PASSWORD)."""
    from workers.celery_app import create_app
    from workers.flower import include_configured_queues

    settings = load_settings()
    if not settings.flower_password:
        err.print("error: set OCEANSTREAM_FLOWER_PASSWORD (and optionally _USER) first")
        raise typer.Exit(EXIT_USAGE)
    celery = create_app(settings)
    include_configured_queues()
    celery.start(
        [
            "flower",
            f"--port={port}",
            f"--address={address}",
            f"--basic-auth={settings.flower_user}:{settings.flower_password}",
        ]
    )
