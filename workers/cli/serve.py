"""`oceanstream serve`: the HTTP API (workers/api/) under uvicorn, in one process or
`--workers N` (uvicorn's own supervisor: N processes sharing the port, each building its
app with `build_app` after it starts; a process that dies is replaced)."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import typer

from workers.cli.app import app, load_settings, open_database

if TYPE_CHECKING:
    from fastapi import FastAPI


def build_app() -> FastAPI:
    """The API of one worker process (uvicorn's factory): its own settings, engine and pools."""
    from workers.api.app import create_app

    _log_at_level()
    settings = load_settings()
    return create_app(settings, open_database(settings))


#: How `serve` tells its worker processes uvicorn's log level.
LOG_LEVEL_ENV = "OCEANSTREAM_SERVE_LOG_LEVEL"


def _log_at_level() -> None:
    logging.getLogger("oceanstream").setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO"))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to bind."),
    workers: int = typer.Option(
        1,
        "--workers",
        min=1,
        max=64,
        help="API processes sharing the port (uvicorn's workers); about one per core.",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn's log level."),
    access_log: bool = typer.Option(
        False,
        "--access-log/--no-access-log",
        help="Log a line per request (off by default: /metrics counts requests per route and "
        "status, and a line per request costs a busy process about a twentieth of its CPU).",
    ),
) -> None:
    """Serve the HTTP API (OpenAPI at /docs and /openapi.json; every route under /v1)."""
    import uvicorn

    from workers.api.app import create_app

    # The API's own lines (a dropped upload, a service outage) at uvicorn's level, in this
    # process and in each worker process (they inherit the environment).
    os.environ[LOG_LEVEL_ENV] = log_level.upper()
    _log_at_level()
    # The settings and the schema are checked (and a fresh database migrated) once, here, so
    # a mistake is one clear error before any worker starts.
    settings = load_settings()
    session_factory = open_database(settings)
    if workers == 1:
        target: str | FastAPI = create_app(settings, session_factory)
    else:
        session_factory.kw["bind"].dispose()
        target = "workers.cli.serve:build_app"
    uvicorn.run(
        target,
        factory=workers > 1,
        workers=workers if workers > 1 else None,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        server_header=False,
        # Longer than uvicorn's 5 s: a client reusing a pooled connection the server has just
        # closed gets a read error; proxies and load balancers keep theirs open longer too.
        timeout_keep_alive=30,
        # The rate limit and logs see the peer; behind a proxy, set FORWARDED_ALLOW_IPS.
        proxy_headers=True,
    )
