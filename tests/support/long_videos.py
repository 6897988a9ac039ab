"""Long H.264 videos for storage tests: one generated clip, re-encoded with a set group of
pictures and bit rate, repeated by stream copy (as the benchmarks make theirs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.clips import write_h264


def ffmpeg(*args: str) -> None:
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-y", "-nostdin", "-loglevel", "error", *args], check=True)


def write_long_video(
    folder: Path,
    seconds: float,
    *,
    piece_s: float = 10.0,
    fps: float = 10,
    size: tuple[int, int] = (320, 240),
    gop_s: float = 2.0,
    bitrate: str = "2M",
) -> Path:
    """A `seconds`-long faststart mp4: a `piece_s` talking head at `bitrate`, keyframes every
    `gop_s` seconds, repeated. Pieces are whole groups of pictures, so cuts stay clean."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = write_h264(folder / "raw.mp4", seconds=piece_s, fps=fps, size=size, preset="veryfast")
    piece = folder / "piece.mp4"
    gop = str(max(1, round(gop_s * fps)))
    ffmpeg(
        "-i", str(raw), "-c:v", "libx264", "-preset", "veryfast", "-g", gop,
        "-keyint_min", gop, "-sc_threshold", "0", "-b:v", bitrate, "-minrate", bitrate,
        "-maxrate", bitrate, "-bufsize", bitrate, "-x264-params", "nal-hrd=cbr",
        str(piece),
    )  # fmt: skip
    listing = folder / "pieces.txt"
    listing.write_text(f"file '{piece}'\n" * max(1, round(seconds / piece_s)))
    video = folder / f"long_{seconds:g}s.mp4"
    ffmpeg(
        "-f", "concat", "-safe", "0", "-i", str(listing), "-c", "copy",
        "-movflags", "+faststart", str(video),
    )  # fmt: skip
    return video
