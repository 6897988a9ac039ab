"""`oceanstream purge`: erase jobs or videos, and everything derived from them."""

from __future__ import annotations

import typer

from workers.cli.app import EXIT_USAGE, app, err, load_settings, open_database, out


@app.command()
def purge(
    job: str | None = typer.Option(None, "--job", help="Erase this job and its videos."),
    video: str | None = typer.Option(None, "--video", help="Erase this video (its id)."),
    older_than: float | None = typer.Option(
        None, "--older-than", metavar="DAYS", help="Erase every job and video older than DAYS."
    ),
) -> None:
    """Erase videos with their frames, features, predictions and attention (any tenant)."""
    from workers.services import erasure

    chosen = [option for option in (job, video, older_than) if option is not None]
    if len(chosen) != 1:
        err.print("error: give exactly one of --job, --video, --older-than")
        raise typer.Exit(EXIT_USAGE)
    settings = load_settings()
    session_factory = open_database(settings)
    if job is not None:
        erased = erasure.erase_job(settings, session_factory, job)
    elif video is not None:
        erased = erasure.erase_video(settings, session_factory, video)
    else:
        assert older_than is not None
        erased = erasure.purge_older_than(settings, session_factory, older_than)
    out.print(erased.summary(), highlight=False)
