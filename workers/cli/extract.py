"""`oceanstream extract`: a labelled video set to stored crops, masks and flow per clip."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from workers.cli.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, app, err, load_settings, out

if TYPE_CHECKING:
    from core.training.extraction import DatasetLayout, ExtractionConfig
    from core.training.extraction_run import ClipOutcome
    from workers.settings import Settings

_SHOWN = 5  # examples listed per kind of problem
_COLUMNS = (
    TextColumn("{task.description}"),
    BarColumn(),
    MofNCompleteColumn(),
    TimeElapsedColumn(),
)


def _examples(items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def report_matching(labelled: Any) -> None:
    """Say how many labels matched a video, and list the ones that did not."""
    err.print(
        f"{labelled.name}: {len(labelled.clips)} labelled clips with a video "
        f"({labelled.format}, {labelled.source})",
        markup=False,
    )
    problems = (
        ("labels that point at a missing video", labelled.missing_videos),
        ("videos without labels (not used)", labelled.unlabelled_videos),
        ("file names found more than once (the first is used)", labelled.ambiguous_videos),
    )
    for what, items in problems:
        if items:
            err.print(f"[yellow]{len(items)} {what}[/]: {escape(_examples(items))}")


@app.command()
def extract(
    source: Path = typer.Argument(..., help="Labels: First Impressions folder/file, or a CSV."),
    videos: Path | None = typer.Option(None, "--videos", help="Video folder (default: labels')."),
    name: str | None = typer.Option(None, "--name", help="Data set name (default: folder name)."),
    folder: Path | None = typer.Option(
        None, "--out", help="Store the clips in this folder instead of the configured storage."
    ),
    video_column: str | None = typer.Option(None, "--video-column", help="Generic CSV only."),
    num_frames: int | None = typer.Option(None, "--num-frames", min=1, help="Default: settings."),
    via_queues: bool = typer.Option(
        False, "--via-queues", help="Send one message per clip to the faces workers."
    ),
    force: bool = typer.Option(False, "--force", help="Re-extract every clip."),
    timeout: float = typer.Option(0, "--timeout", help="With --via-queues: give up after S s."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Extract every labelled clip with the serving stages, skipping clips already done."""
    from core.training.datasets import load_labelled_set
    from core.training.extraction import ExtractionConfig
    from core.training.extraction_run import prepare_dataset
    from core.training.labels import DatasetError
    from workers.services.training import dataset_layout

    settings = load_settings()
    try:
        labelled = load_labelled_set(source, videos, video_column, name)
    except DatasetError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    report_matching(labelled)
    if not labelled.clips:
        err.print("error: no labelled clip has a video; check --videos")
        raise typer.Exit(EXIT_USAGE)
    layout = dataset_layout(settings, labelled.name, folder)
    config = ExtractionConfig.from_pipeline(settings.pipeline_config(), num_frames)
    try:
        manifest = prepare_dataset(labelled, layout, config, force)
    except DatasetError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None
    err.print(
        f"extracting to {layout} with T={config.num_frames}, flow {config.flow_method}",
        markup=False,
    )
    if via_queues:
        outcomes = _through_queues(settings, layout, manifest, config, timeout or None)
    else:
        outcomes = _in_process(settings, layout, manifest, config)
    _finish(labelled, layout, outcomes, as_json)


def _in_process(
    settings: Settings, layout: DatasetLayout, manifest: dict[str, Any], config: ExtractionConfig
) -> list[ClipOutcome]:
    from workers.services.extraction import extract_in_process

    with Progress(*_COLUMNS, console=err, transient=True) as progress:
        bar = progress.add_task("extracting", total=len(manifest["clips"]))
        return extract_in_process(
            settings, layout, manifest, config, on_clip=lambda _: progress.advance(bar)
        )


def _through_queues(
    settings: Settings,
    layout: DatasetLayout,
    manifest: dict[str, Any],
    config: ExtractionConfig,
    timeout: float | None,
) -> list[ClipOutcome]:
    from tasks.extract import QUEUE
    from workers.services.extraction import send_clips, wait_for_clips

    sent = send_clips(settings, layout, manifest)
    err.print(f"sent {len(sent[1])} clips to the {QUEUE!r} queue; {len(sent[0])} already there")
    try:
        with Progress(*_COLUMNS, console=err, transient=True) as progress:
            bar = progress.add_task("waiting for workers", total=len(manifest["clips"]))
            progress.update(bar, completed=len(sent[0]))
            return wait_for_clips(
                layout, manifest, config, sent, timeout, on_clip=lambda _: progress.advance(bar)
            )
    except ValueError as exc:
        err.print(f"error: {exc}", markup=False)
        raise typer.Exit(EXIT_USAGE) from None


def _finish(
    labelled: Any, layout: DatasetLayout, outcomes: list[ClipOutcome], as_json: bool
) -> None:
    from core.training.extraction_run import EXTRACTED, FAILED, NO_FACE, SKIPPED

    counts = {
        s: sum(o.status == s for o in outcomes) for s in (EXTRACTED, SKIPPED, NO_FACE, FAILED)
    }
    bad = [o for o in outcomes if o.status in (NO_FACE, FAILED)]
    if as_json:
        summary = {
            "dataset": labelled.name,
            "store": layout.location,
            "clips": len(outcomes),
            **counts,
            "problems": [{"clip": o.clip_id, "status": o.status, "error": o.error} for o in bad],
            "missing_videos": labelled.missing_videos,
            "unlabelled_videos": labelled.unlabelled_videos,
        }
        out.print_json(json.dumps(summary))
    err.print(
        f"{counts[EXTRACTED]} extracted, {counts[SKIPPED]} already there, "
        f"{counts[NO_FACE]} without a face, {counts[FAILED]} failed"
    )
    for outcome in bad[:20]:
        err.print(
            f"  [red]{outcome.status}[/] {escape(outcome.clip_id)}: {escape(str(outcome.error))}"
        )
    if len(bad) > 20:
        err.print(f"  ... and {len(bad) - 20} more (all in the manifest)")
    where = f"--data {layout.store.url.removeprefix('file://')}" if not layout.prefix else ""
    err.print(f"next: oceanstream train {labelled.name} {where}".rstrip(), markup=False)
    raise typer.Exit(EXIT_FAILED if counts[FAILED] else EXIT_OK)
