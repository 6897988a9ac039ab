"""`oceanstream analyze`: every stage in this process, results stored in the database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from workers.cli.app import EXIT_FAILED, EXIT_OK, app, collect_inputs, err, load_settings, out
from workers.cli.render import print_results_table

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from core.pipeline import VideoResult


@app.command()
def analyze(
    paths: list[Path] = typer.Argument(..., help="Video files or folders of videos."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of results."),
    model: Path | None = typer.Option(None, "--model", help="Model bundle folder."),
    attention_dir: Path | None = typer.Option(
        None, "--attention-dir", help="Write attention-map PNGs here."
    ),
) -> None:
    """Analyze videos in this process (no broker) and store the results."""
    from core.pipeline import Analyzer
    from workers.bundles import UNTRAINED_WARNING, register_bundle, serving_bundle

    settings = load_settings()
    inputs = collect_inputs(paths)
    session_factory = _open_db(settings)
    bundle, uri = serving_bundle(session_factory, settings, model)
    if not bundle.metadata.trained:
        err.print(UNTRAINED_WARNING.format(version=bundle.metadata.version), style="yellow")
    register_bundle(session_factory, bundle, uri=uri)
    analyzer = Analyzer(bundle, settings.pipeline_config())
    job_id, video_ids = _register_inputs(session_factory, inputs)

    rows = _run(analyzer, session_factory, inputs, video_ids, attention_dir)
    if as_json:
        out.print_json(json.dumps(rows))
    else:
        print_results_table(out, rows)
        err.print(f"job {job_id}: {len(rows)} videos")
    failed = any(row["status"] == "failed" for row in rows)
    raise typer.Exit(EXIT_FAILED if failed else EXIT_OK)


def _open_db(settings: Any) -> sessionmaker:
    from workers.cli.app import open_database

    return open_database(settings)


def _register_inputs(session_factory: sessionmaker, inputs: list[Path]) -> tuple[str, list[str]]:
    """One job, one video row per distinct file content."""
    from db import repository as repo
    from workers.jobs import register_video

    with session_factory.begin() as session:
        job = repo.create_job(session=session, kind="analyze", options={})
        video_ids = [
            register_video(session=session, job_id=job.id, path=path, position=position).video_id
            for position, path in enumerate(inputs)
        ]
        return job.id, video_ids


def _run(
    analyzer: Any,
    session_factory: sessionmaker,
    inputs: list[Path],
    video_ids: list[str],
    attention_dir: Path | None,
) -> list[dict[str, Any]]:
    from core.contract import result_json
    from db.repository.outcomes import store_result

    rows: list[dict[str, Any]] = []
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("analyzing", total=len(inputs))
        for path, video_id, result in zip(
            inputs, video_ids, analyzer.analyze_many(inputs), strict=True
        ):
            with session_factory.begin() as session:
                store_result(session=session, video_id=video_id, result=result)
            if attention_dir is not None and result.attention is not None:
                _write_attention(attention_dir, path, video_id, result)
            rows.append(
                result_json(
                    video=str(path),
                    video_id=video_id,
                    status=result.status,
                    traits=result.traits,
                    faces_found=result.faces_found,
                    frames=result.frames,
                    model_version=result.model_version,
                    model_trained=result.model_trained,
                    error=result.error,
                )
            )
            progress.update(task, advance=1, description=f"{path.name}: {result.status}")
    return rows


def _write_attention(directory: Path, path: Path, video_id: str, result: VideoResult) -> None:
    from core.model import plot_attention_map

    directory.mkdir(parents=True, exist_ok=True)
    title = f"{path.name} ({result.model_version}{'' if result.model_trained else ', untrained'})"
    plot_attention_map(
        result.attention, save_path=directory / f"{path.stem}-{video_id[:8]}.png", title=title
    )
