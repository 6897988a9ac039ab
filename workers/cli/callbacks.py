"""`oceanstream callback-worker`: delivers completion callbacks (the `callbacks` queue)."""

from __future__ import annotations

import os
import socket

import typer

from workers.cli.app import app, load_settings, open_database


@app.command("callback-worker")
def callback_worker(
    concurrency: int = typer.Option(4, "--concurrency", "-c", min=1, help="Threads."),
    loglevel: str = typer.Option("INFO", "--loglevel"),
) -> None:
    """Deliver job completion callbacks (signed POSTs, retried with backoff); no model loaded."""
    from workers.celery_app import create_app
    from workers.pool.process import configure_logging
    from workers.services.callbacks import QUEUE, register_callback_task

    configure_logging(loglevel)
    settings = load_settings()
    session_factory = open_database(settings)
    celery = create_app(settings)
    register_callback_task(celery, settings, session_factory)
    celery.worker_main(
        [
            "worker",
            "--queues",
            QUEUE,
            "--pool",
            "threads",
            "--concurrency",
            str(concurrency),
            "--hostname",
            f"{QUEUE}-{os.getpid()}@{socket.gethostname()}",
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )
