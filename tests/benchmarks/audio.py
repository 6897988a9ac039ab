"""Benchmark: the voice of a 15 s segment, against the cost of sampling its frames.

Writes a 15 s 720p x264 clip (libx264 defaults, 25 fps) with espeak-ng speech as a 44.1 kHz
AAC track, and prints the CPU time (process time, best of ``--repeat``) of:

* sampling the segment's T=16 frames and successors (`core.video.selective_decode.sample_segment`):
  the baseline, measured in the same run;
* decoding the segment's audio window to 16 kHz mono (`core.audio.voice.decode_audio_window`);
* the T log-mel tokens (`core.audio.voice.audio_tokens`), computed in process with NumPy;
* openSMILE's eGeMAPS v02 low-level descriptors of the same window (the `opensmile` wheel),
  the alternative front end docs/audio.md weighs;

each also as a ratio to the sampling. It then writes a ``--minutes`` long clip (small frames:
only its audio matters) and decodes the audio window of its first and of its last segment:
the seek keeps the last one as cheap as the first.

``--curves`` also prints the planted-signal learning curves of tests/support/voices.py
(held-out MSE per epoch with the voice, without it, and with the voice shuffled across clips).

    .venv/bin/python -m tests.benchmarks.audio [--repeat 5] [--minutes 5] [--curves]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.audio.voice import SAMPLE_RATE, audio_tokens, decode_audio_window
from core.video.probe import probe_video
from core.video.segments import plan_segments, segment_frame_ranges
from core.video.selective_decode import sample_segment
from tests.audio_clips import SENTENCES, mux_audio, speech, tone
from tests.clips import write_h264

SEGMENT_S = 15.0
T = 16


def _best(run: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.process_time()
        run()
        times.append(time.process_time() - start)
    return min(times)


def _speech_track(seconds: float) -> tuple[np.ndarray, int]:
    parts, rate = [], 22_050
    while sum(len(p) for p in parts) < seconds * rate:
        for pitch, text in zip((30, 60, 45), SENTENCES, strict=False):
            voice, rate = speech(text, pitch=pitch)
            parts.append(voice)
    return np.concatenate(parts)[: int(seconds * rate)], rate


def segment_costs(root: Path, repeat: int) -> None:
    video = write_h264(root / "video.mp4", seconds=SEGMENT_S, fps=25, size=(1280, 720))
    clip = mux_audio(video, root / "speech.mp4", *_speech_track(SEGMENT_S), out_rate=44_100)
    info = probe_video(clip)
    frames = range(0, info.frame_count)
    times = np.linspace(0, info.frame_count - 1, T).round() / info.fps
    window = decode_audio_window(clip, 0.0, SEGMENT_S)
    rows = {
        "sample frames (baseline)": lambda: sample_segment(clip, frames, T, info=info),
        "audio: decode window": lambda: decode_audio_window(clip, 0.0, SEGMENT_S),
        "audio: log-mel tokens": lambda: audio_tokens(window, times),
    }
    try:
        import opensmile

        smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
        )
        rows["audio: eGeMAPS LLDs (opensmile)"] = lambda: smile.process_signal(
            window.samples, SAMPLE_RATE
        )
    except ImportError:
        print("opensmile is not installed: eGeMAPS not measured")
    costs = {name: _best(run, repeat) for name, run in rows.items()}
    base = costs["sample frames (baseline)"]
    print(f"\n15 s segment, 720p H.264 + 44.1 kHz AAC speech, CPU s (best of {repeat}):")
    for name, cost in costs.items():
        print(f"  {name:34s} {cost * 1000:8.1f} ms   {cost / base:6.3f} x sampling")
    logmel = costs["audio: decode window"] + costs["audio: log-mel tokens"]
    print(f"  audio stage with log-mel: {logmel / (base + logmel):.1%} of sampling + audio")


def long_clip_costs(root: Path, minutes: float, repeat: int) -> None:
    seconds = minutes * 60
    video = write_h264(
        root / "long.mp4", seconds=seconds, fps=10, size=(64, 48), preset="ultrafast"
    )
    clip = mux_audio(video, root / "long_audio.mp4", tone(180, seconds), 16_000, out_rate=44_100)
    segments = plan_segments(seconds)
    info = probe_video(clip)
    segment_frame_ranges(segments, info.fps, info.frame_count)  # the plan the stages use
    first, last = segments[0], segments[-1]
    cost_first = _best(lambda: decode_audio_window(clip, first.start_s, first.end_s), repeat)
    cost_last = _best(lambda: decode_audio_window(clip, last.start_s, last.end_s), repeat)
    print(f"\n{minutes:g} min clip, {len(segments)} segments, audio window decode, CPU s:")
    print(f"  first segment {cost_first * 1000:.1f} ms, last segment {cost_last * 1000:.1f} ms")
    print(f"  last / first: {cost_last / cost_first:.2f}")


def learning_curves() -> None:
    import keras

    from core.model.personality import CompletePersonalityModel
    from tests.support import voices as planted

    data = planted.planted_voice_data(Path(tempfile.mkdtemp(prefix="voices")))
    train = slice(0, planted.CLIPS - planted.HELD_OUT)
    test = slice(planted.CLIPS - planted.HELD_OUT, planted.CLIPS)
    shuffled = dict(data, audio=data["audio"][np.random.default_rng(2).permutation(planted.CLIPS)])
    print("\nPlanted-signal learning curves (labels from the voice's pitch only), held-out MSE:")
    curves = {}
    for name, source, audio in (
        ("face + flow", data, False),
        ("face + flow + voice", data, True),
        ("voice shuffled across clips", shuffled, True),
    ):
        keras.utils.set_random_seed(0)
        model = CompletePersonalityModel(
            **planted.SMALL,
            dropout_rate=0.1,
            audio_dim=source["audio"].shape[-1] if audio else None,
        )
        ones = np.ones(source["audio_mask"].shape, bool)

        def inputs(part: slice, source=source, audio=audio, ones=ones) -> tuple[np.ndarray, ...]:
            if not audio:
                return source["static"][part], source["dynamic"][part]
            masks = (ones[part], ones[part], source["audio_mask"][part])
            return (source["static"][part], source["dynamic"][part], source["audio"][part], *masks)

        if model.voice is not None:
            model.voice.encoder.adapt(source["audio"][train], source["audio_mask"][train])
        model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
        history = model.fit(
            inputs(train),
            source["labels"][train],
            validation_data=(inputs(test), source["labels"][test]),
            epochs=planted.EPOCHS,
            batch_size=planted.CLIPS,
            verbose=0,
        )
        curves[name] = history.history["val_loss"]
    labels = data["labels"]
    baseline = float(np.mean((labels[train].mean(axis=0) - labels[test]) ** 2))
    print(f"  mean baseline: {baseline:.4f}")
    print("  epoch " + "".join(f"{name:>30s}" for name in curves))
    for epoch in range(0, planted.EPOCHS, 2):
        row = "".join(f"{curve[epoch]:30.4f}" for curve in curves.values())
        print(f"  {epoch + 1:5d} {row}")
    last = "".join(f"{curve[-1]:30.4f}" for curve in curves.values())
    print(f"  {planted.EPOCHS:5d} {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--curves", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        segment_costs(Path(tmp), args.repeat)
        if args.minutes > 0:
            long_clip_costs(Path(tmp), args.minutes, args.repeat)
    if args.curves:
        learning_curves()


if __name__ == "__main__":
    main()
