"""`/v1/tenant`: the caller's tenant, its webhook secret for admin keys, rotation; callback
URLs checked when a job is made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.api import ApiServer, CallbackReceiver, Keys, create_key
from tests.support.cluster import Cluster
from tests.support.services import wait_for
from workers.services.callbacks import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature

pytestmark = pytest.mark.integration


def stored_secret(cluster: Cluster, tenant: str) -> str:
    rows = cluster.query("SELECT webhook_secret FROM tenants WHERE name = :name", name=tenant)
    return str(rows[0][0])


def test_an_admin_key_reads_and_rotates_the_webhook_secret(
    api: ApiServer, api_cluster: Cluster
) -> None:
    admin, plain = create_key(api_cluster, "delta", admin=True), create_key(api_cluster, "delta")
    before = stored_secret(api_cluster, "delta")
    with api.client(admin) as client:
        shown = client.get("/v1/tenant")
        assert shown.status_code == 200, shown.text
        assert shown.headers["cache-control"] == "no-store"
        tenant = shown.json()
        assert (tenant["name"], tenant["admin"], tenant["webhook_secret"]) == (
            "delta",
            True,
            before,
        )
        rotated = client.post("/v1/tenant/webhook-secret")
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        new = rotated.json()["webhook_secret"]
        assert new != before and len(new) == 64
        assert rotated.json()["id"] == tenant["id"]
        assert stored_secret(api_cluster, "delta") == new
        assert client.get("/v1/tenant").json()["webhook_secret"] == new
    with api.client(plain) as client:
        seen = client.get("/v1/tenant")
        assert seen.status_code == 200
        assert seen.json() == {"id": tenant["id"], "name": "delta", "admin": False}
        refused = client.post("/v1/tenant/webhook-secret")
        assert refused.status_code == 403
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["status"] == 403
    assert stored_secret(api_cluster, "delta") == new


def test_another_tenants_admin_key_rotates_only_its_own_secret(
    api: ApiServer, api_cluster: Cluster, keys: Keys
) -> None:
    other = create_key(api_cluster, "epsilon", admin=True)
    alpha_before = stored_secret(api_cluster, "alpha")
    with api.client(other) as client:
        rotated = client.post("/v1/tenant/webhook-secret")
        assert rotated.status_code == 200
        assert rotated.json()["name"] == "epsilon"
    assert stored_secret(api_cluster, "alpha") == alpha_before
    assert stored_secret(api_cluster, "epsilon") == rotated.json()["webhook_secret"]
    with api.client(keys.alpha) as alpha:  # alpha's plain key: no secret, no rotation
        assert "webhook_secret" not in alpha.get("/v1/tenant").json()
        assert alpha.post("/v1/tenant/webhook-secret").status_code == 403
    with api.client() as nobody:
        assert nobody.get("/v1/tenant").status_code == 401
        assert nobody.post("/v1/tenant/webhook-secret").status_code == 401


def test_a_callback_url_that_cannot_be_used_gets_422_and_no_job(
    api: ApiServer, api_cluster: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    files = [("files", ("broken.mp4", clips["broken"].read_bytes(), "video/mp4"))]
    jobs_before = api_cluster.query("SELECT count(*) FROM jobs")
    with api.client(keys.alpha) as alpha:
        for url in (
            "ftp://example.com/hook",
            "http:///hook",
            "http://[::1/hook",
            "http://example.com:99999/hook",
            "https://example.com/" + "x" * 2048,
        ):
            answer = alpha.post("/v1/jobs", files=files, data={"callback_url": url})
            assert answer.status_code == 422, (url, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["detail"]
        as_query = alpha.post("/v1/jobs", files=files, params={"callback_url": "ftp://x/"})
        assert as_query.status_code == 422
        assert "http or https" in as_query.json()["detail"]
    assert api_cluster.query("SELECT count(*) FROM jobs") == jobs_before


@pytest.mark.slow
def test_a_callback_after_rotation_is_signed_with_the_new_secret(
    api: ApiServer, pipeline_workers: Cluster, clips: dict[str, Path]
) -> None:
    admin = create_key(pipeline_workers, "zeta", admin=True)
    files = [("files", ("broken.mp4", clips["broken"].read_bytes(), "video/mp4"))]
    with CallbackReceiver(statuses=[200]) as receiver, api.client(admin) as client:
        old = client.get("/v1/tenant").json()["webhook_secret"]
        new = client.post("/v1/tenant/webhook-secret").json()["webhook_secret"]
        made = client.post("/v1/jobs", files=files, data={"callback_url": receiver.url})
        assert made.status_code == 202, made.text
        wait_for(lambda: len(receiver.received) >= 1, 120, "the callback")
        delivery = receiver.received[0]
    headers = {k.lower(): v for k, v in delivery.headers.items()}
    stamp, signed = headers[TIMESTAMP_HEADER.lower()], headers[SIGNATURE_HEADER.lower()]
    assert json.loads(delivery.body)["job"]["id"] == made.json()["id"]
    assert verify_signature(new, stamp, signed, delivery.body)
    assert not verify_signature(old, stamp, signed, delivery.body)


def test_without_private_addresses_allowed_such_callback_urls_get_422(
    api_cluster: Cluster, keys: Keys, clips: dict[str, Path]
) -> None:
    strict = ApiServer(api_cluster, extra_env={"OCEANSTREAM_CALLBACK_ALLOW_PRIVATE": "0"})
    files = [("files", ("broken.mp4", clips["broken"].read_bytes(), "video/mp4"))]
    jobs_before = api_cluster.query("SELECT count(*) FROM jobs")
    strict.start()
    try:
        with strict.client(keys.alpha) as alpha:
            for url, said in (
                ("http://127.0.0.1:9/hook", "non-public address (127.0.0.1)"),
                ("http://[::1]/hook", "non-public address (::1)"),
                ("http://169.254.169.254/latest/meta-data", "non-public address"),
                ("http://nonexistent.invalid/hook", "does not resolve"),
            ):
                answer = alpha.post("/v1/jobs", files=files, data={"callback_url": url})
                assert answer.status_code == 422, (url, answer.text)
                assert said in answer.json()["detail"], answer.json()
    finally:
        strict.stop()
    assert api_cluster.query("SELECT count(*) FROM jobs") == jobs_before
