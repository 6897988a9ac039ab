"""A stream that changes resolution mid-way is held to the resolution limit frame by frame.

The probe sees only the stream's first sequence header (320x240); the frames after the jump
are 8192x8192. Sampling must refuse the first such frame before converting or keeping it, and
scale kept frames down as they come, so a segment's memory stays bounded whatever the stream
does. The peak is measured in a process of its own: its high-water resident set (``VmHWM``;
``ru_maxrss`` would carry over the forking test process's size through exec). Before the
check, this stream (2 frames after the jump) grew it to about 760 MB, and 4 s of them to
6.1 GB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.video.probe import probe_video
from core.video.segment_sampling import plan_video, sample_video_segment
from core.video.selective_decode import decode_frames
from tests import clips

ROOT = Path(__file__).resolve().parents[2]
# What the sampling process may reach: the interpreter, numpy, OpenCV and PyAV take about
# 250 MB; one 8192x8192 picture in the decoder is 100 MB.
PEAK_LIMIT_MB = 500

SAMPLE_IN_A_PROCESS = """
import json, sys
from pathlib import Path
from core.video.segment_sampling import plan_video, sample_video_segment
from core.video.probe import probe_video
path = sys.argv[1]
info = probe_video(path)
try:
    sampled = sample_video_segment(
        path, plan_video(info, 15.0, path), 0, 16, info=info, max_side=640
    )
    out = {"shape": list(sampled.frames.shape)}
except Exception as error:
    out = {"error": type(error).__name__, "message": str(error)}
out["width"] = info.width
status = Path("/proc/self/status").read_text().splitlines()
out["peak_mb"] = next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def jump(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """320x240 for 2 s at 5 fps, then two 8192x8192 frames."""
    return clips.write_resolution_jump(tmp_path_factory.mktemp("jump") / "jump.ts")


def test_a_jump_past_the_limit_is_refused_with_memory_bounded(jump: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SAMPLE_IN_A_PROCESS, str(jump)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    out = json.loads(done.stdout)
    assert out["width"] == 320  # what the header says
    assert out["error"] == "VideoLimitError"
    assert "8192x8192 frame, over the limit of 3840x2160" in out["message"]
    assert out["peak_mb"] < PEAK_LIMIT_MB, out


def test_a_jump_within_the_limit_is_scaled_as_it_comes(tmp_path: Path) -> None:
    path = clips.write_resolution_jump(tmp_path / "hd.ts", large=(1280, 720), large_frames=5)
    info = probe_video(path)
    assert (info.width, info.height, info.frame_count) == (320, 240, 15)
    read = decode_frames(path, range(15), max_side=640)
    assert {f.shape for i, f in read.kept.items() if i < 10} == {(240, 320, 3)}
    assert {f.shape for i, f in read.kept.items() if i >= 10} == {(360, 640, 3)}
    # A segment's frames come out at the size of its first sample.
    sampled = sample_video_segment(path, plan_video(info, 15.0, path), 0, 16, info=info)
    assert sampled.frames.shape == (16, 240, 320, 3)
