"""core.audio.voice on real files: H.264 clips muxed with speech, tones and silence by ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from core.audio.voice import (
    AUDIO_TOKEN_DIM,
    NUM_MELS,
    SAMPLE_RATE,
    audio_tokens,
    decode_audio_window,
    log_mel_spectrogram,
    mel_filterbank,
    segment_audio_tokens,
)
from core.errors import VideoDecodeError
from core.video.segments import plan_segment_samples
from tests.audio_clips import mux_audio, speech, tone
from tests.clips import write_h264, write_text

VIDEO_SECONDS = 4.0
FRAME_TIMES = np.linspace(0.5, 3.5, 8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("audio")
    video = write_h264(
        root / "video.mp4", seconds=VIDEO_SECONDS, fps=10, size=(160, 120), preset="veryfast"
    )
    low_high = np.concatenate([tone(220, 2.0), tone(880, 2.0)])
    return {
        "none": video,
        "silence": mux_audio(video, root / "silence.mp4", np.zeros(4 * 16_000), 16_000),
        "tones": mux_audio(video, root / "tones.mp4", low_high, 16_000, out_rate=44_100),
        "surround": mux_audio(
            video, root / "surround.mp4", tone(220, 4.0, 48_000), 48_000, channels=6
        ),
        "short": mux_audio(video, root / "short.mp4", tone(220, 1.5), 16_000),
        "long": mux_audio(video, root / "long.mp4", tone(220, 7.0), 16_000),
    }


def _peak_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(samples))


def test_no_audio_track_is_a_masked_window(clips: dict[str, Path]) -> None:
    window = decode_audio_window(clips["none"], 1.0, 3.0)
    assert window.source_rate is None and window.source_channels == 0
    assert window.samples.shape == (2 * SAMPLE_RATE,) and not window.mask.any()
    tokens, mask = audio_tokens(window, FRAME_TIMES)
    assert tokens.shape == (8, AUDIO_TOKEN_DIM) and not mask.any() and not tokens.any()


def test_silence_is_decoded_but_gives_no_valid_token(clips: dict[str, Path]) -> None:
    window = decode_audio_window(clips["silence"], 0.0, VIDEO_SECONDS)
    assert window.mask[SAMPLE_RATE : 3 * SAMPLE_RATE].all()
    assert np.abs(window.samples).max() < 1e-3
    _, mask = audio_tokens(window, FRAME_TIMES)
    assert not mask.any()


def test_window_holds_the_tone_at_its_time(clips: dict[str, Path]) -> None:
    """44.1 kHz in, 16 kHz out; the 220 Hz half and the 880 Hz half land where they were."""
    window = decode_audio_window(clips["tones"], 0.0, VIDEO_SECONDS)
    assert window.source_rate == 44_100
    assert abs(_peak_hz(window.samples[SAMPLE_RATE // 2 : SAMPLE_RATE]) - 220) < 10
    assert abs(_peak_hz(window.samples[3 * SAMPLE_RATE : 7 * SAMPLE_RATE // 2]) - 880) < 10
    tokens, mask = audio_tokens(window, [1.0, 3.0])
    assert mask.all()
    low, high = tokens[:, :NUM_MELS].argmax(axis=1)  # the loudest mel band of each token
    assert high > low


def test_a_window_decoded_after_a_seek_equals_that_part_of_a_whole_decode(
    clips: dict[str, Path],
) -> None:
    whole = decode_audio_window(clips["tones"], 0.0, VIDEO_SECONDS)
    part = decode_audio_window(clips["tones"], 2.5, 3.5)
    assert part.start_s == 2.5 and part.mask.all()
    # A run starts on the 44.1 kHz grid and is placed on the 16 kHz one, up to half a sample
    # off the whole decode: the token is what must not change.
    same, _ = audio_tokens(whole, [3.0])
    seeked, _ = audio_tokens(part, [3.0])
    other, _ = audio_tokens(whole, [1.0])
    assert np.abs(seeked - same).max() < 1.0 < np.abs(seeked - other).max()


def test_surround_48k_is_downmixed_to_mono(clips: dict[str, Path]) -> None:
    window = decode_audio_window(clips["surround"], 1.0, 2.0)
    assert (window.source_rate, window.source_channels) == (48_000, 6)
    assert window.mask.all() and abs(_peak_hz(window.samples) - 220) < 10


def test_audio_shorter_than_the_video_is_masked_after_its_end(clips: dict[str, Path]) -> None:
    window = decode_audio_window(clips["short"], 0.0, VIDEO_SECONDS)
    covered = window.mask.nonzero()[0]
    assert 1.4 < len(covered) / SAMPLE_RATE < 1.7 and not window.mask[2 * SAMPLE_RATE :].any()
    _, mask = audio_tokens(window, FRAME_TIMES)
    assert mask[FRAME_TIMES < 1.0].all() and not mask[FRAME_TIMES > 2.0].any()


def test_audio_longer_than_the_video_is_cut_to_the_window(clips: dict[str, Path]) -> None:
    window = decode_audio_window(clips["long"], 3.0, 5.0)
    assert window.samples.shape == (2 * SAMPLE_RATE,) and window.mask.all()
    tokens, mask = segment_audio_tokens(clips["long"], 0.0, VIDEO_SECONDS, FRAME_TIMES)
    assert mask.all() and tokens.shape == (8, AUDIO_TOKEN_DIM)


def test_speech_at_8khz_mono(clips: dict[str, Path], tmp_path: Path) -> None:
    voice, rate = speech("The quick brown fox jumps over the lazy dog.", pitch=40)
    clip = mux_audio(clips["none"], tmp_path / "speech8k.mp4", voice, rate, out_rate=8_000)
    window = decode_audio_window(clip, 0.0, VIDEO_SECONDS)
    assert window.source_rate == 8_000 and window.has_audio
    spoken = min(len(voice) / rate, VIDEO_SECONDS)
    tokens, mask = audio_tokens(window, [spoken / 2])
    assert mask.all() and np.isfinite(tokens).all()
    # Nothing above the 4 kHz Nyquist of the source: the top mel bands hold (almost) nothing.
    spectrum = log_mel_spectrogram(window.samples[: int(spoken * SAMPLE_RATE)])
    assert spectrum[:, -4:].mean() < spectrum[:, 10:20].mean() - 5


def test_tokens_line_up_with_a_segments_sampled_frames(tmp_path: Path) -> None:
    """A talking head silent for 3 s, then speaking: the T tokens of its sampled frames are
    masked before the voice starts and valid while it speaks."""
    fps, seconds = 10, 6.0
    video = write_h264(
        tmp_path / "head.mp4", seconds=seconds, fps=fps, size=(160, 120), preset="veryfast"
    )
    voice, rate = speech("Good morning, let me tell you about my plans for the summer.")
    track = np.concatenate([np.zeros(3 * rate, np.float32), voice])[: int(seconds * rate)]
    clip = mux_audio(video, tmp_path / "head_speech.mp4", track, rate)
    samples = plan_segment_samples(range(0, 60), 60, 12)
    times = samples.indices / fps  # frame i is shown at i / fps
    tokens, mask = segment_audio_tokens(clip, 0.0, seconds, times)
    assert tokens.shape == (12, AUDIO_TOKEN_DIM)
    assert not mask[times < 2.4].any() and mask[(times > 3.6) & (times < 5.0)].all()


def test_mel_filterbank_covers_the_spectrum() -> None:
    bank = mel_filterbank()
    assert bank.shape == (257, NUM_MELS) and (bank >= 0).all()
    assert (bank.max(axis=0) > 0.5).all()  # every band has a peak near 1


def test_not_a_container_is_a_decode_error(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError):
        decode_audio_window(write_text(tmp_path / "x.mp4"), 0.0, 1.0)


def test_a_rate_and_layout_change_mid_stream(tmp_path: Path) -> None:
    """Two MPEG-TS parts joined: 22.05 kHz mono, then 44.1 kHz stereo (as a broadcast splice)."""
    parts = []
    for name, hz, rate, channels, offset in (("a", 220, 22_050, 1, 0), ("b", 880, 44_100, 2, 2)):
        part = tmp_path / f"{name}.ts"
        source = f"sine=frequency={hz}:duration=2:sample_rate={rate}"
        command = [
            imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", source, "-ac", str(channels), "-c:a", "aac",
            "-output_ts_offset", str(offset), "-f", "mpegts", str(part),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        parts.append(part.read_bytes())
    spliced = tmp_path / "spliced.ts"
    spliced.write_bytes(b"".join(parts))
    window = decode_audio_window(spliced, 0.0, 4.0)  # MPEG-TS starts at 1.4 s: the origin
    assert (window.source_rate, window.source_channels) == (22_050, 1)
    assert window.mask.mean() > 0.9
    assert abs(_peak_hz(window.samples[SAMPLE_RATE // 2 : 3 * SAMPLE_RATE // 2]) - 220) < 10
    assert abs(_peak_hz(window.samples[5 * SAMPLE_RATE // 2 : 7 * SAMPLE_RATE // 2]) - 880) < 10
