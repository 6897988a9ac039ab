"""The voice of a segment: its window of the audio track, and one audio token per sampled frame.

Two steps, both plain functions over a file path and times in seconds, so the audio stage can
call them beside the frame sampling of a segment (`core.video.selective_decode`):

* `decode_audio_window` reads only the segment's window of the first audio track with PyAV:
  it seeks to the packet at or before the window's start and stops after its end, then
  resamples to 16 kHz mono float (`av.AudioResampler`, FFmpeg's swresample). Whatever the
  track is (none, silence, 8-48 kHz, mono to 5.1, a rate or layout that changes mid-stream,
  shorter or longer than the video, a corrupt packet), the result is a window of samples and
  a mask of those that came from the track: the voice is optional, so audio never fails a
  segment. A file that is not a container at all raises `VideoDecodeError`, as the video
  stages do.
* `audio_tokens` turns the window into `[T, d_audio]` tokens, one per sampled frame time,
  from the log-mel spectrogram of the audio around that time (`TOKEN_SECONDS` centred on the
  frame), plus a `[T]` mask: a token is valid when enough of its window came from the track
  and was not digital silence. docs/audio.md says why log-mel and not eGeMAPS.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import av
import numpy as np

from core.errors import VideoDecodeError

SAMPLE_RATE = 16_000
# 25 ms windows every 10 ms: the usual paralinguistic framing (eGeMAPS and Kaldi use it).
WINDOW_SAMPLES = 400
HOP_SAMPLES = 160
FFT_SIZE = 512
NUM_MELS = 64
# The audio one token summarises, centred on its frame: about the spacing of 16 samples
# over a 15 s segment, so the tokens together cover the segment.
TOKEN_SECONDS = 1.0
# A token needs this much of its window from the track, and that part above digital silence.
MIN_VALID_FRACTION = 0.5
SILENCE_RMS = 1e-4  # -80 dBFS
# Per token: the mean and the standard deviation of each mel band over the token's window.
AUDIO_TOKEN_DIM = 2 * NUM_MELS
# A jump in timestamps larger than this starts a new run of samples (a gap is left masked).
_GAP_SECONDS = 0.05
_LOG_FLOOR = 1e-10


@dataclass(frozen=True)
class AudioWindow:
    """A window of a file's audio, 16 kHz mono float32, and where it holds real audio."""

    samples: np.ndarray  # [N] float32 in [-1, 1]; zeros where the track had nothing
    mask: np.ndarray  # [N] bool: the sample came from the track
    start_s: float  # the time of samples[0] in the video
    source_rate: int | None  # the track's sample rate (its first frame's), None: no track
    source_channels: int  # the track's channel count, 0: no track
    sample_rate: int = SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + len(self.samples) / self.sample_rate

    @property
    def has_audio(self) -> bool:
        return bool(self.mask.any())


def decode_audio_window(path: str | Path, start_s: float, end_s: float) -> AudioWindow:
    """The audio of ``[start_s, end_s)`` seconds of ``path``, at 16 kHz mono.

    Times count from the video's first frame (frame ``i`` of the sampling is at ``i / fps``).
    Reads from the packet at or before ``start_s`` (a seek, not a decode from the start) to
    the first frame past ``end_s``. Samples the track does not cover (no track, a track that
    starts late or ends early, a gap, a packet that does not decode) are zeros with
    ``mask`` False.
    """
    if not (math.isfinite(start_s) and math.isfinite(end_s) and 0 <= start_s <= end_s):
        raise ValueError(f"expected 0 <= start_s <= end_s, got {start_s} and {end_s}")
    path = Path(path)
    count = round((end_s - start_s) * SAMPLE_RATE)
    samples = np.zeros(count, np.float32)
    mask = np.zeros(count, bool)
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as error:
        raise VideoDecodeError(f"not a container FFmpeg can read: {path}") from error
    with container:
        if not container.streams.audio:
            return AudioWindow(samples, mask, start_s, None, 0)
        stream = container.streams.audio[0]
        rate, channels = stream.rate or None, stream.channels or 0
        origin = _origin_s(container, stream)
        for time_s, chunk in _resampled_runs(container, stream, origin + start_s, origin + end_s):
            _place(samples, mask, chunk, round((time_s - origin - start_s) * SAMPLE_RATE))
    return AudioWindow(samples, mask, start_s, rate, channels)


def _origin_s(container: av.container.InputContainer, stream: av.AudioStream) -> float:
    """The time of video frame 0 (`core.video.frame_grid`), which times in this module count from.

    MP4 starts its streams at 0; MPEG-TS typically at 1.4 s. Without a video stream the audio
    track's own start is the origin.
    """
    for candidate in (*container.streams.video[:1], stream):
        if candidate.start_time is not None and candidate.time_base is not None:
            return float(candidate.start_time * candidate.time_base)
    return 0.0


def _place(samples: np.ndarray, mask: np.ndarray, chunk: np.ndarray, offset: int) -> None:
    """Copy ``chunk`` into the window at ``offset``, cropped to the window."""
    lo, hi = max(offset, 0), min(offset + len(chunk), len(samples))
    if lo < hi:
        samples[lo:hi] = chunk[lo - offset : hi - offset]
        mask[lo:hi] = True


def _resampled_runs(
    container: av.container.InputContainer, stream: av.AudioStream, start_s: float, end_s: float
) -> Iterator[tuple[float, np.ndarray]]:
    """(time of first sample, 16 kHz mono samples) runs of the track around the window.

    One resampler serves a run of frames whose timestamps follow on and whose format stays
    the same; a gap in the timestamps, or a change of rate or channel layout, ends the run
    (its resampler is flushed) and starts another at the new frame's own time.
    """
    resampler: av.AudioResampler | None = None
    run_start = expected = 0.0
    key: tuple[int, str, str] | None = None
    parts: list[np.ndarray] = []

    def finish() -> Iterator[tuple[float, np.ndarray]]:
        if resampler is not None:
            parts.extend(_mono(f) for f in resampler.resample(None))
        if parts:
            yield run_start, np.concatenate(parts)
        parts.clear()

    for frame in _frames_from(container, stream, start_s):
        if frame.pts is None or frame.time_base is None or frame.samples == 0:
            continue
        time_s = float(frame.pts * frame.time_base)
        if time_s >= end_s:
            break
        frame_key = (frame.sample_rate, frame.format.name, frame.layout.name)
        if resampler is None or frame_key != key or abs(time_s - expected) > _GAP_SECONDS:
            yield from finish()
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            run_start, key = time_s, frame_key
        expected = time_s + frame.samples / frame.sample_rate
        parts.extend(_mono(f) for f in resampler.resample(frame))
    yield from finish()


def _frames_from(
    container: av.container.InputContainer, stream: av.AudioStream, start_s: float
) -> Iterator[av.AudioFrame]:
    """Decoded frames from the last one starting at or before ``start_s`` on.

    Some demuxers (MPEG-TS) land a seek after its target; then it seeks again, earlier each
    time (0.5 s, 1 s, 2 s... before), down to the stream's start.
    """
    back = 0.0
    while True:
        target = max(start_s - back, 0.0)
        _seek(container, stream, target)
        frames = _decoded(container, stream)
        first = next(frames, None)
        if first is None:
            return
        time_s = float(first.pts * first.time_base) if first.pts is not None else 0.0
        if target <= 0 or time_s <= start_s + _GAP_SECONDS:
            yield first
            yield from frames
            return
        back = 2 * back if back else 0.5


def _seek(container: av.container.InputContainer, stream: av.AudioStream, time_s: float) -> None:
    if stream.time_base is None:
        return
    try:
        container.seek(int(time_s / stream.time_base), stream=stream, backward=True)
    except av.FFmpegError:
        container.seek(0, stream=stream, backward=True)


def _decoded(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator:
    """Decoded frames; a packet that does not decode loses its frame, not the window."""
    try:
        for packet in container.demux(stream):
            try:
                yield from packet.decode()
            except av.FFmpegError:
                continue
    except av.FFmpegError:
        return  # a demuxer error ends the track here; what came before stays


def _mono(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray().reshape(-1).astype(np.float32, copy=False)


@cache
def mel_filterbank(
    num_mels: int = NUM_MELS, fft_size: int = FFT_SIZE, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """[fft_size // 2 + 1, num_mels] triangular filters on the HTK mel scale, 0 Hz to Nyquist."""

    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def hz(mels: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)

    edges = hz(np.linspace(0.0, mel(np.array(sample_rate / 2)), num_mels + 2))
    bins = np.linspace(0.0, sample_rate / 2, fft_size // 2 + 1)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """[frames, NUM_MELS] log mel energies of 16 kHz samples: 25 ms Hann windows, 10 ms hop.

    Frame ``i`` covers samples ``[i * HOP_SAMPLES, i * HOP_SAMPLES + WINDOW_SAMPLES)``.
    """
    samples = np.asarray(samples, np.float32)
    if len(samples) < WINDOW_SAMPLES:
        return np.zeros((0, NUM_MELS), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(samples, WINDOW_SAMPLES)[::HOP_SAMPLES]
    spectrum = np.fft.rfft(frames * np.hanning(WINDOW_SAMPLES).astype(np.float32), FFT_SIZE)
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32)
    return np.log(power @ mel_filterbank() + _LOG_FLOOR).astype(np.float32)


def audio_tokens(
    window: AudioWindow, frame_times_s: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One token per frame time: ``([T, AUDIO_TOKEN_DIM] float32, [T] bool mask)``.

    A token is the mean and standard deviation of each log-mel band over the spectrogram
    frames within ``TOKEN_SECONDS / 2`` of its time, counting only frames that lie wholly on
    audio from the track. It is valid (mask True) when those frames cover at least
    ``MIN_VALID_FRACTION`` of its span and are not digital silence; an invalid token is zeros.
    """
    times = np.asarray(frame_times_s, np.float64).reshape(-1)
    tokens = np.zeros((len(times), AUDIO_TOKEN_DIM), np.float32)
    valid = np.zeros(len(times), bool)
    if not window.has_audio or not len(times):
        return tokens, valid
    spectrogram = log_mel_spectrogram(window.samples)
    usable = _frames_usable(window, len(spectrogram))
    centres = (np.arange(len(spectrogram)) * HOP_SAMPLES + WINDOW_SAMPLES / 2) / SAMPLE_RATE
    centres += window.start_s
    span = TOKEN_SECONDS * SAMPLE_RATE / HOP_SAMPLES  # spectrogram frames one token may hold
    for i, time_s in enumerate(times):
        near = usable & (np.abs(centres - time_s) <= TOKEN_SECONDS / 2)
        if near.sum() < MIN_VALID_FRACTION * span:
            continue
        bands = spectrogram[near]
        tokens[i] = np.concatenate([bands.mean(axis=0), bands.std(axis=0)])
        valid[i] = True
    return tokens, valid


def _frames_usable(window: AudioWindow, count: int) -> np.ndarray:
    """[count] bool: the spectrogram frame lies wholly on track audio that is not silence."""
    if count == 0:
        return np.zeros(0, bool)
    starts = np.arange(count) * HOP_SAMPLES
    covered = np.concatenate([[0], np.cumsum(window.mask, dtype=np.int64)])
    whole = covered[starts + WINDOW_SAMPLES] - covered[starts] == WINDOW_SAMPLES
    framed = np.lib.stride_tricks.sliding_window_view(window.samples, WINDOW_SAMPLES)
    rms = np.sqrt(np.mean(np.square(framed[::HOP_SAMPLES][:count]), axis=1))
    return whole & (rms > SILENCE_RMS)


def segment_audio_tokens(
    path: str | Path, start_s: float, end_s: float, frame_times_s: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A segment's audio tokens: the window its frame times need, decoded, then tokenised.

    The window runs from half a token before the first frame time to half a token after the
    last one, clipped below at 0 and at least ``[start_s, end_s)``.
    """
    times = np.asarray(frame_times_s, np.float64).reshape(-1)
    lo = max(0.0, min(start_s, float(times.min(initial=start_s)) - TOKEN_SECONDS / 2))
    hi = max(end_s, float(times.max(initial=end_s)) + TOKEN_SECONDS / 2)
    return audio_tokens(decode_audio_window(path, lo, hi), times)


__all__ = [
    "AUDIO_TOKEN_DIM",
    "SAMPLE_RATE",
    "AudioWindow",
    "audio_tokens",
    "decode_audio_window",
    "log_mel_spectrogram",
    "mel_filterbank",
    "segment_audio_tokens",
]
