"""Generators of test video clips, written to disk so tests decode them like real uploads.

Every clip is deterministic for a given ``seed``. Two kinds of content exist:

* a *talking head*, animated from the real face photo ``skimage.data.astronaut()`` (cropped
  around her face, then moved, zoomed, tilted and re-lit over time) so that MTCNN finds a face
  in nearly every frame;
* a *faceless* scene, ``skimage.data.coffee()`` panned and zoomed, with no face in it.

Clips are written through ``cv2.VideoWriter`` (``mp4v`` in .mp4, ``MJPG`` in .avi) except
``write_h264``, which pipes raw frames to the ffmpeg binary shipped by ``imageio_ffmpeg``
because OpenCV cannot encode H.264. Bad inputs (empty, text, random bytes, truncated) come
from the ``write_*`` helpers at the end of the module.

The frame generators (``talking_head_frames``, ``faceless_frames``) yield RGB ``uint8``
frames, so tests can also build clips of their own with ``write_video``.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import cv2
import numpy as np

Size = tuple[int, int]  # (width, height), the order OpenCV uses

# Centre and height of the astronaut's face in the 512x512 photo (an MTCNN box).
_FACE_CENTER = (224.0, 118.0)
_FACE_HEIGHT = 107.0
# The face covers this fraction of the clip height at zoom 1.
_FACE_FRACTION = 0.45


@cache
def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@cache
def _coffee() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.coffee())


def _num_frames(seconds: float, fps: float) -> int:
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got {seconds} and {fps}")
    return max(1, round(seconds * fps))


def _phases(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi, size=count)


def _relight(image: np.ndarray, gain: float, side: float) -> np.ndarray:
    """Apply a global gain and a left-to-right light gradient (on the small source photo)."""
    ramp = np.linspace(1.0 - side, 1.0 + side, image.shape[1], dtype=np.float32)
    out = image.astype(np.float32) * (gain * ramp)[None, :, None]
    return np.clip(out, 0, 255).astype(np.uint8)


def _tinted(image: np.ndarray, tint: tuple[float, float, float]) -> np.ndarray:
    """Multiply each colour channel by its factor (the identity tint returns ``image``)."""
    if tuple(tint) == (1.0, 1.0, 1.0):
        return image
    out = image.astype(np.float32) * np.asarray(tint, np.float32)[None, None, :]
    return np.clip(out, 0, 255).astype(np.uint8)


class _SensorNoise:
    """Mild per-frame grain, drawn from a small bank so large frames stay cheap to make."""

    def __init__(self, size: Size, seed: int, bank: int = 4, sigma: float = 1.5) -> None:
        width, height = size
        self._rng = np.random.default_rng(seed)
        grain = self._rng.standard_normal((bank, height, width, 1), dtype=np.float32) * sigma
        self._bank = np.repeat(np.round(grain).astype(np.int16), 3, axis=3)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        grain = self._bank[self._rng.integers(len(self._bank))]
        return np.clip(frame.astype(np.int16) + grain, 0, 255).astype(np.uint8)


def _warp(source: np.ndarray, matrix: np.ndarray, size: Size) -> np.ndarray:
    return cv2.warpAffine(
        source, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def talking_head_frames(
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    seed: int = 0,
    brightness: float = 1.0,
    motion: float = 1.0,
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Iterator[np.ndarray]:
    """Yield RGB frames of the astronaut's face, moving like a person talking to a camera.

    The head sways (translation of a few % of the frame), leans in and out (zoom +-8 %),
    tilts (+-6 degrees) and the light changes (+-15 % gain, a moving side light). Every
    amplitude is multiplied by ``motion`` (0 gives a still picture with sensor noise only);
    ``brightness`` multiplies the whole image. ``seed`` picks the phases and the noise.
    ``tint`` multiplies the R, G, B channels of the photo, ``scale`` the face size and
    ``offset`` moves the face's resting place by fractions of the frame width and height:
    together they give one photo several distinct looks.
    """
    width, height = size
    source = _tinted(_astronaut(), tint)
    base_scale = scale * _FACE_FRACTION * height / _FACE_HEIGHT
    ph = _phases(seed, 6)
    noise = _SensorNoise(size, seed + 1)
    for i in range(_num_frames(seconds, fps)):
        t = i / fps
        zoom = 1.0 + 0.08 * motion * math.sin(2 * math.pi * 0.3 * t + ph[0])
        angle = 6.0 * motion * math.sin(2 * math.pi * 0.4 * t + ph[1])
        shift_x = 0.04 * width * motion * math.sin(2 * math.pi * 0.5 * t + ph[2])
        shift_y = 0.03 * height * motion * math.sin(2 * math.pi * 0.7 * t + ph[3])
        matrix = cv2.getRotationMatrix2D(_FACE_CENTER, angle, base_scale * zoom)
        matrix[0, 2] += width * (0.5 + offset[0]) + shift_x - _FACE_CENTER[0]
        matrix[1, 2] += height * (0.5 + offset[1]) + shift_y - _FACE_CENTER[1]
        gain = brightness * (1.0 + 0.15 * motion * math.sin(2 * math.pi * 0.6 * t + ph[4]))
        side = 0.12 * motion * math.sin(2 * math.pi * 0.25 * t + ph[5])
        yield noise(_warp(_relight(source, gain, side), matrix, size))


def faceless_frames(
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    seed: int = 0,
    brightness: float = 1.0,
    motion: float = 1.0,
) -> Iterator[np.ndarray]:
    """Yield RGB frames panning over ``skimage.data.coffee()`` (a cup on a table, no face).

    The camera pans across the photo and zooms slightly; ``motion`` scales both, and
    ``brightness`` multiplies the image, as in ``talking_head_frames``.
    """
    width, height = size
    source = _coffee()
    src_h, src_w = source.shape[:2]
    # Show about 70 % of the photo's height so there is room to pan.
    base_scale = height / (0.7 * src_h)
    ph = _phases(seed, 3)
    noise = _SensorNoise(size, seed + 1)
    lit = _relight(source, brightness, 0.0)
    for i in range(_num_frames(seconds, fps)):
        t = i / fps
        zoom = 1.0 + 0.05 * motion * math.sin(2 * math.pi * 0.3 * t + ph[0])
        cx = src_w / 2 + 0.15 * src_w * motion * math.sin(2 * math.pi * 0.2 * t + ph[1])
        cy = src_h / 2 + 0.08 * src_h * motion * math.sin(2 * math.pi * 0.3 * t + ph[2])
        matrix = cv2.getRotationMatrix2D((cx, cy), 0.0, base_scale * zoom)
        matrix[0, 2] += width / 2 - cx
        matrix[1, 2] += height / 2 - cy
        yield noise(_warp(lit, matrix, size))


def write_video(
    path: str | Path, frames: Iterable[np.ndarray], *, fps: float, fourcc: str = "mp4v"
) -> Path:
    """Write RGB frames with ``cv2.VideoWriter`` (``mp4v`` for .mp4, ``MJPG`` for .avi)."""
    path = Path(path)
    writer: cv2.VideoWriter | None = None
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                code = cv2.VideoWriter.fourcc(*fourcc)
                writer = cv2.VideoWriter(str(path), code, float(fps), (width, height))
                if not writer.isOpened():
                    raise RuntimeError(f"OpenCV cannot write {fourcc!r} to {path}")
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise ValueError("write_video needs at least one frame")
    return path


def write_talking_head(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    fourcc: str = "mp4v",
    seed: int = 0,
    brightness: float = 1.0,
    motion: float = 1.0,
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
    scale: float = 1.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Path:
    """Write a talking-head clip (see ``talking_head_frames``) and return its path."""
    frames = talking_head_frames(
        seconds=seconds,
        fps=fps,
        size=size,
        seed=seed,
        brightness=brightness,
        motion=motion,
        tint=tint,
        scale=scale,
        offset=offset,
    )
    return write_video(path, frames, fps=fps, fourcc=fourcc)


def write_faceless(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    fourcc: str = "mp4v",
    seed: int = 0,
    brightness: float = 1.0,
    motion: float = 1.0,
) -> Path:
    """Write a clip with a moving textured scene and no face; return its path."""
    frames = faceless_frames(
        seconds=seconds, fps=fps, size=size, seed=seed, brightness=brightness, motion=motion
    )
    return write_video(path, frames, fps=fps, fourcc=fourcc)


def write_h264(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: float = 15,
    size: Size = (320, 240),
    seed: int = 0,
    brightness: float = 1.0,
    motion: float = 1.0,
    faces: bool = True,
    crf: int = 23,
    preset: str = "medium",
) -> Path:
    """Write an H.264 (yuv420p, faststart) mp4 of the talking head, or of the faceless scene.

    Encoded by the ffmpeg binary that ``imageio_ffmpeg`` ships, fed raw RGB frames on stdin.
    ``crf`` and ``preset`` default to libx264's own defaults (23, medium), which most tools
    use, so decoding costs what it costs on real uploads; ``preset="veryfast"`` halves the time
    to write a long clip. Width and height must be even.
    """
    import imageio_ffmpeg

    path = Path(path)
    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"H.264 yuv420p needs an even width and height, got {width}x{height}")
    make = talking_head_frames if faces else faceless_frames
    frames = make(
        seconds=seconds, fps=fps, size=size, seed=seed, brightness=brightness, motion=motion
    )
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "pipe:0", "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    with subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdin is not None and process.stderr is not None
        # If ffmpeg stops early the pipe breaks; its stderr then says why.
        with contextlib.suppress(BrokenPipeError):
            try:
                for frame in frames:
                    process.stdin.write(np.ascontiguousarray(frame).tobytes())
            finally:
                process.stdin.close()
        stderr = process.stderr.read().decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({process.returncode}) writing {path}: {stderr}")
    return path


def write_resolution_jump(
    path: str | Path,
    *,
    small: Size = (320, 240),
    large: Size = (8192, 8192),
    small_s: float = 2.0,
    large_frames: int = 2,
    fps: int = 5,
) -> Path:
    """An MPEG-TS whose resolution jumps mid-stream: ``small`` for ``small_s`` seconds, then
    ``large_frames`` frames of ``large`` (a new sequence header; the container's header and a
    probe see only ``small``). Two H.264 test patterns joined as transport streams are.
    """
    import imageio_ffmpeg

    path = Path(path)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    parts = []
    for i, (size, frames, offset) in enumerate(
        [(small, round(small_s * fps), 0.0), (large, large_frames, small_s)]
    ):
        part = path.with_name(f"{path.stem}.part{i}.ts")
        command = [
            ffmpeg, "-y", "-nostdin", "-loglevel", "error",
            "-f", "lavfi", "-i", f"testsrc=size={size[0]}x{size[1]}:rate={fps}",
            "-frames:v", str(frames), "-c:v", "libx264", "-preset", "ultrafast",
            "-pix_fmt", "yuv420p", "-output_ts_offset", str(offset), "-f", "mpegts", str(part),
        ]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True)
        parts.append(part)
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    for part in parts:
        part.unlink()
    return path


def write_empty(path: str | Path) -> Path:
    """Write a zero-byte file (an upload that never arrived)."""
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_text(path: str | Path, text: str = "this is not a video\n" * 20) -> Path:
    """Write a text file, whatever the name says (e.g. ``notes.mp4``)."""
    path = Path(path)
    path.write_text(text, encoding="utf-8")
    return path


def write_random_bytes(path: str | Path, n: int = 64 * 1024, seed: int = 0) -> Path:
    """Write ``n`` random bytes: noise no demuxer should take for a video."""
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(n))
    return path


def write_truncated(src: str | Path, dst: str | Path, keep_fraction: float = 0.5) -> Path:
    """Copy the first ``keep_fraction`` of ``src``'s bytes to ``dst`` (an interrupted upload).

    An mp4 with its index at the end (OpenCV's writer) then no longer opens; a faststart
    mp4 (``write_h264``) still opens and declares every frame, but decodes only some.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    src, dst = Path(src), Path(dst)
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep_fraction)])
    return dst


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.clips OUT.mp4 [--seconds S] [--h264]`: write a sample talking head."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a sample talking-head clip.")
    parser.add_argument("out", type=Path)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--h264", action="store_true", help="H.264 through imageio-ffmpeg")
    args = parser.parse_args(argv)
    size = (args.width, args.height)
    if args.h264:
        write_h264(args.out, seconds=args.seconds, fps=args.fps, size=size)
    else:
        write_talking_head(args.out, seconds=args.seconds, fps=args.fps, size=size)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
