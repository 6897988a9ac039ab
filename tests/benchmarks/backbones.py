"""Transfer learning on the synthetic set: extraction cost per clip with each backbone, and
learning curves (validation MAE per epoch against the mean baseline) for each backbone.

    python -m tests.benchmarks.backbones [--backbones DIR] [--clips 64] [--persons 16]
                                         [--cost-clips 12] [--choices scratch,faceres,...]
                                         [--persons-curve 2,4,6,10 [--curve-choices ...]]

The set is the one `tests/training/test_learns.py` trains on (`tests.synthetic`: 64 clips of
16 looks of one face, T=8). Extraction cost is measured in this process: the serving stages
`extract_clip_arrays` runs per clip (sampling, MTCNN, flow: what `scratch` stores), then each
backbone's features (`core.backbones.transfer.build_backbone_features`, compiled as training
compiles it) on that clip's T crops, after one warm-up call. Learning curves come from
`oceanstream extract` and `oceanstream train --face-backbone NAME` with default settings
(30 epochs at most, early stopping after 8 flat ones, seed 1234): `history.csv`'s `val_mae`
per epoch, next to the mean prediction's validation MAE, and the held-out test figures.
`--persons-curve` adds held-out accuracy against the number of training clips: the same
split, training on the clips of its first k persons only.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from core.backbones.registry import backbones_dir, load_backbone
from core.backbones.transfer import backbone_parts, build_backbone_features, embedding_model
from core.model.runtime import compile_inference

NUM_FRAMES = 8


def cli(home: Path, backbones: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OCEANSTREAM_HOME": str(home),
        "OCEANSTREAM_NUM_FRAMES": str(NUM_FRAMES),
        "OCEANSTREAM_BACKBONES": str(backbones),
    }
    for name in ("OCEANSTREAM_DATABASE_URL", "OCEANSTREAM_STORAGE_URL", "OCEANSTREAM_MODEL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"oceanstream {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done


def extraction_cost(videos: list[Path], backbones: Path, choices: list[str]) -> None:
    """Milliseconds per clip: the serving stages, then each backbone's features on the crops."""
    from core.persons.faces import FaceDetector
    from core.training.extraction import ExtractionConfig, extract_clip_arrays

    detector = FaceDetector()
    config = ExtractionConfig(num_frames=NUM_FRAMES)
    extract_clip_arrays(videos[0], detector, config)  # warm-up: MTCNN graphs, decoder
    crops, stages = [], []
    for video in videos:
        start = time.perf_counter()
        arrays = extract_clip_arrays(video, detector, config)
        stages.append(time.perf_counter() - start)
        crops.append(arrays["crops"].astype(np.float32))
    base = 1000 * float(np.median(stages))
    print(f"\nextraction cost per clip (T={NUM_FRAMES}, crops 112, median of {len(videos)} clips)")
    print(f"{'face backbone':<17} {'backbone ms':>12} {'ms per face':>12} {'extraction ms':>14}")
    print(f"{'scratch':<17} {0.0:>12.1f} {0.0:>12.2f} {base:>14.1f}")
    for choice in choices:
        if choice == "scratch":
            continue
        embeddings = {
            part: embedding_model(part, load_backbone(part, backbones))
            for part in backbone_parts(choice)
        }
        encode = compile_inference(build_backbone_features(embeddings, 112))
        encode(crops[0])  # warm-up: traces the graph
        times = []
        for clip in crops:
            start = time.perf_counter()
            encode(clip)
            times.append(time.perf_counter() - start)
        extra = 1000 * float(np.median(times))
        print(f"{choice:<17} {extra:>12.1f} {extra / NUM_FRAMES:>12.2f} {base + extra:>14.1f}")


def learning_curves(home: Path, labels: Path, backbones: Path, choices: list[str]) -> None:
    start = time.perf_counter()
    cli(home, backbones, "extract", str(labels), "--name", "synthetic", "--json")
    print(f"\nextract: {time.perf_counter() - start:.0f} s")
    curves, reports, seconds = {}, {}, {}
    for choice in choices:
        run_dir = home / "runs" / choice.replace("+", "_")
        start = time.perf_counter()
        done = cli(
            home, backbones, "train", "synthetic", "--output", str(run_dir),
            "--face-backbone", choice, "--json",
        )  # fmt: skip
        seconds[choice] = time.perf_counter() - start
        reports[choice] = json.loads(done.stdout)
        with (run_dir / "history.csv").open() as handle:
            curves[choice] = [float(row["val_mae"]) for row in csv.DictReader(handle)]
    validation = reports[choices[0]]["metrics"]["validation"]
    baseline = 1 - validation["mean"]["baseline"]
    print(
        f"\nvalidation MAE per epoch ({validation['clips']} clips; mean prediction: {baseline:.4f})"
    )
    print("epoch " + "".join(f"{c:>17}" for c in choices))
    for epoch in range(max(len(c) for c in curves.values())):
        row = [f"{curves[c][epoch]:.4f}" if epoch < len(curves[c]) else "-" for c in choices]
        print(f"{epoch + 1:>5} " + "".join(f"{v:>17}" for v in row))
    print("\nheld-out test split (accuracy = 1 - MAE; mean baseline on the same clips)")
    print(f"{'face backbone':<17} {'best epoch':>10} {'train s':>8} {'accuracy':>9} "
          f"{'baseline':>9} {'openness':>9} {'neuroticism':>12}")  # fmt: skip
    for choice in choices:
        report = reports[choice]
        test = report["metrics"]["test"]
        print(
            f"{choice:<17} {report['training']['best_epoch']:>10} {seconds[choice]:>8.0f} "
            f"{test['mean']['accuracy']:>9.4f} {test['mean']['baseline']:>9.4f} "
            f"{test['traits']['openness']['accuracy']:>9.4f} "
            f"{test['traits']['neuroticism']['accuracy']:>12.4f}"
        )


def clips_curve(home: Path, backbones: Path, choices: list[str], persons: list[int]) -> None:
    """Held-out accuracy against the number of training clips, on one fixed split.

    The split of the runs above is kept (validation and test unchanged); training uses the
    clips of its first k persons only, for each k.
    """
    from core.storage.store import ArtifactStore
    from core.training.extraction import DatasetLayout
    from core.training.loop import TrainingConfig
    from core.training.run import extracted_clips, run_training
    from core.training.splits import DataSplit

    layout = DatasetLayout(ArtifactStore(f"file://{home / 'storage'}"), "datasets/synthetic")
    manifest = layout.read_manifest()
    assert manifest is not None
    clips = extracted_clips(layout, manifest)
    first = home / "runs" / choices[0].replace("+", "_") / "split.json"
    split = DataSplit.from_dict(json.loads(first.read_text()))
    order = list(dict.fromkeys(clips.refs[c].group for c in split.train))
    rows = []
    for count in persons:
        chosen = set(order[:count])
        train = tuple(c for c in split.train if clips.refs[c].group in chosen)
        subset = DataSplit(train, split.validation, split.test, split.method, split.rule)
        row = [f"{len(train)} ({count})"]
        for choice in choices:
            report = run_training(
                layout, manifest, clips, subset, TrainingConfig(face_backbone=choice),
                home / "curve" / f"{choice.replace('+', '_')}-{count}",
                verbose=0, log=lambda line: None, backbones_dir=backbones,
            )  # fmt: skip
            test = report["metrics"]["test"]["mean"]
            row.append(f"{test['accuracy']:.4f} / {test['baseline']:.4f}")
        rows.append(row)
    print("\nheld-out test accuracy / mean baseline against training clips (persons)")
    print(f"{'train clips':<14}" + "".join(f"{c:>20}" for c in choices))
    for row in rows:
        print(f"{row[0]:<14}" + "".join(f"{v:>20}" for v in row[1:]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", type=Path, default=None)
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--persons", type=int, default=16)
    parser.add_argument("--cost-clips", type=int, default=12)
    parser.add_argument("--choices", default="scratch,faceres,emotion,faceres+emotion")
    parser.add_argument("--skip-curves", action="store_true")
    parser.add_argument(
        "--persons-curve",
        default="",
        help="Comma-separated training person counts for accuracy against training clips "
        "(e.g. 2,4,6,10), with --curve-choices; none by default.",
    )
    parser.add_argument("--curve-choices", default="scratch,faceres")
    args = parser.parse_args(argv)
    from tests.synthetic import write_synthetic_set

    override = args.backbones or (
        Path(os.environ["OCEANSTREAM_BACKBONES"]) if "OCEANSTREAM_BACKBONES" in os.environ else None
    )
    backbones = backbones_dir(Path("~/.oceanstream").expanduser(), override)
    choices = args.choices.split(",")
    print(f"backbones: {backbones}; CPU threads: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as work:
        root = Path(work)
        labels = write_synthetic_set(root / "synthetic", clips=args.clips, persons=args.persons)
        videos = sorted(labels.parent.glob("*.mp4"))[: args.cost_clips]
        extraction_cost(videos, backbones, choices)
        if not args.skip_curves:
            learning_curves(root / "home", labels, backbones, choices)
            if args.persons_curve:
                persons = [int(n) for n in args.persons_curve.split(",")]
                curve_choices = args.curve_choices.split(",")
                clips_curve(root / "home", backbones, curve_choices, persons)


if __name__ == "__main__":
    main()
