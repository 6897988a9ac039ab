"""Stage time limits hold on a worker of one process (`--concurrency 1`), the default.

Such a worker used to run Celery's solo pool, which ignores time limits: a stage with a 2 s
hard limit ran for as long as its video took. Here a real worker of the ingest queue, with the
sampling stage's limits lowered through `OCEANSTREAM_STAGE_TIME_LIMITS`, samples a clip of one
long segment whose decoding alone takes seconds: the stage is stopped at its limit, the
segment fails with a message saying so (it does not wait in `pending`), its video is final
with that message, and the worker goes on to the next video.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.clips import write_talking_head
from tests.support.cluster import Cluster
from tests.support.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def slow_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 s of 1280x720 at 30 fps: a few seconds of decoding on one thread."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("slow") / "slow.mp4"
    command = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-nostdin", "-loglevel", "error",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=90",
        "-c:v", "libx264", "-preset", "ultrafast", str(path),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True)
    return path


def submit(cluster: Cluster, path: Path) -> str:
    done = cluster.cli("submit", str(path))
    assert done.returncode == 0, done.stderr
    (video_id,) = (
        row[0]
        for row in cluster.query(
            "SELECT j.video_id FROM job_videos j WHERE j.job_id = :job",
            job=done.stdout.strip().splitlines()[-1],
        )
    )
    return str(video_id)


def video(cluster: Cluster, video_id: str) -> tuple[str, str | None]:
    ((status, error),) = cluster.query(
        "SELECT status, error FROM videos WHERE id = :id", id=video_id
    )
    return status, error


def wait_status(cluster: Cluster, video_id: str, wanted: str, timeout: float) -> float:
    """Seconds until the video reached `wanted`."""
    start = time.monotonic()
    wait_for(lambda: video(cluster, video_id)[0] == wanted, timeout, f"{wanted}", every=0.1)
    return time.monotonic() - start


def ingested_next(cluster: Cluster, worker: subprocess.Popen[bytes], folder: Path) -> None:
    """The same worker ingests a normal clip afterwards: it stayed up."""
    clip = write_talking_head(folder / "next.mp4", seconds=1.0)
    wait_status(cluster, submit(cluster, clip), "extracting", 180)
    assert worker.poll() is None


#: The 90 s clip is one segment (up to 1.5 windows of 100 s), decoded by one sampling task.
ONE_SEGMENT = {"OCEANSTREAM_SEGMENT_SECONDS": "100"}


def test_hard_limit_kills_the_stage_and_fails_the_video(
    isolated_cluster: Cluster, slow_clip: Path, tmp_path: Path
) -> None:
    limits = {"sample": [None, 1]}  # no soft limit: only the kill can stop it
    isolated_cluster.extra_env["OCEANSTREAM_STAGE_TIME_LIMITS"] = json.dumps(limits)
    isolated_cluster.extra_env.update(ONE_SEGMENT)
    worker = isolated_cluster.start_worker("ingest", concurrency=1)
    video_id = submit(isolated_cluster, slow_clip)
    wait_status(isolated_cluster, video_id, "failed", 60)
    assert video(isolated_cluster, video_id)[1] == (
        "segment 0 (0-90 s): sample stage ran past its time limit of 1 s and was killed"
    )
    # Celery logs the kill after the handler that failed the segment has run.
    log = Path(worker.log_path)  # type: ignore[attr-defined]
    wait_for(
        lambda: "Hard time limit (1.0s) exceeded for oceanstream.sample" in log.read_text(),
        30,
        "the worker to log the kill",
    )
    ingested_next(isolated_cluster, worker, tmp_path)


def test_soft_limit_stops_the_stage_and_fails_the_video(
    isolated_cluster: Cluster, slow_clip: Path, tmp_path: Path
) -> None:
    limits = {"sample": [0.5, 30]}
    isolated_cluster.extra_env["OCEANSTREAM_STAGE_TIME_LIMITS"] = json.dumps(limits)
    isolated_cluster.extra_env.update(ONE_SEGMENT)
    worker = isolated_cluster.start_worker("ingest", concurrency=1)
    video_id = submit(isolated_cluster, slow_clip)
    wait_status(isolated_cluster, video_id, "failed", 60)
    assert video(isolated_cluster, video_id)[1] == (
        "segment 0 (0-90 s): sample stage ran past its soft time limit of 0.5 s and was stopped"
    )
    ingested_next(isolated_cluster, worker, tmp_path)


def test_limits_over_the_visibility_timeout_are_a_usage_error(
    isolated_cluster: Cluster,
) -> None:
    isolated_cluster.extra_env["OCEANSTREAM_STAGE_TIME_LIMITS"] = '{"ingest": [10, 5000]}'
    done = isolated_cluster.cli("worker", "--queues", "ingest", timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: OCEANSTREAM_STAGE_TIME_LIMITS: ingest hard time limit must be over 0 and "
        "under the broker's visibility "
        "timeout of 720 s, got 5000"
    ]
