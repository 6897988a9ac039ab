"""A result's segments are paged past a few hundred: a 3-hour video has 720 of 15 s."""

from __future__ import annotations

import json

from workers.api.routers.videos import SEGMENTS_PAGE, page_segments


def result(segments: int) -> bytes:
    return json.dumps(
        {
            "video_id": "v",
            "traits": {"openness": 0.5},
            "segments": [
                {"index": i, "start_s": 15.0 * i, "end_s": 15.0 * (i + 1), "persons": []}
                for i in range(segments)
            ],
        }
    ).encode()


def test_a_result_of_a_page_or_fewer_segments_is_sent_as_stored() -> None:
    body = result(SEGMENTS_PAGE)
    assert page_segments(body, 0, SEGMENTS_PAGE) is body


def test_a_long_video_s_segments_come_a_page_at_a_time_with_their_total() -> None:
    body = result(720)
    first = json.loads(page_segments(body, 0, SEGMENTS_PAGE))
    assert [s["index"] for s in first["segments"]] == list(range(SEGMENTS_PAGE))
    assert (first["segments_total"], first["segments_offset"]) == (720, 0)
    last = json.loads(page_segments(body, 700, SEGMENTS_PAGE))
    assert [s["index"] for s in last["segments"]] == list(range(700, 720))
    assert last["traits"] == {"openness": 0.5}
    assert json.loads(page_segments(body, 800, 10))["segments"] == []
