"""Identity embeddings on generated clips: same/different-person similarities, the linking
threshold, the FaceRes crop margin, and linking accuracy on multi-person edits.

    python -m tests.benchmarks.identity [--backbones DIR] [--tracks N] [--edits N]

Tracks are 2 s clips (10 fps, 320x240, mp4v, decoded by OpenCV) of the two real faces the tests
animate (the astronaut, `tests.clips.talking_head_frames`, and the cameraman,
`tests.people_clips.cameraman_frames`): each with its own pose, light and noise phases (seed),
resting place, amount of motion, and one of the looks below; 8 frames are sampled as a segment
samples them, MTCNN finds the person (`core.persons.tracks.detect_persons`), and its identity
embedding is its 5 best faces through FaceRes (`core.persons.identity.identity_embedding`).

Looks: as rendered; mirrored; tinted warm or cool; darker (x0.55); extra sensor noise; smaller
(the frame shrunk to 0.6 and centred on black, so the face is 60 % of the size); blurred (the
frame down to 0.35 and back up, as a low-resolution upload). Same-person
pairs are every two tracks of one identity, different-person pairs every astronaut track with
every cameraman track. Two identities are a small sample: the figures say how well FaceRes
separates these two people under these changes, not its error rate on a population.

Edits are sequences of shots, each shot a segment with one track: patterns such as A B A B,
A B - A (a faceless segment), A A B B, drawn from the tracks at random. A segment is right when
its person number is the one its identity got first (and a first appearance is a new number);
EmbeddingLinker (at the chosen threshold) is compared with ContinuityLinker.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.persons.faces import FaceDetector
from core.persons.identity import FACE_MARGIN, FaceResEmbedder, identity_crops, mean_direction
from core.persons.person_links import (
    ContinuityLinker,
    EmbeddingLinker,
    PersonLinker,
    PersonSummary,
    link_video,
)
from core.persons.tracks import Person, detect_persons
from tests import clips, people_clips

T = 8
FPS = 10
SECONDS = 2.0
LOOKS = ("plain", "mirrored", "warm", "cool", "dark", "noisy", "small", "blurred")
MARGINS = (1.3, 1.45, 1.6, 1.8, 2.0)
PATTERNS = ("ABAB", "AB-A", "A-AB", "AABB", "ABBA", "BA-B", "A-B-A")


@dataclass(frozen=True)
class Track:
    identity: str  # "A" (astronaut) or "B" (cameraman)
    look: str
    seed: int
    person: Person
    frames: np.ndarray  # the 8 sampled frames the person was found in


def _look(frames: np.ndarray, look: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = frames.astype(np.float32)
    if look == "mirrored":
        out = out[:, :, ::-1]
    elif look == "warm":
        out = out * np.array([1.15, 1.0, 0.8], np.float32)
    elif look == "cool":
        out = out * np.array([0.8, 0.95, 1.2], np.float32)
    elif look == "dark":
        out = out * 0.55
    elif look == "noisy":
        out = out + rng.normal(0, 8, out.shape).astype(np.float32)
    elif look == "blurred":
        import cv2

        height, width = frames.shape[1:3]
        low = (int(width * 0.35), int(height * 0.35))
        out = np.stack([cv2.resize(cv2.resize(f, low), (width, height)) for f in frames]).astype(
            np.float32
        )
    elif look == "small":
        import cv2

        height, width = frames.shape[1:3]
        small = [cv2.resize(f, (int(width * 0.6), int(height * 0.6))) for f in frames]
        out = np.zeros_like(out)
        top, left = (height - small[0].shape[0]) // 2, (width - small[0].shape[1]) // 2
        for i, s in enumerate(small):
            out[i, top : top + s.shape[0], left : left + s.shape[1]] = s
    return np.clip(out, 0, 255).astype(np.uint8)


def _render(identity: str, seed: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    offset = (float(rng.uniform(-0.2, 0.2)), float(rng.uniform(-0.05, 0.05)))
    motion = float(rng.uniform(0.5, 1.5))
    common = {"seconds": SECONDS, "fps": FPS, "seed": seed, "motion": motion, "offset": offset}
    if identity == "A":
        return clips.talking_head_frames(**common)
    return people_clips.cameraman_frames(**common)


def make_tracks(detector: FaceDetector, per_identity: int, folder: Path) -> list[Track]:
    """``per_identity`` tracks of each identity, cycling through the looks."""
    tracks: list[Track] = []
    rng = np.random.default_rng(2024)
    for identity, k in itertools.product("AB", range(per_identity)):
        seed, look = 100 + k, LOOKS[k % len(LOOKS)]
        path = folder / f"{identity}{k}.mp4"
        clips.write_video(path, _render(identity, seed, rng), fps=FPS)
        decoded = people_clips.read_frames(path)
        frames = _look(decoded[people_clips.segment_samples(0, len(decoded), T)], look, seed)
        persons = detect_persons(frames, detector)
        if not persons:
            print(f"  no person found in {identity}{k} ({look}); skipped")
            continue
        tracks.append(Track(identity, look, seed, persons[0], frames))
    return tracks


def embed_tracks(tracks: Sequence[Track], embedder: FaceResEmbedder, margin: float) -> np.ndarray:
    """[N, D] track embeddings at crop ``margin``, one batched FaceRes call."""
    crops = [identity_crops(t.frames, t.person.track.detections, margin=margin) for t in tracks]
    descriptors = embedder(np.concatenate(crops))
    bounds = np.cumsum([0, *[len(c) for c in crops]])
    return np.stack([mean_direction(descriptors[a:b]) for a, b in itertools.pairwise(bounds)])


def similarities(tracks: Sequence[Track], embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of the same-person pairs and of the different-person pairs."""
    sims = embeddings @ embeddings.T
    same, different = [], []
    for i, j in itertools.combinations(range(len(tracks)), 2):
        (same if tracks[i].identity == tracks[j].identity else different).append(sims[i, j])
    return np.array(same), np.array(different)


def choose_threshold(same: np.ndarray, different: np.ndarray) -> tuple[float, str]:
    """Midway in the gap when the distributions do not overlap, else the equal-error point."""
    if same.min() > different.max():
        return float((same.min() + different.max()) / 2), "midway in the gap"
    candidates = np.unique(np.concatenate([same, different]))
    errors = [abs((same < c).mean() - (different >= c).mean()) for c in candidates]
    return float(candidates[int(np.argmin(errors))]), "equal-error point"


def _describe(values: np.ndarray) -> str:
    p = np.percentile(values, [5, 25, 50, 75, 95])
    return (
        f"n={len(values):4d} min {values.min():.3f} p5 {p[0]:.3f} p25 {p[1]:.3f} "
        f"median {p[2]:.3f} p75 {p[3]:.3f} p95 {p[4]:.3f} max {values.max():.3f}"
    )


def _summary(track: Track, embedding: np.ndarray) -> PersonSummary:
    return replace(PersonSummary.of(track.person), embedding=embedding)


def linking_accuracy(
    tracks: Sequence[Track], embeddings: np.ndarray, linker: PersonLinker, edits: int
) -> tuple[float, int]:
    """Fraction of face segments given their identity's person number, over ``edits`` edits."""
    rng = np.random.default_rng(7)
    by_identity = {g: [i for i, t in enumerate(tracks) if t.identity == g] for g in "AB"}
    right = total = 0
    for n in range(edits):
        pattern = PATTERNS[n % len(PATTERNS)]
        chosen = [None if c == "-" else int(rng.choice(by_identity[c])) for c in pattern]
        segments = [[] if i is None else [_summary(tracks[i], embeddings[i])] for i in chosen]
        numbers = link_video(segments, linker)
        first: dict[str, int] = {}
        for c, ids in zip(pattern, numbers, strict=True):
            if c == "-":
                continue
            total += 1
            person = ids[0]
            if c not in first:
                right += person not in first.values()
                first[c] = person
            else:
                right += person == first[c]
    return right / total, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", type=Path, default=os.environ.get("OCEANSTREAM_BACKBONES"))
    parser.add_argument("--tracks", type=int, default=24, help="tracks per identity")
    parser.add_argument("--edits", type=int, default=70)
    args = parser.parse_args(argv)
    if args.backbones is None:
        print("error: give --backbones DIR or set OCEANSTREAM_BACKBONES", file=sys.stderr)
        return 2
    embedder = FaceResEmbedder.load(args.backbones)
    detector = FaceDetector()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        tracks = make_tracks(detector, args.tracks, Path(folder))
    print(f"{len(tracks)} tracks ({time.perf_counter() - started:.0f} s to make and detect)")

    print("\ncrop margin (side / face height): same and different-person cosine similarity")
    chosen: dict[float, np.ndarray] = {}
    gaps: dict[float, float] = {}
    for margin in MARGINS:
        embeddings = embed_tracks(tracks, embedder, margin)
        same, different = similarities(tracks, embeddings)
        gap = same.min() - different.max()
        print(f"  {margin:.2f} same {_describe(same)}")
        print(f"       diff {_describe(different)}   gap {gap:+.3f}")
        chosen[margin] = embeddings
        gaps[margin] = gap
    best = max(gaps, key=gaps.__getitem__)
    print(f"  widest gap at margin {best}; core.persons.identity.FACE_MARGIN is {FACE_MARGIN}")

    embeddings = chosen[FACE_MARGIN]
    same, different = similarities(tracks, embeddings)
    threshold, how = choose_threshold(same, different)
    print(f"\nat margin {FACE_MARGIN}: threshold {threshold:.3f} ({how})")
    for look in LOOKS:
        rows = [i for i, t in enumerate(tracks) if t.look == look]
        if not rows:
            continue
        ok = [
            (embeddings[i] @ embeddings[j] >= threshold)
            == (tracks[i].identity == tracks[j].identity)
            for i in rows
            for j in range(len(tracks))
            if j != i
        ]
        print(f"  {look:9s} pairs right at the threshold: {np.mean(ok):.3f} of {len(ok)}")

    print(f"\nlinking accuracy on {args.edits} edits ({', '.join(PATTERNS)}):")
    for name, linker in (
        (f"EmbeddingLinker({threshold:.2f})", EmbeddingLinker(threshold=threshold)),
        ("ContinuityLinker()", ContinuityLinker()),
    ):
        accuracy, total = linking_accuracy(tracks, embeddings, linker, args.edits)
        print(f"  {name:24s} {accuracy:.3f} of {total} face segments")
    return 0


if __name__ == "__main__":
    sys.exit(main())
