"""`oceanstream submit`, `status`, `reconcile`: the distributed path's commands."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from workers.cli.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, app, err, load_settings, out
from workers.cli.render import print_results_table

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from core.storage import ArtifactStore

FINAL = ("done", "no_face", "failed")
STAGES = ("pending", "ingesting", "extracting", "inference", *FINAL)


@app.command()
def submit(
    paths: list[Path] = typer.Argument(..., help="Video files or folders of videos."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job until every video ends."),
    as_json: bool = typer.Option(False, "--json", help="With --wait: print JSON results."),
    timeout: float = typer.Option(0, "--timeout", help="With --wait: give up after S seconds."),
) -> None:
    """Register a job, store its videos and queue them for the workers."""
    from core.storage import ArtifactStore
    from workers.celery_app import create_app
    from workers.cli.app import collect_inputs, open_database

    settings = load_settings()
    inputs = collect_inputs(paths)
    session_factory = open_database(settings)
    store = ArtifactStore(settings.effective_storage_url)
    job_id, queued = register_job(session_factory, store, inputs)
    celery = create_app(settings)
    for video_id in queued:
        celery.send_task("oceanstream.ingest", args=[video_id], queue="ingest")
    err.print(f"job {job_id}: {len(inputs)} videos, {len(queued)} queued")
    if not wait:
        out.print(job_id)
        return
    rows = follow_job(session_factory, job_id, timeout=timeout or None)
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        print_results_table(out, rows)
    raise typer.Exit(EXIT_FAILED if any(r["status"] == "failed" for r in rows) else EXIT_OK)


def register_job(
    session_factory: sessionmaker, store: ArtifactStore, inputs: list[Path]
) -> tuple[str, list[str]]:
    """Create the job, store each new file once (by content hash); returns ids to enqueue."""
    from db import repository as repo
    from workers.jobs import register_video

    queued: list[str] = []
    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind="submit", options={})
        for position, path in enumerate(inputs):
            video = register_video(session=session, job_id=job.id, path=path, position=position)
            if not video.created:
                # Already stored: in flight or finished; the same bytes give the same result.
                continue
            if video.problem is not None:
                repo.transition_video(
                    session=session,
                    video_id=video.video_id,
                    to_status="failed",
                    error=f"cannot read {path}: {video.problem.strerror or video.problem}",
                )
                continue
            uri = store.put_file(path, f"videos/{video.content_hash}{path.suffix.lower()}")
            repo.set_storage_uri(session=session, video_id=video.video_id, uri=uri)
            queued.append(video.video_id)
        return job.id, queued


def follow_job(
    session_factory: sessionmaker, job_id: str, timeout: float | None = None, poll_s: float = 0.5
) -> list[dict[str, Any]]:
    """Show per-state counts until every video is final; returns the JSON result rows."""
    from db import repository as repo
    from workers.cli.results import row_json

    deadline = None if timeout is None else time.monotonic() + timeout
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("waiting", total=None)
        while True:
            with session_factory() as session:
                counts = repo.job_status_counts(session=session, job_id=job_id)
            total = sum(counts.values())
            finished = sum(counts.get(s, 0) for s in FINAL)
            summary = " ".join(f"{s} {counts[s]}" for s in STAGES if counts.get(s))
            progress.update(bar, total=total, completed=finished, description=summary)
            if finished == total or (deadline is not None and time.monotonic() > deadline):
                break
            time.sleep(poll_s)
    if finished < total:
        err.print(f"timed out with {total - finished} of {total} videos unfinished")
    with session_factory() as session:
        return [row_json(r) for r in repo.query_results(session=session, job_id=job_id)]


@app.command()
def status(
    job: str = typer.Argument(..., help="The job id printed by submit."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Per-state counts of a job's videos and the failures with their messages."""
    from db import repository as repo
    from workers.cli.app import open_database

    session_factory = open_database(load_settings())
    with session_factory() as session:
        if repo.get_job(session=session, job_id=job) is None:
            err.print(f"error: no job {job!r}")
            raise typer.Exit(EXIT_USAGE)
        counts = repo.job_status_counts(session=session, job_id=job)
        failures = repo.job_failures(session=session, job_id=job)
    total = sum(counts.values())
    finished = sum(counts.get(s, 0) for s in FINAL)
    report = {
        "job": job,
        "total": total,
        "finished": finished == total,
        "counts": {s: counts.get(s, 0) for s in STAGES},
        "failures": [{"video": name, "error": error} for name, error in failures],
    }
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(f"job {job}: {finished}/{total} finished")
    for state in STAGES:
        if counts.get(state):
            out.print(f"  {state:<11} {counts[state]}")
    for failure in report["failures"]:
        out.print(f"  [red]failed[/] {failure['video']}: {failure['error']}")


@app.command()
def reconcile(
    older_than: float = typer.Option(120.0, help="Resend work idle for this many seconds."),
    loop: float = typer.Option(0.0, help="Repeat every S seconds (0: once)."),
) -> None:
    """Re-enqueue videos stuck in a non-final state (lost messages, dead workers)."""
    from tasks.reconcile import find_lost_work
    from workers import bootstrap
    from workers.celery_app import create_app
    from workers.cli.app import open_database

    settings = load_settings()
    open_database(settings)
    bootstrap.configure(settings)
    celery = create_app(settings)
    while True:
        work = find_lost_work(bootstrap.get_context(), older_than)
        for stage, video_id in work:
            celery.send_task(f"oceanstream.{stage}", args=[video_id], queue=stage)
        err.print(f"reconcile: resent {len(work)} messages")
        if loop <= 0:
            return
        time.sleep(loop)
