"""`oceanstream train`: an extracted data set to an evaluated, trained model bundle."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from workers.cli.app import EXIT_FAILED, EXIT_OK, EXIT_USAGE, app, err, load_settings, out

if TYPE_CHECKING:
    from core.training.run import ExtractedClips


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    err.print(f"error: {message}", markup=False)
    return typer.Exit(code)


def _describe_clips(clips: ExtractedClips) -> None:
    err.print(f"{len(clips.refs)} extracted clips")
    if clips.failed:
        err.print(f"[yellow]{len(clips.failed)} clips could not be extracted and are left out[/]")
    if clips.not_extracted:
        err.print(
            f"[yellow]{len(clips.not_extracted)} labelled clips are not extracted yet "
            f"(run oceanstream extract again)[/]: {escape(', '.join(clips.not_extracted[:5]))}"
        )


def _describe_split(split: Any, clips: ExtractedClips, shared: list[str]) -> None:
    groups = {cid: ref.group for cid, ref in clips.refs.items()}
    info = split.to_metadata(groups)
    parts = ", ".join(
        f"{name} {info['clips'][name]} clips / {info['groups'][name]} persons"
        for name in ("train", "validation", "test")
    )
    err.print(f"split: {split.rule}: {parts}", markup=False)
    if shared:
        err.print(
            f"[yellow]warning: {len(shared)} persons appear in more than one split of this "
            f"split (identity can leak into the scores): {escape(', '.join(shared[:5]))}[/]"
        )


def _print_metrics(report: dict[str, Any]) -> None:
    from core.training.evaluation import metrics_table

    for name in ("validation", "test"):
        metrics = report["metrics"].get(name)
        if not metrics:
            continue
        table = Table(
            "trait",
            "accuracy (1-MAE)",
            "mean-prediction baseline",
            "difference",
            "Pearson r",
            title=f"{name}: {metrics['clips']} clips",
        )
        for row in metrics_table(metrics):
            table.add_row(*map(escape, row))
        out.print(table)
        for stream in ("static", "dynamic"):
            shuffled = metrics[f"{stream}_shuffled"]
            values = ", ".join(f"{t} {v:.4f}" for t, v in shuffled.items())
            out.print(f"  accuracy with {stream} tokens shuffled across clips: {values}")


@app.command()
def train(
    dataset: str | None = typer.Argument(None, help="Extracted data set name (or its labels)."),
    data: Path | None = typer.Option(None, "--data", help="A folder made by extract --out."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Run folder."),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Default 30."),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Default 8."),
    learning_rate: float | None = typer.Option(None, "--learning-rate", help="Default 1e-3."),
    patience: int | None = typer.Option(None, "--patience", min=1, help="Default 8 epochs."),
    seed: int | None = typer.Option(None, "--seed", help="Default 1234."),
    split_method: str = typer.Option("grouped", "--split", help="grouped or official."),
    validation_fraction: float = typer.Option(0.2, "--validation-fraction"),
    test_fraction: float = typer.Option(0.2, "--test-fraction"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output."),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto, on or off."),
    cache_gb: float = typer.Option(4.0, "--cache-gb", help="Hold the clips in memory up to."),
    register: bool = typer.Option(False, "--register", help="Record the bundle in the database."),
    activate: bool = typer.Option(False, "--activate", help="Register and activate it."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    face_backbone: str | None = typer.Option(
        None,
        "--face-backbone",
        help="scratch (default), faceres, emotion or faceres+emotion: an installed pretrained "
        "backbone as the face CNN, with a trainable projection.",
    ),
    fine_tune_layers: int | None = typer.Option(
        None,
        "--fine-tune-layers",
        min=0,
        help="Train the backbone's last N layers too (default 0: frozen, features cached).",
    ),
) -> None:
    """Train the face CNN, flow CNN and fusion model together; save an evaluated bundle."""
    from core.training.labels import DatasetError
    from core.training.plan import RunOptions, default_run_dir, plan_new_run, plan_resumed_run
    from core.training.run import extracted_clips, run_training
    from workers.services.training import extracted_dataset, runs_root

    options = RunOptions(
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        patience=patience,
        seed=seed,
        mixed_precision=mixed_precision,
        split_method=split_method,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        face_backbone=face_backbone,
        fine_tune_layers=fine_tune_layers,
    )
    if resume and output is None:
        raise _fail("--resume needs --output, the folder of the run to continue")
    settings = load_settings()
    try:
        layout = extracted_dataset(settings, dataset, data)
        manifest = layout.read_manifest()
    except (DatasetError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if manifest is None:
        raise _fail(f"nothing extracted at {layout}: run oceanstream extract first")
    clips = extracted_clips(layout, manifest)
    _describe_clips(clips)
    try:
        if output is not None and resume:
            plan = plan_resumed_run(output, options)
        else:
            plan = plan_new_run(clips, options, manifest["group_rule"])
    except (DatasetError, ValueError) as exc:
        raise _fail(str(exc)) from None
    backbones = _backbones_folder(settings, plan.config.face_backbone)
    _describe_split(plan.split, clips, plan.shared_groups)
    run_dir = output or default_run_dir(runs_root(settings), manifest["name"])
    err.print(
        f"run folder {run_dir} (TensorBoard: tensorboard --logdir {run_dir / 'logs'})",
        markup=False,
    )
    # Keras draws its progress bar on stdout; stdout is kept for the results.
    with contextlib.redirect_stdout(sys.stderr):
        report = run_training(
            layout,
            manifest,
            clips,
            plan.split,
            plan.config,
            run_dir,
            resume=resume,
            cache_bytes=int(cache_gb * 1024**3),
            log=lambda line: err.print(line, markup=False),
            backbones_dir=backbones,
        )
    if as_json:
        out.print_json(json.dumps(report))
    else:
        _print_metrics(report)
    err.print(f"bundle {report['version']} saved in {report['bundle']}", markup=False)
    if register or activate:
        _register(Path(report["bundle"]), activate)
    else:
        err.print(
            f"roll it out: oceanstream models register {report['bundle']} && "
            f"oceanstream models activate {report['version']}",
            markup=False,
        )
    raise typer.Exit(EXIT_OK)


def _backbones_folder(settings: Any, face_backbone: str) -> Path:
    """The installed backbones folder, once each part of `face_backbone` is found there."""
    from core.backbones.registry import BackboneMissingError, backbones_dir
    from core.training.backbone import check_installed

    folder = backbones_dir(settings.home_dir, settings.backbones)
    try:
        check_installed(face_backbone, folder)
    except BackboneMissingError as exc:
        raise _fail(str(exc), EXIT_FAILED) from None
    return folder


def _register(bundle_dir: Path, activate: bool) -> None:
    from workers.cli.app import open_database
    from workers.services.training import register_trained_bundle

    session_factory = open_database(load_settings())
    version = register_trained_bundle(session_factory, bundle_dir, activate=activate)
    err.print(f"registered {version}", markup=False)
    if activate:
        err.print(f"{version} is now active", markup=False)
