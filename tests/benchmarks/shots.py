"""Shot changes on generated segments: cuts found, missed and false; their cost per segment;
and, with FaceRes, how single faces compare with track identities.

    python -m tests.benchmarks.shots [--edits N] [--continuous N] [--backbones DIR]

Each segment is 16 frames, one per second of motion (the generators run at 1 fps, so each
frame moved as much from the last as a segment's samples do), 320x240, written as mp4v and
decoded by OpenCV.

* Edits: one hard cut at a random sample (2 to 14) between two different shots drawn from the
  astronaut (random place, size and tint), the cameraman, and pans over eight photos
  skimage ships (a cat, a rocket, a cup, the moon, bricks, text, grass, a deep-field sky);
  every third edit is the astronaut cut to the cameraman in the same framing and place.
* Continuous clips: one shot each, no cut: talking heads of either face with more motion
  (up to 2.5 times the tests' sway, lean and tilt) and light (0.6 to 1.2 brightness, the
  moving side light), and pans over the photos.

A detected cut at the edit's sample is found; any other detected cut is false; an edit's cut
not detected is missed. The cost is the CPU time of `core.persons.shots.detect_cuts` on a segment's
16 frames against the CPU time of the segment's analysis in this process (faces, tracks,
face CNN, flow, the model: `core.video_analysis.VideoAnalyzer`, built-in bundle) on the
same frames, both measured in this run.

The same segments are also scored by the measures tried before choosing (colour or grey levels
alone, an edge change ratio, a grey thumbnail's correlation), each at its own best threshold
on them.

With ``--backbones`` (FaceRes installed there) it also prints, for 2 s tracks of each face,
the cosine similarity of single faces to their own track's mean (without that face) and to
the other person's track means: what `core.persons.tracks.SAME_FACE_THRESHOLD` separates.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from core.persons.shots import CUT_THRESHOLD, cut_scores, frame_signature
from tests import clips, people_clips

T = 16
SIZE = (320, 240)
PHOTOS = ("chelsea", "rocket", "coffee", "moon", "brick", "text", "grass", "hubble_deep_field")


@cache
def _photo(name: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def pan_frames(name: str, count: int, seed: int, light: float = 1.0) -> Iterator[np.ndarray]:
    """A camera panning and zooming over a photo, with the light changing."""
    image = _photo(name)
    width, height = SIZE
    src_h, src_w = image.shape[:2]
    base = max(height / (0.7 * src_h), width / (0.7 * src_w))
    ph = np.random.default_rng(seed).uniform(0, 2 * math.pi, 5)
    noise = clips._SensorNoise(SIZE, seed + 1)
    for t in range(count):
        zoom = 1 + 0.05 * math.sin(2 * math.pi * 0.3 * t + ph[0])
        cx = src_w / 2 + 0.1 * src_w * math.sin(2 * math.pi * 0.2 * t + ph[1])
        cy = src_h / 2 + 0.06 * src_h * math.sin(2 * math.pi * 0.3 * t + ph[2])
        gain = light * (1 + 0.15 * math.sin(2 * math.pi * 0.6 * t + ph[3]))
        matrix = cv2.getRotationMatrix2D((cx, cy), 0.0, base * zoom)
        matrix[0, 2] += width / 2 - cx
        matrix[1, 2] += height / 2 - cy
        side = 0.1 * math.sin(t + ph[4])
        yield noise(clips._warp(clips._relight(image, gain, side), matrix, SIZE))


def shot_frames(kind: str, count: int, seed: int, rng: np.random.Generator) -> list[np.ndarray]:
    common = {"seconds": float(count), "fps": 1.0, "size": SIZE, "seed": seed}
    motion = float(rng.uniform(0.5, 2.5))
    if kind == "astronaut":
        tint = tuple(float(v) for v in rng.uniform(0.85, 1.15, 3))
        frames = clips.talking_head_frames(
            **common,
            motion=motion,
            brightness=float(rng.uniform(0.6, 1.2)),
            tint=tint,  # type: ignore[arg-type]
            scale=float(rng.uniform(0.8, 1.3)),
            offset=(float(rng.uniform(-0.2, 0.2)), 0.0),
        )
    elif kind == "cameraman":
        frames = people_clips.cameraman_frames(
            **common, motion=motion, offset=(float(rng.uniform(-0.2, 0.2)), 0.0)
        )
    else:
        frames = pan_frames(kind, count, seed, light=float(rng.uniform(0.6, 1.2)))
    return list(frames)[:count]


def decoded(frames: list[np.ndarray], folder: Path, name: str) -> np.ndarray:
    path = clips.write_video(folder / f"{name}.mp4", frames, fps=4)
    return people_clips.read_frames(path)


def make_segments(
    edits: int, continuous: int, folder: Path
) -> list[tuple[str, np.ndarray, int | None]]:
    """(label, 16 decoded frames, the sample the cut begins or None)."""
    rng = np.random.default_rng(22)
    kinds = ["astronaut", "cameraman", *PHOTOS]
    segments: list[tuple[str, np.ndarray, int | None]] = []
    for e in range(edits):
        if e % 3 == 0:
            first, second = "astronaut", "cameraman"
            if e % 2:
                first, second = second, first
            offset = float(rng.uniform(-0.2, 0.2))
            cut = int(rng.integers(2, T - 1))
            common = {"fps": 1.0, "size": SIZE, "offset": (offset, 0.0)}

            def face(kind: str, count: int, seed: int, common: dict = common) -> list:
                make = (
                    clips.talking_head_frames
                    if kind == "astronaut"
                    else people_clips.cameraman_frames
                )
                return list(make(seconds=float(count), seed=seed, **common))[:count]

            frames = face(first, cut, 1000 + e) + face(second, T - cut, 2000 + e)
            label = f"{first}|{second} same place"
        else:
            first, second = (str(k) for k in rng.choice(kinds, 2, replace=False))
            cut = int(rng.integers(2, T - 1))
            frames = shot_frames(first, cut, 1000 + e, rng) + shot_frames(
                second, T - cut, 2000 + e, rng
            )
            label = f"{first}|{second}"
        segments.append((label, decoded(frames, folder, f"edit{e}"), cut))
    for c in range(continuous):
        kind = ("astronaut", "cameraman", *PHOTOS)[c % (2 + len(PHOTOS))]
        frames = shot_frames(kind, T, 3000 + c, rng)
        segments.append((kind, decoded(frames, folder, f"shot{c}"), None))
    return segments


def accuracy(
    segments: list[tuple[str, np.ndarray, int | None]], threshold: float
) -> tuple[int, int, int, list[str]]:
    found = missed = false = 0
    notes: list[str] = []
    for label, frames, cut in segments:
        scores = cut_scores(frames)
        detected = {int(t) + 1 for t in np.flatnonzero(scores > threshold)}
        if cut is not None:
            if cut in detected:
                found += 1
            else:
                missed += 1
                notes.append(f"missed {label} (score {scores[cut - 1]:.2f})")
        wrong = detected - {cut}
        false += len(wrong)
        notes.extend(f"false in {label} at {t} (score {scores[t - 1]:.2f})" for t in sorted(wrong))
    return found, missed, false, notes


def _colour_only(frames: np.ndarray) -> np.ndarray:
    split = 16 * 8
    sig = np.stack([frame_signature(f)[:split] for f in frames])
    return 1.0 - np.minimum(sig[1:], sig[:-1]).sum(axis=1)


def _grey_only(frames: np.ndarray) -> np.ndarray:
    split = 16 * 8
    sig = np.stack([frame_signature(f)[split:] for f in frames])
    return 1.0 - np.minimum(sig[1:], sig[:-1]).sum(axis=1)


def _edge_change(frames: np.ndarray) -> np.ndarray:
    """Edge change ratio: the larger share of edge pixels entering or leaving (Zabih et al.)."""
    kernel = np.ones((5, 5), np.uint8)
    edges = [
        cv2.Canny(
            cv2.cvtColor(
                cv2.resize(f, (128, 96), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY
            ),
            50,
            150,
        )
        > 0
        for f in frames
    ]
    out = []
    for a, b in itertools.pairwise(edges):
        near_a = cv2.dilate(a.astype(np.uint8), kernel) > 0
        near_b = cv2.dilate(b.astype(np.uint8), kernel) > 0
        entering = (b & ~near_a).sum() / max(int(b.sum()), 1)
        leaving = (a & ~near_b).sum() / max(int(a.sum()), 1)
        out.append(max(entering, leaving))
    return np.array(out)


def _thumbnail(frames: np.ndarray) -> np.ndarray:
    """One minus the correlation of 16x12 grey thumbnails, halved into [0, 1]."""
    thumbs = []
    for f in frames:
        small = cv2.resize(f, (16, 12), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float64).ravel()
        grey -= grey.mean()
        thumbs.append(grey / max(float(np.linalg.norm(grey)), 1e-9))
    return np.array([(1.0 - float(a @ b)) / 2 for a, b in itertools.pairwise(thumbs)])


MEASURES = {
    "colour or grey levels (core.persons.shots)": cut_scores,
    "colour histogram only": _colour_only,
    "grey-level histogram only": _grey_only,
    "edge change ratio": _edge_change,
    "16x12 thumbnail correlation": _thumbnail,
}


def compare(segments: list[tuple[str, np.ndarray, int | None]]) -> None:
    """Each measure at its own best threshold on these segments (fewest missed + false)."""
    header = "measure                               best thr  found  missed  false"
    print(f"\n{header}   cut min  within max")
    for name, measure in MEASURES.items():
        scored = [(measure(frames), cut) for _, frames, cut in segments]
        cuts = np.array([scores[cut - 1] for scores, cut in scored if cut is not None])
        within = np.concatenate(
            [np.delete(scores, [cut - 1] if cut is not None else []) for scores, cut in scored]
        )
        best: tuple[int, float, int, int] | None = None
        for threshold in np.linspace(0.05, 0.95, 91):
            missed = int((cuts <= threshold).sum())
            false = int((within > threshold).sum())
            if best is None or missed + false < best[0]:
                best = (missed + false, float(threshold), missed, false)
        assert best is not None
        _, threshold, missed, false = best
        print(
            f"{name:38s}{threshold:8.2f}  {len(cuts) - missed:5d}  {missed:6d}  {false:5d}"
            f"   {cuts.min():7.2f}  {within.max():10.2f}"
        )


def cost(frames: np.ndarray, repeats: int = 3) -> tuple[float, float]:
    """CPU seconds of `detect_cuts` on one segment, and of the segment's analysis."""
    from core.bundles.bundle import build_default_bundle
    from core.persons.segment_analysis import extract_person_dynamic, extract_persons
    from core.persons.shots import detect_cuts
    from core.pipeline import PipelineConfig

    bundle = build_default_bundle(num_frames=T)
    config = PipelineConfig(num_frames=T)
    from core.persons.faces import FaceDetector

    detector = FaceDetector()
    successors = frames.copy()

    def segment() -> None:
        persons = extract_persons(frames, detector, bundle)
        regions = [p.person.region for p in persons]
        extract_person_dynamic(frames, successors, regions, bundle, config.flow_method)

    segment()  # warm: graph tracing, first calls
    started = time.process_time()
    for _ in range(repeats):
        segment()
    analysis = (time.process_time() - started) / repeats
    started = time.process_time()
    for _ in range(repeats * 10):
        detect_cuts(frames)
    cuts = (time.process_time() - started) / (repeats * 10)
    return cuts, analysis


def face_similarities(backbones: Path, folder: Path) -> None:
    from core.persons.faces import FaceDetector
    from core.persons.identity import FaceResEmbedder, identity_crop
    from core.persons.tracks import detect_persons

    embedder = FaceResEmbedder.load(backbones)
    detector = FaceDetector()
    rng = np.random.default_rng(7)
    tracks: dict[str, list[np.ndarray]] = {"astronaut": [], "cameraman": []}
    for kind in tracks:
        for k in range(8):
            frames = decoded(shot_frames(kind, 8, 500 + k, rng), folder, f"{kind}{k}")
            persons = detect_persons(frames, detector)
            if not persons:
                continue
            detections = persons[0].track.detections
            crops = [identity_crop(frames[t], d.box) for t, d in enumerate(detections) if d]
            tracks[kind].append(np.asarray(embedder(np.stack(crops)), np.float64))
    same, different = [], []
    for kind, other in (("astronaut", "cameraman"), ("cameraman", "astronaut")):
        means = [_unit(d.mean(axis=0)) for d in tracks[other]]
        for faces in tracks[kind]:
            for i, face in enumerate(faces):
                rest = np.delete(faces, i, axis=0)
                same.append(float(_unit(face) @ _unit(rest.mean(axis=0))))
                different.extend(float(_unit(face) @ mean) for mean in means)
    s, d = np.array(same), np.array(different)
    print(f"\nsingle face against a track's mean (FaceRes, {len(s)} faces in 2 x 8 tracks):")
    own = f"min {s.min():.3f}  p5 {np.quantile(s, 0.05):.3f}  median {np.median(s):.3f}"
    other = f"median {np.median(d):.3f}  p95 {np.quantile(d, 0.95):.3f}  max {d.max():.3f}"
    print(f"  own track:    {own}")
    print(f"  other person: {other}")
    print(f"  midway: {(s.min() + d.max()) / 2:.3f}")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--edits", type=int, default=60)
    parser.add_argument("--continuous", type=int, default=30)
    parser.add_argument("--backbones", type=Path, default=os.environ.get("OCEANSTREAM_BACKBONES"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        started = time.perf_counter()
        segments = make_segments(args.edits, args.continuous, folder)
        print(f"{len(segments)} segments of {T} frames ({time.perf_counter() - started:.0f} s)")
        print("\nthreshold  found  missed  false   (edits with one cut each; all segments)")
        for threshold in (0.3, 0.35, 0.4, 0.45, 0.5, 0.55):
            found, missed, false, _ = accuracy(segments, threshold)
            mark = "  <- CUT_THRESHOLD" if threshold == CUT_THRESHOLD else ""
            print(f"  {threshold:.2f}     {found:4d}  {missed:6d}  {false:5d}{mark}")
        for note in accuracy(segments, CUT_THRESHOLD)[3]:
            print(f"    {note}")
        compare(segments)
        cuts, analysis = cost(segments[0][1])
        print(
            f"\ncost per segment ({T} frames, {SIZE[0]}x{SIZE[1]}, CPU seconds): detect_cuts "
            f"{cuts * 1000:.1f} ms, the segment's analysis {analysis * 1000:.0f} ms: "
            f"{100 * cuts / analysis:.2f} %"
        )
        if args.backbones:
            face_similarities(Path(args.backbones), folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
