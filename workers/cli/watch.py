"""`oceanstream watch`: a live source analysed segment by segment as it arrives."""

from __future__ import annotations

import json
import signal
import sys
from typing import Any

import typer

from core.status import VideoStatus
from workers.cli.app import EXIT_FAILED, EXIT_OK, app, err, load_settings, open_database


@app.command()
def watch(
    source: str = typer.Argument(
        ...,
        metavar="SOURCE",
        help="What FFmpeg opens live: rtsp://, rtmp://, srt://, udp://, tcp://, http(s):// "
        "(HLS too), a capture device, a file.",
    ),
    name: str | None = typer.Option(
        None,
        "--name",
        help="The video's name; a watch started again with the same name continues it "
        "(default: the source, without credentials).",
    ),
    in_process: bool = typer.Option(
        False, "--in-process", help="Analyse in this process (no broker, no workers)."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON line per segment as its result is stored."
    ),
) -> None:
    """Watch a live source: one video, analysed one segment at a time as it arrives.

    The video is `live` until the source ends (it is reopened with backoff for up to
    OCEANSTREAM_WATCH_RECONNECT_S when it drops) or SIGINT/SIGTERM stops the watch; then it
    is aggregated and final like any video.
    """
    from dataclasses import replace

    from core.persons.segment_analysis import POSITION_ONLY
    from core.video.live import SourceOptions
    from workers import bootstrap
    from workers.services.watch import NeverOpened, Watcher
    from workers.services.watch_metrics import WatchMetrics

    settings = load_settings()
    celery = None
    if not in_process:
        from workers.celery_app import create_app
        from workers.services.jobs import check_broker

        check_broker(settings.broker_url.get_secret_value())
        celery = create_app(settings)
    open_database(settings)
    bootstrap.configure(settings)
    ctx = bootstrap.get_context()
    if in_process:
        # One analysis thread: FFmpeg and TensorFlow share the cores with the reader.
        ctx = replace(ctx, config=replace(ctx.config, decode_threads=1))
    metrics = WatchMetrics()
    if settings.metrics_port is not None:
        from workers.metrics import start_exporter

        port = start_exporter(metrics.registry, settings.metrics_port, settings.metrics_address)
        err.print(f"metrics on http://{settings.metrics_address}:{port}/metrics", highlight=False)

    def show(segment: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(segment) + "\n")
            sys.stdout.flush()
        else:
            err.print(_segment_line(segment), highlight=False, markup=False)

    # A read that gets nothing for this long counts as a drop (and reopening gets as long).
    wait_s = max(2.0, min(10.0, settings.watch_reconnect_s))
    watcher = Watcher(
        ctx,
        source_options=SourceOptions(open_timeout_s=wait_s, read_timeout_s=wait_s),
        segment_seconds=settings.segment_seconds,
        reconnect_s=settings.watch_reconnect_s,
        celery=celery,
        metrics=metrics,
        on_segment=show,
    )

    def stop(signum: int, _frame: object) -> None:
        watcher.stop.set()
        # A second signal ends the process at once.
        signal.signal(signum, signal.SIG_DFL)

    watcher.prepare(warm=in_process)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        report = watcher.run(source, name, job_kind="analyze" if in_process else "submit")
    except NeverOpened as exc:
        err.print(
            f"error: cannot open {name or source}: {exc} (tried for "
            f"{settings.watch_reconnect_s:g} s)",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(EXIT_FAILED) from None
    gaps = f", {report.gaps} gap(s)" if report.gaps else ""
    err.print(
        f"video {report.video_id} ({report.name}): {report.status}, "
        f"{report.segments} segment(s) this watch{gaps}",
        highlight=False,
        markup=False,
    )
    if ctx.embed is None:
        err.print(f"note: {POSITION_ONLY}", style="yellow", markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_FAILED if report.status == VideoStatus.FAILED else EXIT_OK)


def _segment_line(segment: dict[str, Any]) -> str:
    """`segment 3 (6-8 s) done: person 0 O 0.51 C 0.48 ...`."""
    head = (
        f"segment {segment['index']} ({segment['start_s']:g}-{segment['end_s']:g} s) "
        f"{segment['status']}"
    )
    parts = []
    for person in segment["persons"]:
        if person["traits"] is None:
            continue
        scores = " ".join(f"{k[0].upper()} {v:.2f}" for k, v in person["traits"].items())
        parts.append(
            f"person {person['person'] if person['person'] is not None else '?'}: {scores}"
        )
    if segment["error"] and not parts:
        parts.append(segment["error"])
    return head + (": " + "; ".join(parts) if parts else "")
