"""`oceanstream serve`: the HTTP API (workers/api/) under uvicorn."""

from __future__ import annotations

import logging

import typer

from workers.cli.app import app, load_settings, open_database


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to bind."),
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

    # The API's own lines (a dropped upload, a service outage) at uvicorn's level.
    logging.getLogger("oceanstream").setLevel(log_level.upper())
    settings = load_settings()
    api = create_app(settings, open_database(settings))
    uvicorn.run(
        api,
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
