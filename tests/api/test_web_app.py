"""The web app in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Signs in with a key, uploads a clip, watches the job finish and opens the video page with
its bars and heatmaps. Screenshots of each page are kept in the test's folder, or in
OCEANSTREAM_SCREENSHOTS when set (docs/web-*.png were made so).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.api.conftest import Keys
from tests.api.harness import ApiServer
from tests.db.postgres import service_unavailable
from tests.integration.harness import Cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("OCEANSTREAM_TEST_CHROMIUM", "/usr/bin/chromium"))
PHONE = {"width": 390, "height": 844}


def test_forms_refuse_cross_site_posts(api: ApiServer, keys: Keys) -> None:
    with httpx.Client(base_url=api.url) as browser:
        signed_in = browser.post("/app/login", data={"key": keys.alpha})
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        files = [("files", ("a.mp4", b"not a video", "video/mp4"))]
        assert browser.post("/app/jobs", files=files).status_code == 403  # no CSRF token
        forged = browser.post(
            "/app/jobs",
            files=files,
            data={"csrf": "0" * 64},
            headers={"Origin": "https://elsewhere.example"},
        )
        assert forged.status_code == 403
        assert browser.post("/app/login", data={"key": "os_wrong"}).status_code == 401


def test_sign_in_upload_watch_and_read_a_video_in_chromium(
    api: ApiServer,
    pipeline_workers: Cluster,
    keys: Keys,
    clips: dict[str, Path],
    tmp_path: Path,
) -> None:
    if not CHROMIUM.exists():
        service_unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("OCEANSTREAM_SCREENSHOTS", tmp_path / "screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(f"{api.url}/app/jobs")
            assert page.url.endswith("/app/login")
            page.screenshot(path=shots / "web-sign-in.png", full_page=True)
            page.fill("#key", keys.alpha)
            page.click("button[type=submit]")
            page.wait_for_url("**/app/jobs")
            page.screenshot(path=shots / "web-jobs.png", full_page=True)

            page.set_input_files("#files", str(clips["good"]))
            page.click("#upload button[type=submit]")
            page.wait_for_url("**/app/jobs/*")
            # app.js follows the events and reloads the page once the job is final.
            page.wait_for_selector("td.status-done", timeout=240_000)
            page.screenshot(path=shots / "web-job.png", full_page=True)

            page.click("tr[data-video] a")
            page.wait_for_url("**/app/videos/*")
            assert page.locator("meter").count() >= 5
            assert "Untrained model" in page.locator(".warning").inner_text()
            for image in page.locator("img.plot").all():
                image.scroll_into_view_if_needed()
                loaded = image.evaluate("img => img.complete && img.naturalWidth > 0")
                assert loaded, image.get_attribute("src")
            assert page.locator("img[src$='attention.png']").count() == 1
            page.screenshot(path=shots / "web-video.png", full_page=True)
            page.set_viewport_size(PHONE)
            page.screenshot(path=shots / "web-video-phone.png", full_page=True)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= PHONE["width"] + 1, "the video page scrolls sideways on a phone"
        finally:
            browser.close()
    assert not [p for p in problems if "Content Security Policy" in p], problems
    assert sorted(p.name for p in shots.glob("web-*.png")) == [
        "web-job.png",
        "web-jobs.png",
        "web-sign-in.png",
        "web-video-phone.png",
        "web-video.png",
    ]
