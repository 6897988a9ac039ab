"""Upload to results through the API alone, with real workers; callbacks; erasure."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.support.api import (
    ApiServer,
    CallbackReceiver,
    Keys,
    result_reads,
    sse_events,
    stored_files,
)
from tests.support.cluster import Cluster
from tests.support.services import wait_for
from workers.services.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Tables holding a video's rows (directly or through its segments and predictions).
VIDEO_ROWS = {
    "videos": "SELECT count(*) FROM videos WHERE id = :video",
    "job_videos": "SELECT count(*) FROM job_videos WHERE video_id = :video",
    "predictions": "SELECT count(*) FROM predictions WHERE video_id = :video",
    "attention_maps": "SELECT count(*) FROM attention_maps a JOIN predictions p "
    "ON p.id = a.prediction_id WHERE p.video_id = :video",
    "segments": "SELECT count(*) FROM segments WHERE video_id = :video",
    "persons": "SELECT count(*) FROM persons WHERE video_id = :video",
}


def rows_of(cluster: Cluster, video_id: str) -> dict[str, int]:
    return {table: cluster.query(sql, video=video_id)[0][0] for table, sql in VIDEO_ROWS.items()}


def test_three_uploads_followed_to_results_callback_and_erasure(
    api: ApiServer, pipeline_workers: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    api_cluster = pipeline_workers
    with CallbackReceiver(statuses=[503, 200]) as receiver, api.client(keys.alpha) as alpha:
        files = [
            ("files", (path.name, path.read_bytes(), "video/mp4"))
            for path in (clips["good"], clips["faceless"], clips["broken"])
        ]
        made = alpha.post("/v1/jobs", files=files, data={"callback_url": receiver.url})
        assert made.status_code == 202, made.text
        job = made.json()
        assert made.headers["location"] == f"/v1/jobs/{job['id']}"
        assert job["total"] == 3 and job["callback_state"] == "waiting"

        events = list(sse_events(alpha, f"/v1/jobs/{job['id']}/events", timeout=240))
        assert events[-1][0] == "final"
        assert json.loads(events[-1][1])["finished"] == 3

        results = alpha.get(f"/v1/jobs/{job['id']}/results").json()
        assert results["next_cursor"] is None
        by_name = {row["video"]: row for row in results["items"]}
        assert {name: row["status"] for name, row in by_name.items()} == {
            "good.mp4": "done",
            "faceless.mp4": "no_face",
            "broken.mp4": "failed",
        }
        good = by_name["good.mp4"]
        assert set(good["traits"]) == {
            "openness",
            "conscientiousness",
            "extraversion",
            "agreeableness",
            "neuroticism",
        }
        assert good["model_trained"] is False  # the built-in bundle
        assert by_name["broken.mp4"]["error"]
        page = alpha.get(f"/v1/jobs/{job['id']}/results", params={"limit": 2}).json()
        rest = alpha.get(
            f"/v1/jobs/{job['id']}/results", params={"cursor": page["next_cursor"]}
        ).json()
        assert page["items"] + rest["items"] == results["items"]
        table = list(
            csv.DictReader(
                io.StringIO(
                    alpha.get(f"/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
                )
            )
        )
        assert [row["status"] for row in table] == [r["status"] for r in results["items"]]

        video = alpha.get(f"/v1/videos/{good['video_id']}").json()
        assert video == good
        attention = alpha.get(f"/v1/videos/{good['video_id']}/attention").json()
        shape = attention["shape"]
        assert len(shape) == 4 and shape[0] == 2 and shape[2] == shape[3]
        assert len(attention["weights"]) == 2
        png = alpha.get(f"/v1/videos/{good['video_id']}/attention.png")
        assert png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
        no_map = alpha.get(f"/v1/videos/{by_name['faceless.mp4']['video_id']}/attention")
        assert no_map.status_code == 404
        # One (segment, person)'s map: the one-segment clip's person is the headline's.
        segment_map = alpha.get(
            f"/v1/videos/{good['video_id']}/attention", params={"segment": 0, "person": 0}
        ).json()
        assert segment_map["shape"] == shape
        assert segment_map["weights"] == attention["weights"]
        missing = alpha.get(f"/v1/videos/{good['video_id']}/attention", params={"segment": 9})
        assert missing.status_code == 404
        assert "has no segment 9 (segments 0-0)" in missing.json()["detail"]

        # The callback: refused once (503), retried, delivered, signed.
        wait_for(lambda: len(receiver.received) >= 2, 60, "the callback to be delivered")
        secret = api_cluster.query("SELECT webhook_secret FROM tenants WHERE name = 'alpha'")[0][0]
        for delivery in receiver.received:
            headers = {k.lower(): v for k, v in delivery.headers.items()}
            assert verify_signature(
                secret,
                headers[TIMESTAMP_HEADER.lower()],
                headers[SIGNATURE_HEADER.lower()],
                delivery.body,
            )
            assert not verify_signature(
                "wrong",
                headers[TIMESTAMP_HEADER.lower()],
                headers[SIGNATURE_HEADER.lower()],
                delivery.body,
            )
        summary = json.loads(receiver.received[-1].body)
        assert summary["job"]["id"] == job["id"]
        assert [row["status"] for row in summary["results"]] == [
            r["status"] for r in results["items"]
        ]

        def delivered() -> bool:
            return alpha.get(f"/v1/jobs/{job['id']}").json()["callback_state"] == "delivered"

        wait_for(delivered, 30, "the callback to be marked delivered")
        attempts = api_cluster.query(
            "SELECT attempt, status_code FROM callback_attempts WHERE job_id = :job "
            "ORDER BY attempt",
            job=job["id"],
        )
        assert attempts == [(1, 503), (2, 200)]

        # Erasure: a video, then the job; no row and no stored object is left.
        video_ids = [row["video_id"] for row in results["items"]]
        assert any(good["video_id"] in name for name in stored_files(api_cluster))
        assert rows_of(api_cluster, good["video_id"])["predictions"] == 1
        assert alpha.delete(f"/v1/videos/{good['video_id']}").status_code == 204
        assert alpha.get(f"/v1/videos/{good['video_id']}").status_code == 404
        assert set(rows_of(api_cluster, good["video_id"]).values()) == {0}
        assert not any(good["video_id"] in name for name in stored_files(api_cluster))
        assert alpha.delete(f"/v1/jobs/{job['id']}").status_code == 204
        assert alpha.get(f"/v1/jobs/{job['id']}").status_code == 404
        for video_id in video_ids:
            assert set(rows_of(api_cluster, video_id).values()) == {0}
        left = stored_files(api_cluster)
        assert not any(video_id in name for video_id in video_ids for name in left)
        uploads = api_cluster.query("SELECT storage_uri FROM videos WHERE storage_uri IS NOT NULL")
        still_referenced = {uri.rsplit("/", 1)[-1] for (uri,) in uploads}
        assert all(
            name.rsplit("/", 1)[-1] in still_referenced for name in left if "/videos/" in f"/{name}"
        ), left
        assert api_cluster.query(
            "SELECT count(*) FROM callback_attempts WHERE job_id = :job", job=job["id"]
        ) == [(0,)]


def test_an_error_names_each_entrys_own_file(
    api: ApiServer, pipeline_workers: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    """The same bytes uploaded as two names are one analysis; each entry's error names it."""
    data = clips["broken"].read_bytes() + b"names"
    with api.client(keys.alpha) as alpha:
        first = alpha.post("/v1/jobs", files=[("files", ("text.mp4", data, "video/mp4"))]).json()

        def final() -> bool:
            return bool(alpha.get(f"/v1/jobs/{first['id']}").json()["final"])

        wait_for(final, 120, "the first upload to fail")
        second = alpha.post("/v1/jobs", files=[("files", ("evil.mp4", data, "video/mp4"))]).json()
        assert second["videos"][0]["video_id"] == first["videos"][0]["video_id"]
        [row] = alpha.get(f"/v1/jobs/{second['id']}/results").json()["items"]
        [earlier] = alpha.get(f"/v1/jobs/{first['id']}/results").json()["items"]
    assert row["status"] == "failed"
    assert row["error"].endswith(": evil.mp4") and "text.mp4" not in row["error"], row["error"]
    assert earlier["error"].endswith(": text.mp4"), earlier["error"]


def test_purge_erases_from_the_cli(
    api: ApiServer, api_cluster: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    with api.client(keys.beta) as beta:
        job = beta.post(
            "/v1/jobs",
            files=[("files", ("x.mp4", clips["broken"].read_bytes() + b"purge", "video/mp4"))],
        ).json()
        purged = api_cluster.cli("purge", "--job", job["id"])
        assert purged.returncode == 0, purged.stderr
        assert "erased 1 job(s), 1 video(s)" in purged.stdout
        assert beta.get(f"/v1/jobs/{job['id']}").status_code == 404
    usage = api_cluster.cli("purge", "--job", "a", "--older-than", "3")
    assert usage.returncode == 2
    unknown = api_cluster.cli("purge", "--video", "0" * 32)
    assert unknown.returncode == 2 and "no video" in unknown.stderr


def test_the_reconciler_erases_what_is_past_retention(
    api: ApiServer, api_cluster: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    """Last: it erases every job of the session's database."""
    with api.client(keys.beta) as beta:
        job = beta.post(
            "/v1/jobs",
            files=[("files", ("old.mp4", clips["broken"].read_bytes() + b"old", "video/mp4"))],
        ).json()
        kept = dict(api_cluster.extra_env)
        api_cluster.extra_env["OCEANSTREAM_RETENTION_DAYS"] = "0.00001"  # under a second
        try:
            swept = api_cluster.cli("reconcile", "--older-than", "3600")
        finally:
            api_cluster.extra_env = kept
        assert swept.returncode == 0, swept.stderr
        assert "retention: erased" in swept.stderr
        assert beta.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert api_cluster.query("SELECT count(*) FROM videos") == [(0,)]


def test_a_kept_result_is_checked_on_every_read(
    api: ApiServer, pipeline_workers: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    """The API keeps a final result's JSON, but another tenant, a change of the video (a new
    job naming it) and its erasure through the CLI are each seen on the very next read."""
    cluster = pipeline_workers
    data = clips["broken"].read_bytes() + b"kept"
    with api.client(keys.alpha) as alpha, api.client(keys.beta) as beta:
        job = alpha.post("/v1/jobs", files=[("files", ("kept.mp4", data, "video/mp4"))]).json()
        assert cluster.wait_job(job["id"]) == {"failed": 1}
        video_id = job["videos"][0]["video_id"]
        path = f"/v1/videos/{video_id}"

        before = result_reads(alpha)
        first, second = alpha.get(path), alpha.get(path)
        assert first.status_code == second.status_code == 200, first.text
        assert first.json() == second.json()
        assert first.json()["video"] == "kept.mp4" and first.json()["status"] == "failed"
        after = result_reads(alpha)
        assert after["cache"] - before["cache"] == 1  # the second read was the kept JSON
        assert after["database"] - before["database"] == 1

        # Another tenant: exactly the answer for an id nobody has, cached or not.
        theirs, nobodys = beta.get(path), beta.get(f"/v1/videos/{'f' * 32}")
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json() == nobodys.json()

        # The same bytes under a name sorting first: the result now shows that name.
        again = alpha.post("/v1/jobs", files=[("files", ("a-kept.mp4", data, "video/mp4"))])
        assert again.status_code == 202, again.text
        assert again.json()["videos"][0]["video_id"] == video_id
        cluster.wait_job(again.json()["id"])
        # A client revalidating with the old ETag gets the new result and its new ETag.
        renamed = alpha.get(path, headers={"If-None-Match": first.headers["etag"]})
        assert renamed.status_code == 200 and renamed.json()["video"] == "a-kept.mp4"
        assert renamed.headers["etag"] != first.headers["etag"]
        assert alpha.get(path).json() == renamed.json()  # kept again, as it is now
        current = {"If-None-Match": renamed.headers["etag"]}
        assert alpha.get(path, headers=current).status_code == 304

        erased = cluster.cli("purge", "--video", video_id)
        assert erased.returncode == 0, erased.stderr
        gone = alpha.get(path, headers=current)
        assert gone.status_code == 404
        assert gone.json() == alpha.get(f"/v1/videos/{'f' * 32}").json()
