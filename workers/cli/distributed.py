"""`oceanstream submit`, `status`, `reconcile`: the distributed path's commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from celery import Celery

    from workers.broker.kombu_redis import KombuRedisLayout
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
    settings = load_settings()
    reconciler = _Reconciler(settings)
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


class _Reconciler:
    """Opens the database and the broker on first use, so an outage at start is a round
    that failed, like any later one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.celery: Celery | None = None
        self._redis: Any = None
        self._layout: KombuRedisLayout | None = None

    def run_once(self, older_than: float) -> int:
        from tasks.reconcile import find_lost_work
        from workers import bootstrap

        if self.celery is None:
            self.celery = self._connect()
        in_flight = None
        if self._layout is not None:

            def in_flight() -> set[tuple[str, str]]:
                return self._in_flight(older_than)

        from tasks.queues import STAGE_QUEUES, task_name

        work = find_lost_work(bootstrap.get_context(), older_than, in_flight)
        for stage, row_id in work:
            self.celery.send_task(task_name(stage), args=[row_id], queue=STAGE_QUEUES[stage])
        self._resend_callbacks(older_than)
        self._apply_retention()
        return len(work)

    def _resend_callbacks(self, older_than: float) -> None:
        """Send again the completion callbacks whose messages were lost."""
        from workers import bootstrap
        from workers.services.callbacks import resend_lost

        assert self.celery is not None
        on_broker = self._callbacks_on_broker(older_than) if self._layout is not None else None
        resent = resend_lost(
            bootstrap.get_context().session_factory,
            self.celery,
            idle_s=older_than,
            on_broker=on_broker,
        )
        if resent:
            err.print(f"reconcile: resent {plural(resent, 'lost callback')}", highlight=False)

    def _callbacks_on_broker(self, older_than: float) -> set[str]:
        """Job ids with a callback message waiting, or held by a worker (a retry waiting out
        its backoff) for less than the longest backoff, an attempt and `older_than`."""
        from workers.broker.queued_messages import queued_messages
        from workers.services.callbacks import MAX_BACKOFF_S, QUEUE, TASK

        assert self._layout is not None
        patience = MAX_BACKOFF_S + self.settings.callback_timeout_s + older_than
        now = time.time()
        return {
            str(message.args[0])
            for message in queued_messages(self._redis, self._layout, [QUEUE])
            if message.task == TASK
            and message.args
            and (not message.held or now - (message.held_since or 0.0) < patience)
        }

    def _apply_retention(self) -> None:
        """Erase what is older than OCEANSTREAM_RETENTION_DAYS, when that is set."""
        from workers import bootstrap
        from workers.services.erasure import purge_expired

        erased = purge_expired(self.settings, bootstrap.get_context().session_factory)
        if erased.jobs or erased.videos:
            err.print(f"reconcile: retention: {erased.summary()}", highlight=False)

    def _connect(self) -> Celery:
        from workers import bootstrap
        from workers.broker.kombu_redis import UnsupportedBrokerSetting, layout_of, redis_url
        from workers.celery_app import create_app

        open_database(self.settings)
        bootstrap.configure(self.settings)
        celery = create_app(self.settings)
        try:
            self._layout = layout_of(celery)
        except UnsupportedBrokerSetting as exc:
            err.print(
                f"reconcile: cannot see which messages are queued ({exc}); "
                "resending every idle video's stage",
                highlight=False,
                markup=False,
            )
        else:
            import redis

            self._redis = redis.Redis.from_url(
                redis_url(self.settings.broker_url.get_secret_value()),
                socket_timeout=10.0,
                socket_connect_timeout=5.0,
            )
        return celery

    def _in_flight(self, older_than: float) -> set[tuple[str, str]]:
        """(stage, video or segment id) of each stage message waiting on its queue, or held
        by a worker for less than `older_than` seconds.

        A message held longer is taken as lost with its worker (killed, its node gone): kombu
        would put it back only after the visibility timeout (12 minutes), so it is resent,
        and the stage's guard makes the late copy harmless.
        """
        from tasks.queues import STAGE_QUEUES, task_name
        from workers.broker.queued_messages import queued_messages
        from workers.celery_app import QUEUES

        assert self._layout is not None
        stage_of = {task_name(stage): stage for stage in STAGE_QUEUES}
        now = time.time()
        return {
            (stage_of[message.task], str(message.args[0]))
            for message in queued_messages(self._redis, self._layout, QUEUES)
            if message.task in stage_of
            and message.queue == STAGE_QUEUES[stage_of[message.task]]
            and message.args
            and (not message.held or now - (message.held_since or 0.0) < older_than)
        }
