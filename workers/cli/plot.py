"""`oceanstream plot`: a stored video's five traits over time, as a PNG."""

from __future__ import annotations

from pathlib import Path

import typer

from workers.cli.app import app, load_settings, open_database, out


@app.command()
def plot(
    video: str = typer.Argument(
        ..., help="A path as given, a file name, or a video id (or 8+ of its chars)."
    ),
    out_path: Path = typer.Option(..., "--out", help="PNG path."),
) -> None:
    """Draw a video's traits over time: a panel per trait, a line per person.

    Each person's segment scores are a line, its aggregate a dashed line with the spread
    across its segments shaded; segments without a face, failed or unfinished are shaded
    bands. Scores from an untrained model say so on the figure.
    """
    from workers.services.timeline import plot_video

    session_factory = open_database(load_settings())
    path = plot_video(session_factory, video, out_path)
    out.print(str(path), highlight=False, soft_wrap=True, markup=False)
