"""A live video's name and identity: no credentials stored, the same name finds the same video."""

from __future__ import annotations

from workers.services.live_records import default_name, live_content_key


def test_the_default_name_is_the_source_without_its_credentials() -> None:
    assert default_name("rtsp://user:secret@10.0.0.7:554/stream1") == "rtsp://10.0.0.7:554/stream1"
    assert default_name("srt://host:9000?mode=caller") == "srt://host:9000?mode=caller"
    assert default_name("/dev/video0") == "/dev/video0"


def test_the_same_name_is_the_same_video_within_a_tenant() -> None:
    key = live_content_key("lobby", "default")
    assert key == live_content_key("lobby", "default") and len(key) == 64
    assert key != live_content_key("lobby2", "default")
    assert key != live_content_key("lobby", "other")
