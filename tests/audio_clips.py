"""Sound for test clips: speech from Debian's ``espeak-ng``, tones, silence, muxed into a video.

Speech is synthesised by the ``espeak-ng`` binary (``apt-get install espeak-ng``; CI installs
it) to a WAV file; tones and silence are generated with NumPy. ``mux_audio`` joins a sound with
a video through the ffmpeg binary that ``imageio_ffmpeg`` ships, encoding it at the sample
rate and channel count asked for, so a test decodes the same kinds of files users upload.
"""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def speech(
    text: str, *, pitch: int = 50, words_per_minute: int = 160, voice: str = "en"
) -> tuple[np.ndarray, int]:
    """(samples float32 mono, rate) of ``text`` spoken by espeak-ng (pitch 0-99)."""
    command = [
        "espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(words_per_minute), "--stdout",
        text,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=True)
    return _read_wav(result.stdout)


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    import io

    with wave.open(io.BytesIO(data)) as reader:
        rate, channels = reader.getframerate(), reader.getnchannels()
        raw = reader.readframes(reader.getnframes())
    samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1), rate


def tone(frequency_hz: float, seconds: float, rate: int = 16_000, level: float = 0.3) -> np.ndarray:
    """A sine at ``frequency_hz`` with a few harmonics, like a sustained voiced sound."""
    t = np.arange(round(seconds * rate)) / rate
    wave_ = sum(np.sin(2 * np.pi * k * frequency_hz * t) / k for k in (1, 2, 3))
    return (level * wave_ / 1.84).astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit mono WAV."""
    path = Path(path)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    return path


def mux_audio(
    video: str | Path,
    out: str | Path,
    samples: np.ndarray,
    rate: int,
    *,
    out_rate: int | None = None,
    channels: int = 1,
    codec: str = "aac",
) -> Path:
    """``video`` (its video stream copied) with ``samples`` as its audio track, in ``out``.

    The track is encoded with ``codec`` at ``out_rate`` Hz (default: ``rate``) and ``channels``
    channels (ffmpeg up- or down-mixes the mono source). Its length is the sound's, not the
    video's: a sound shorter or longer than the video stays so.
    """
    import imageio_ffmpeg

    out = Path(out)
    source = write_wav(out.with_suffix(".src.wav"), samples, rate)
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error",
        "-i", str(video), "-i", str(source), "-map", "0:v", "-map", "1:a", "-c:v", "copy",
        "-c:a", codec, "-ar", str(out_rate or rate), "-ac", str(channels), str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False)
    source.unlink()
    if result.returncode != 0:
        raise RuntimeError(f"ffmpeg failed muxing {out}: {result.stderr.decode(errors='replace')}")
    return out


SENTENCES = (
    "I would love to tell you about my weekend.",
    "The project went well and the team was happy.",
    "Honestly, I think we should try something new.",
    "Let me explain how this works, step by step.",
    "We met at the station and walked to the river.",
    "Thank you all for coming here today.",
)


def write_voices(
    path: str | Path, pitches: Sequence[int], *, seed: int = 0
) -> tuple[Path, list[tuple[float, float]]]:
    """One WAV of utterances by espeak-ng at ``pitches``, and each one's (start_s, end_s).

    Sentences and speaking rates vary at random (``seed``), independently of the pitch, so a
    model that learns the pitch learns it from the voice and not from what is said.
    """
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    rate, position = 0, 0
    for pitch in pitches:
        text = SENTENCES[int(rng.integers(len(SENTENCES)))]
        voice, rate = speech(text, pitch=int(pitch), words_per_minute=int(rng.integers(140, 200)))
        spans.append((position / rate, (position + len(voice)) / rate))
        gap = np.zeros(rate // 4, np.float32)
        parts += [voice, gap]
        position += len(voice) + len(gap)
    return write_wav(path, np.concatenate(parts), rate), spans
