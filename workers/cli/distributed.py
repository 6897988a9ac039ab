"""`oceanstream submit`, `status`, `reconcile`: the distributed path's commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.status import VideoStatus
from workers.cli.app import (
    EXIT_FAILED,
    EXIT_OK,
    app,
    collect_inputs,
    err,
    load_settings,
    open_database,
    out,
    plural,
)
from workers.cli.render import print_results_table

if TYPE_CHECKING:
    from workers.services.progress import JobProgress
    from workers.settings import Settings


def progress_line(videos: JobProgress, segments: JobProgress) -> str:
    """`videos 1/3 final, segments 7/12 final` (segments only once some are planned)."""
    line = f"videos {videos.finished}/{videos.total} final"
    if segments.total:
        line += f", segments {segments.finished}/{segments.total} final"
    return line


def _counts(progress: JobProgress) -> dict[str, int]:
    return {status.value: n for status, n in progress.counts.items()}


@app.command()
def submit(
    paths: list[Path] = typer.Argument(
        ..., metavar="PATH", help="Video files or folders of videos."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow the job until every video ends."),
    as_json: bool = typer.Option(False, "--json", help="With --wait: print JSON results."),
    timeout: float = typer.Option(
        0, "--timeout", metavar="SECONDS", help="With --wait: give up after S seconds."
    ),
) -> None:
    """Register a job, store its videos and queue them for the workers."""
    from workers.services import jobs
    from workers.services import progress as job_views

    settings = load_settings()
    inputs = collect_inputs(paths)
    jobs.check_broker(settings.broker_url.get_secret_value())  # before anything is stored
    session_factory = open_database(settings)
    registration = jobs.submit(settings, session_factory, inputs)
    err.print(f"job {registration.job_id}: {registration.summary()}", highlight=False)
    if not wait:
        out.print(registration.job_id, highlight=False)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("waiting", total=None)

        def show(progress: JobProgress) -> None:
            segments = job_views.job_segment_progress(session_factory, registration.job_id)
            bar.update(task, total=progress.total, completed=progress.finished)
            bar.update(task, description=progress_line(progress, segments))

        final, rows = job_views.follow_job(
            session_factory, registration.job_id, timeout_s=timeout or None, on_progress=show
        )
    if not final.done:
        unfinished = final.total - final.finished
        err.print(f"timed out with {unfinished} of {plural(final.total, 'video')} unfinished")
    dicts = [row.to_dict() for row in rows]
    if as_json:
        out.print_json(json.dumps(dicts))
    else:
        print_results_table(out, dicts)
    failed = any(row.status == VideoStatus.FAILED for row in rows)
    raise typer.Exit(EXIT_FAILED if failed or not final.done else EXIT_OK)


@app.command()
def status(
    job: str = typer.Argument(..., help="The job id printed by submit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per-state counts of a job's videos and of their segments, and the failures with their
    messages."""
    from workers.services import jobs
    from workers.services import progress as job_views

    session_factory = open_database(load_settings())
    progress = job_views.job_progress(session_factory, job)
    segments = job_views.job_segment_progress(session_factory, job)
    failures = jobs.job_failures(session_factory, job)
    report = {
        "job": job,
        "total": progress.total,
        "finished": progress.done,
        "counts": _counts(progress),
        "segments": {
            "total": segments.total,
            "finished": segments.finished,
            "counts": _counts(segments),
        },
        "failures": [{"video": name, "error": error} for name, error in failures],
    }
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(f"job {escape(job)}: {progress.finished}/{plural(progress.total, 'video')} finished")
    for state, count in progress.counts.items():
        if count:
            out.print(f"  {state.value:<11} {count}", highlight=False)
    if segments.total:
        out.print(f"segments: {segments.finished}/{segments.total} finished", highlight=False)
        for state, count in segments.counts.items():
            if count:
                out.print(f"  {state.value:<11} {count}", highlight=False)
    for name, error in failures:
        out.print(f"  [red]failed[/] {escape(name)}: {escape(error)}", highlight=False)


@app.command()
def reconcile(
    older_than: float = typer.Option(
        120.0, metavar="SECONDS", help="Resend work idle for this many seconds."
    ),
    loop: float = typer.Option(0.0, metavar="SECONDS", help="Repeat every S seconds (0: once)."),
) -> None:
    """Re-enqueue videos stuck in a non-final state (lost messages, dead workers).

    A video whose message still waits on its queue, or was taken by a worker less than
    SECONDS ago (being worked on), is left alone: a stopped stage finds one message per
    video when it comes back.
    With --loop, a database or broker outage is reported in one line per round and the
    next round tries again; a single run reports it and exits with 1. An error that is no
    outage (a bug) ends the command with its traceback, in either mode.
    """
    # Here, not at the top: the service loads the stage code and Celery (seconds), which
    # the other commands and --help should not wait for.
    from workers.services.reconcile import Reconciler

    settings = load_settings()

    def report(line: str) -> None:
        err.print(f"reconcile: {line}", highlight=False, markup=False)

    reconciler = Reconciler(settings, prepare=lambda: open_database(settings), report=report)
    while True:
        try:
            resent = reconciler.run_once(older_than)
            err.print(f"reconcile: resent {plural(resent, 'message')}")
        except Exception as exc:
            message = _outage_line(exc, settings)
            if message is None:
                raise
            err.print(f"reconcile: error: {message}", highlight=False, markup=False)
            if loop <= 0:
                raise typer.Exit(EXIT_FAILED) from None
        if loop <= 0:
            return
        time.sleep(loop)


def _outage_line(exc: Exception, settings: Settings) -> str | None:
    """One line for an outage (database, broker, storage); None for anything else."""
    from tasks.context import is_outage
    from workers.cli.failures import describe_failure
    from workers.services.errors import hide_password

    message = describe_failure(exc, settings)
    if message is not None or not is_outage(exc):
        return message
    reason = (str(exc).strip().splitlines() or [""])[0]
    for url in (settings.effective_database_url, settings.broker_url.get_secret_value()):
        reason = hide_password(reason, str(url))
    return f"{type(exc).__name__}: {reason}".rstrip(": ")
