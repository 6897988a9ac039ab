"""Keys, tenants, limits and the shape of answers, against a real API process (no workers)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest

from tests.support.api import MAX_FILE_BYTES, ApiServer, Keys, stored_files
from tests.support.cluster import Cluster
from tests.support.services import wait_for

pytestmark = pytest.mark.integration


def upload(client: httpx.Client, *paths: Path, **kwargs: object) -> httpx.Response:
    files = [("files", (path.name, path.read_bytes(), "video/mp4")) for path in paths]
    return client.post("/v1/jobs", files=files, **kwargs)  # type: ignore[arg-type]


def test_no_key_a_wrong_key_and_a_revoked_key_get_401(api: ApiServer, keys: Keys) -> None:
    for headers in (
        {},
        {"Authorization": f"Basic {keys.alpha}"},
        {"Authorization": "Bearer os_not-a-key"},
        {"Authorization": f"Bearer {keys.revoked}"},
    ):
        answer = httpx.get(f"{api.url}/v1/jobs", headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"] == "Bearer"
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["status"] == 401
    with api.client(keys.alpha) as alpha:
        assert alpha.get("/v1/jobs").status_code == 200


def test_another_tenants_ids_answer_exactly_like_unknown_ones(
    api: ApiServer, keys: Keys, clips: dict[str, Path], api_cluster: Cluster
) -> None:
    with api.client(keys.alpha) as alpha, api.client(keys.beta) as beta:
        made = upload(alpha, clips["broken"])
        assert made.status_code == 202, made.text
        job = made.json()
        video_id = job["videos"][0]["video_id"]
        unknown_job, unknown_video = "0" * 32, "f" * 32
        for path, unknown in (
            (f"/v1/jobs/{job['id']}", f"/v1/jobs/{unknown_job}"),
            (f"/v1/jobs/{job['id']}/results", f"/v1/jobs/{unknown_job}/results"),
            (f"/v1/jobs/{job['id']}/events", f"/v1/jobs/{unknown_job}/events"),
            (f"/v1/videos/{video_id}", f"/v1/videos/{unknown_video}"),
            (f"/v1/videos/{video_id}/attention", f"/v1/videos/{unknown_video}/attention"),
            (f"/v1/videos/{video_id}/attention.png", f"/v1/videos/{unknown_video}/attention.png"),
        ):
            theirs, nobodys = beta.get(path), beta.get(unknown)
            assert theirs.status_code == nobodys.status_code == 404, path
            assert theirs.json() == nobodys.json()
        assert beta.delete(f"/v1/videos/{video_id}").status_code == 404
        assert beta.delete(f"/v1/jobs/{job['id']}").status_code == 404
        # Listing and paging: beta never sees alpha's job, whatever the cursor.
        mine = upload(beta, clips["broken"]).json()
        listed = beta.get("/v1/jobs", params={"limit": 100}).json()["items"]
        assert [j["id"] for j in listed] == [mine["id"]]
        alpha_page = alpha.get("/v1/jobs", params={"limit": 1}).json()
        assert alpha_page["next_cursor"] is not None or len(alpha_page["items"]) == 1
        cursor = alpha_page["next_cursor"]
        if cursor is not None:
            paged = beta.get("/v1/jobs", params={"cursor": cursor}).json()["items"]
            assert job["id"] not in [j["id"] for j in paged]
        # The same bytes are two videos, one per tenant; erasing beta's keeps alpha's.
        beta_video = mine["videos"][0]["video_id"]
        assert beta_video != video_id
        assert beta.delete(f"/v1/videos/{beta_video}").status_code == 204
        assert alpha.get(f"/v1/videos/{video_id}").status_code == 200
        assert alpha.get(f"/v1/jobs/{job['id']}").status_code == 200
        alpha_uploads = [f for f in stored_files(api_cluster) if f.startswith("tenants/")]
        assert any(f.endswith(".mp4") for f in alpha_uploads)


def test_jobs_are_listed_newest_first_a_page_at_a_time(
    api: ApiServer, api_cluster: Cluster, clips: dict[str, Path]
) -> None:
    from tests.support.api import create_key

    with api.client(create_key(api_cluster, "pager")) as client:
        made = [upload(client, clips["broken"]).json()["id"] for _ in range(3)]
        first = client.get("/v1/jobs", params={"limit": 2}).json()
        second = client.get("/v1/jobs", params={"limit": 2, "cursor": first["next_cursor"]})
        assert second.status_code == 200
        ids = [j["id"] for j in first["items"]] + [j["id"] for j in second.json()["items"]]
        assert ids == made[::-1]
        assert second.json()["next_cursor"] is None
        assert client.get("/v1/jobs", params={"cursor": "not-ours"}).status_code == 400


def test_a_repeated_idempotency_key_makes_one_job(
    api: ApiServer, keys: Keys, clips: dict[str, Path], api_cluster: Cluster
) -> None:
    headers = {"Idempotency-Key": "order-17"}
    with api.client(keys.alpha) as alpha:
        first = upload(alpha, clips["faceless"], headers=headers)
        again = upload(alpha, clips["faceless"], headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert (first.headers["idempotent-replayed"], again.headers["idempotent-replayed"]) == (
        "false",
        "true",
    )
    with api.client(keys.alpha) as alpha:  # the same key, other files: refused, not replayed
        changed = upload(alpha, clips["broken"], headers=headers)
    assert changed.status_code == 422, changed.text
    assert changed.headers["content-type"] == "application/problem+json"
    assert "different request" in changed.json()["detail"]
    rows = api_cluster.query("SELECT count(*) FROM jobs WHERE idempotency_key = 'order-17'")
    assert rows == [(1,)]
    with api.client(keys.beta) as beta:  # keys are per tenant
        other = upload(beta, clips["faceless"], headers=headers)
    assert other.json()["id"] != first.json()["id"]


def test_an_upload_past_a_limit_gets_413_and_leaves_nothing(
    api: ApiServer, keys: Keys, api_cluster: Cluster, tmp_path: Path
) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (MAX_FILE_BYTES + 1))
    part = tmp_path / "part.mp4"
    part.write_bytes(b"\1" * (MAX_FILE_BYTES // 2 + 10))
    before = stored_files(api_cluster)
    jobs_before = api_cluster.query("SELECT count(*) FROM jobs")
    with api.client(keys.alpha) as alpha:
        one_too_big = upload(alpha, big)
        body_too_big = upload(alpha, part, part.with_name("part.mp4"), part)
        assert alpha.post("/v1/jobs", files=[("other", ("a.mp4", b"x"))]).status_code == 400
    for answer in (one_too_big, body_too_big):
        assert answer.status_code == 413, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
    assert stored_files(api_cluster) == before
    assert api_cluster.query("SELECT count(*) FROM jobs") == jobs_before
    spool = api_cluster.home / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


def test_uploaded_names_are_never_paths(
    api: ApiServer, keys: Keys, clips: dict[str, Path], api_cluster: Cluster
) -> None:
    from workers.api.uploads import display_name, safe_suffix

    assert display_name("..\\..\\a\x07b\x00.MP4", 0) == "ab.MP4"
    assert display_name("../", 3) == "upload-3"
    long = display_name("a" * 300 + ".MP4", 0)  # cut to 255, the extension kept
    assert len(long) == 255 and long.endswith("a.MP4")
    assert (safe_suffix("x.MP4"), safe_suffix("x.mp4;rm -rf"), safe_suffix(".bashrc")) == (
        ".mp4",
        "",
        "",
    )
    files = [("files", ("../../../escape.mp4", clips["broken"].read_bytes(), "video/mp4"))]
    with api.client(keys.alpha) as alpha:
        made = alpha.post("/v1/jobs", files=files)
    assert made.status_code == 202
    assert made.json()["videos"][0]["name"] == "escape.mp4"
    assert not (api_cluster.home / "escape.mp4").exists()
    assert all(".." not in name and "escape" not in name for name in stored_files(api_cluster))


def test_a_dropped_upload_is_one_info_line(
    api: ApiServer, keys: Keys, api_cluster: Cluster
) -> None:
    boundary = "dropped"
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="cut.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode() + b"\0" * 50_000
    jobs_before = api_cluster.query("SELECT count(*) FROM jobs")
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as connection:
        connection.sendall(
            (
                "POST /v1/jobs HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{api.port}\r\n"
                f"Authorization: Bearer {keys.alpha}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {len(head) + 1_000_000}\r\n\r\n"
            ).encode()
            + head
        )
    wait_for(lambda: "client went away" in api.log_path.read_text(), 20, "the log line")
    log = api.log_path.read_text()
    assert "Traceback" not in log and "ClientDisconnect" not in log, log[-3000:]
    [line] = [line for line in log.splitlines() if "client went away" in line]
    assert "INFO" in line and "POST /v1/jobs" in line
    assert api_cluster.query("SELECT count(*) FROM jobs") == jobs_before
    spool = api_cluster.home / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []


def test_answers_carry_security_headers_and_problem_details(api: ApiServer, keys: Keys) -> None:
    with api.client(keys.alpha) as alpha:
        answer = alpha.get("/v1/jobs/nope")
        assert answer.status_code == 404
        problem = answer.json()
        assert set(problem) == {"type", "title", "status", "detail"}
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers.get_list("x-frame-options") == ["DENY"]
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert "unsafe-inline" in alpha.get("/docs").headers["content-security-policy"]
        assert (
            "access-control-allow-origin"
            not in alpha.get("/v1/jobs", headers={"Origin": "https://elsewhere.example"}).headers
        )
        spec = alpha.get("/openapi.json").json()
        assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/videos/{video_id}/attention"} <= set(
            spec["paths"]
        )
        read = spec["paths"]["/v1/videos/{video_id}"]["get"]
        assert [parameter["name"] for parameter in read["parameters"]] == ["video_id"]
        assert alpha.get("/docs").status_code == 200
        assert alpha.get("/readyz").json()["status"] == "ready"
        assert "oceanstream_api_requests_total" in alpha.get("/metrics").text
    # No line per request unless `serve --access-log` asks for one.
    assert "/v1/jobs/nope" not in api.log_path.read_text()


def test_the_rate_limit_answers_429_with_retry_after(api_cluster: Cluster) -> None:
    from tests.support.api import create_key

    limited = ApiServer(
        api_cluster,
        extra_env={"OCEANSTREAM_API_RATE_LIMIT": "3", "OCEANSTREAM_API_RATE_WINDOW_S": "60"},
    )
    first, second = create_key(api_cluster, "eager"), create_key(api_cluster, "patient")
    limited.start()
    try:
        with limited.client(first) as eager:
            answers = [eager.get("/v1/jobs") for _ in range(5)]
        # Counted per minute: unless a minute turned over mid-test, exactly 3 pass.
        codes = [answer.status_code for answer in answers]
        assert codes == [200, 200, 200, 429, 429] or codes.count(429) == 1, codes
        refused = next(answer for answer in answers if answer.status_code == 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert refused.headers["content-type"] == "application/problem+json"
        with limited.client(second) as patient:  # each key has its own count
            assert patient.get("/v1/jobs").status_code == 200
    finally:
        limited.stop()
