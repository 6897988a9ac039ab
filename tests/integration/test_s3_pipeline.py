"""The distributed pipeline and erasure with the store in a bucket of an S3-compatible server.

moto's standalone server runs in a subprocess (`tests.support.s3`); the CLI and the workers
reach it through `OCEANSTREAM_STORAGE_URL=s3://...` and the standard AWS variables, as a fleet
reaches its bucket.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clips import write_talking_head
from tests.support.api import ApiServer, create_key
from tests.support.cluster import Cluster
from tests.support.s3 import S3Server
from tests.support.services import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_video_is_analysed_from_a_bucket_and_erasure_empties_it(
    cluster: Cluster, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    cluster.extra_env.update(s3_server.env)
    cluster.extra_env["OCEANSTREAM_STORAGE_URL"] = f"s3://{bucket}/oceanstream"
    clip = write_talking_head(tmp_path / "a.mp4", seconds=1.5, seed=1)
    cluster.start_worker("ingest,faces,flow,inference")

    submitted = cluster.cli("submit", str(clip))
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip().splitlines()[-1]
    assert cluster.wait_job(job_id) == {"done": 1}
    [(video_id, timings)] = cluster.query(
        "SELECT v.id, s.timings FROM videos v JOIN segments s ON s.video_id = v.id"
    )
    # Read by ranges: what the segment fetched is counted, at most the whole (small) file.
    assert 0 < timings["sample_bytes"] <= clip.stat().st_size + (1 << 20)
    objects = s3_server.list_bucket(bucket)
    assert any("/videos/" in key for key in objects), objects
    assert any(video_id in key for key in objects), objects

    erased = cluster.cli("purge", "--video", video_id)
    assert erased.returncode == 0, erased.stderr
    assert s3_server.list_bucket(bucket) == []
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in erased.stdout + erased.stderr


def test_an_upload_through_the_api_is_stored_in_the_bucket_and_erased_from_it(
    cluster: Cluster, s3_server: S3Server, tmp_path: Path
) -> None:
    bucket = s3_server.new_bucket()
    cluster.extra_env.update(s3_server.env)
    cluster.extra_env["OCEANSTREAM_STORAGE_URL"] = f"s3://{bucket}/api"
    cluster.extra_env["OCEANSTREAM_API_UPLOAD_DIR"] = str(tmp_path / "spool")
    clip = write_talking_head(tmp_path / "b.mp4", seconds=1.5, seed=2)
    key = create_key(cluster, "research")
    cluster.start_worker("ingest,faces,flow,inference")
    api = ApiServer(cluster)
    api.start()
    try:
        with api.client(key) as client:
            made = client.post("/v1/jobs", files=[("files", ("b.mp4", clip.read_bytes()))])
            assert made.status_code == 202, made.text
            job_id = made.json()["id"]
            assert cluster.wait_job(job_id) == {"done": 1}
            [video] = client.get(f"/v1/jobs/{job_id}/results").json()["items"]
            assert video["status"] == "done"
            assert any("/videos/" in key for key in s3_server.list_bucket(bucket))
            # Segments come in pages; a page past the end is empty and says the total.
            path = f"/v1/videos/{video['video_id']}"
            page = client.get(path, params={"segments_offset": 1, "segments_limit": 1})
            assert page.status_code == 200, page.text
            assert (page.json()["segments"], page.json()["segments_total"]) == ([], 1)
            refused = client.get(path, params={"segments_limit": 0})
            assert refused.status_code == 400
            assert "segments_limit must be 1-1000" in refused.text

            erased = client.delete(f"/v1/videos/{video['video_id']}")
            assert erased.status_code in (200, 202, 204), erased.text
            wait_for(lambda: s3_server.list_bucket(bucket) == [], 30, "the bucket to empty")
    finally:
        api.stop()
