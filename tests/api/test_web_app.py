"""The web app in a real browser: Playwright driving Debian's Chromium (/usr/bin/chromium).

Signs in with a key, meets the app's own error pages (unknown video, too large an upload,
too many files), uploads a clip under a very long name with a faceless one, watches the job
finish, reads both results, opens the video page with its bars and heatmaps, checks the job
and video pages at phone width (no sideways scrolling, the status shown), then erases the
video and finds the error page and the emptied job. Screenshots of each page are kept in the
test's folder, or in OCEANSTREAM_SCREENSHOTS when set (docs/web-*.png were made so).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.api import MAX_FILE_BYTES, MAX_FILES, ApiServer, Keys
from tests.support.cluster import Cluster
from tests.support.services import service_unavailable

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path(os.environ.get("OCEANSTREAM_TEST_CHROMIUM", "/usr/bin/chromium"))
PHONE = {"width": 390, "height": 844}
#: A file name longer than any screen is wide, without a space to break it at.
LONG_NAME = "WolfgangLanger_Pexels_" + "interview_take_" * 14 + "final.mp4"


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
        # The app's own page, not the API's problem JSON.
        assert forged.headers["content-type"].startswith("text/html")
        assert "Cross-site form posts are refused." in forged.text
        assert 'href="/app/jobs"' in forged.text
        assert browser.post("/app/login", data={"key": "os_wrong"}).status_code == 401
        icon = browser.get("/favicon.ico")
        assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"


def scroll_width(page: Page) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


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
    long_named = tmp_path / LONG_NAME
    shutil.copyfile(clips["good"], long_named)
    too_large = tmp_path / "too-large.mp4"
    too_large.write_bytes(b"\0" * (MAX_FILE_BYTES + 1000))
    small = [tmp_path / f"small-{n}.mp4" for n in range(MAX_FILES + 1)]
    for path in small:
        path.write_bytes(b"not a video")
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

            # Errors are the app's own pages, with a way back.
            answer = page.goto(f"{api.url}/app/videos/{'0' * 32}")
            assert answer is not None and answer.status == 404
            assert_error_page(page, "Not found", "erased")
            page.screenshot(path=shots / "web-error.png", full_page=True)
            page.click("a.button")
            page.wait_for_url("**/app/jobs")
            for files, title, words in (
                ([too_large], "Upload too large", "allowed per file"),
                (small, "Upload too large", f"At most {MAX_FILES} files"),
            ):
                page.set_input_files("#files", [str(path) for path in files])
                page.click("#upload button[type=submit]")
                page.wait_for_load_state()
                assert_error_page(page, title, words)
                page.go_back()
                page.wait_for_url("**/app/jobs")

            page.set_input_files("#files", [str(long_named), str(clips["faceless"])])
            page.click("#upload button[type=submit]")
            page.wait_for_url("**/app/jobs/*")
            job_url = page.url
            # app.js follows the events and reloads the page once the job is final.
            page.wait_for_selector("#job[data-final=true]", timeout=240_000)
            assert page.locator("td.status-done").count() == 1
            faceless = page.locator("tr", has_text="faceless.mp4")
            assert "No face found" in faceless.locator("td.result").inner_text()
            scored = page.locator("tr", has_text="WolfgangLanger").locator("td.result")
            assert "O 0." in scored.inner_text()
            page.screenshot(path=shots / "web-job.png", full_page=True)
            assert scroll_width(page) <= 1100, "a long name widens the job page"
            page.set_viewport_size(PHONE)
            assert page.locator("td.status-done").is_visible(), "the status column is hidden"
            assert scroll_width(page) <= PHONE["width"], "the job page scrolls sideways"
            page.screenshot(path=shots / "web-job-phone.png", full_page=True)
            page.goto(f"{api.url}/app/jobs")
            assert "WolfgangLanger" in page.locator("table.jobs").inner_text()
            assert scroll_width(page) <= PHONE["width"], "the jobs page scrolls sideways"
            page.set_viewport_size({"width": 1100, "height": 900})
            page.screenshot(path=shots / "web-jobs.png", full_page=True)

            page.goto(job_url)
            page.click("tr[data-video] a >> nth=0")
            page.wait_for_url("**/app/videos/*")
            video_url = page.url
            assert page.locator("meter").count() >= 5
            assert "Untrained model" in page.locator(".warning").inner_text()
            assert "Seen " in page.locator(".person").first.inner_text()
            for image in page.locator("img.plot").all():
                image.scroll_into_view_if_needed()
                loaded = image.evaluate("img => img.complete && img.naturalWidth > 0")
                assert loaded, image.get_attribute("src")
            assert page.locator("img[src*='attention.png']").count() == 1
            page.screenshot(path=shots / "web-video.png", full_page=True)
            page.click("p.back a")
            assert page.url == job_url
            page.goto(video_url)
            page.set_viewport_size(PHONE)
            page.screenshot(path=shots / "web-video-phone.png", full_page=True)
            assert scroll_width(page) <= PHONE["width"], "the video page scrolls sideways"

            # Erased: the video's page is the error page, and its job says what happened.
            video_id = video_url.split("/app/videos/")[1].split("?")[0]
            with api.client(keys.alpha) as client:
                assert client.delete(f"/v1/videos/{video_id}").status_code == 204
            answer = page.goto(video_url)
            assert answer is not None and answer.status == 404
            assert_error_page(page, "Not found", "erased")
            page.goto(job_url)
            assert page.locator("tr[data-video]").count() == 1  # the faceless one is left
            other = page.locator("tr[data-video]").get_attribute("data-video")
            with api.client(keys.alpha) as client:
                assert client.delete(f"/v1/videos/{other}").status_code == 204
            page.reload()
            assert "no videos left" in page.locator("#job").inner_text()
            page.goto(f"{api.url}/app/jobs")
            job_row = page.locator("tr", has=page.locator(f"a[href='{job_url[len(api.url) :]}']"))
            assert "none left (erased)" in job_row.inner_text()
        finally:
            browser.close()
    assert not [p for p in problems if "Content Security Policy" in p], problems
    assert sorted(p.name for p in shots.glob("web-*.png")) == [
        "web-error.png",
        "web-job-phone.png",
        "web-job.png",
        "web-jobs.png",
        "web-sign-in.png",
        "web-video-phone.png",
        "web-video.png",
    ]


def assert_error_page(page: Page, title: str, words: str) -> None:
    text = page.locator("main").inner_text()
    assert page.locator("h1").inner_text() == title, text
    assert words in text, text
    assert "{" not in text, "raw JSON in the page"
    assert page.locator("a.button").count() == 1  # the way back
