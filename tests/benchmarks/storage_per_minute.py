"""Benchmark: the storage a video costs, per minute of video, upload and work files.

    .venv/bin/python -m tests.benchmarks.storage_per_minute [--seconds 60] [--size 1280x720]

Writes a talking-head clip (H.264, 30 fps), runs every distributed stage on it as plain
functions (SQLite, a local store) with the sampled frames kept, then prints per minute of
video, in one run:

1. the upload (the stored copy of the video);
2. the sampled frames (`segments/<i>/frames.npz`: T frames and their successors per segment,
   at most `frame_max_side` px), which the feature stages delete once both features of a
   segment are stored (unless `OCEANSTREAM_KEEP_FRAMES=1`);
3. the features kept (face tokens and masks, flow tokens per segment);
4. what `np.savez_compressed` would make of each kind of file, as a share of its size.

Sizes are bytes on disk of the store's files, so they do not depend on the machine's load;
the run takes a minute or two on a loaded machine.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MB = 1e6


def compressed_share(paths: list[Path]) -> float:
    """Bytes `np.savez_compressed` writes for the same arrays, over the bytes stored."""
    stored = sum(path.stat().st_size for path in paths)
    packed = 0
    for path in paths:
        with np.load(path) as archive:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **{name: archive[name] for name in archive.files})
            packed += buffer.tell()
    return packed / stored if stored else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the clip")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))

    from core.bundles.bundle import build_default_bundle
    from core.persons.faces import FaceDetector
    from core.pipeline import PipelineConfig
    from core.storage.store import ArtifactStore
    from db import repository as repo
    from db.engine import make_engine, make_session_factory
    from db.migrate import upgrade_database
    from tasks.context import StageContext
    from tests.clips import write_talking_head
    from tests.support.stages import analyze_with_stages, submit

    with tempfile.TemporaryDirectory(prefix="storage-bench-") as folder:
        root = Path(folder)
        clip = write_talking_head(
            root / "talk.mp4", seconds=args.seconds, fps=30, size=(width, height), seed=3
        )
        bundle = build_default_bundle()
        url = f"sqlite:///{root / 'db.sqlite'}"
        upgrade_database(url)
        factory = make_session_factory(make_engine(url))
        meta = bundle.metadata
        with factory.begin() as session:
            repo.ensure_model_version(
                session=session,
                version=meta.version,
                trained=meta.trained,
                metadata=meta.to_dict(),
            )
        store_root = root / "storage"
        ctx = StageContext(
            session_factory=factory,
            store=ArtifactStore(f"file://{store_root}"),
            config=PipelineConfig(num_frames=meta.num_frames, keep_frames=True),
            load_bundle=lambda version: bundle,
            active_version=lambda session=None: meta.version,
        )
        ctx._detectors[meta.crop_size] = FaceDetector()
        video_id = submit(ctx, clip)
        segments = analyze_with_stages(ctx, video_id)

        files = [path for path in store_root.rglob("*") if path.is_file()]
        work = [path for path in files if f"work/{video_id}/" in path.as_posix()]
        frames = [path for path in work if path.name == "frames.npz"]
        features = [path for path in work if path not in frames]
        uploads = [path for path in files if path not in work]
        minutes = args.seconds / 60

        def per_minute(paths: list[Path]) -> float:
            return sum(path.stat().st_size for path in paths) / MB / minutes

        upload_mb = per_minute(uploads)
        print(
            f"clip: {args.seconds:.0f} s, {width}x{height}, 30 fps, {len(segments)} segments, "
            f"T={meta.num_frames}, frames at most {ctx.config.frame_max_side} px"
        )
        print(f"{'per minute of video':<44}{'MB':>9}{'x upload':>10}")
        rows = [
            ("upload (kept)", upload_mb),
            ("sampled frames (deleted once features stored)", per_minute(frames)),
            ("features (kept)", per_minute(features)),
        ]
        for label, value in rows:
            print(f"{label:<44}{value:>9.2f}{value / upload_mb:>10.2f}")
        kept = upload_mb + per_minute(features)
        print(f"{'stored after analysis (default)':<44}{kept:>9.2f}{kept / upload_mb:>10.2f}")
        everything = kept + per_minute(frames)
        print(f"{'stored with OCEANSTREAM_KEEP_FRAMES=1':<44}{everything:>9.2f}")
        print(
            f"savez_compressed would keep {compressed_share(features):.0%} of the features' "
            f"bytes and {compressed_share(frames):.0%} of the frames'"
        )


if __name__ == "__main__":
    main()
