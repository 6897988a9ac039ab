"""A watch whose results fall behind the stream says so, once, in its log and its metrics."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from workers.services.watch import Watcher


def _rows(*statuses: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(id=f"s{i}", status=s) for i, s in enumerate(statuses)]


def test_the_watch_says_once_when_results_wait_past_two_windows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watcher = Watcher(SimpleNamespace(), segment_seconds=2.0, reconnect_s=1.0)  # type: ignore[arg-type]
    now = time.time()
    watcher._closed_at = {"s0": now - 30, "s1": now - 5, "s2": now - 1}
    with caplog.at_level(logging.INFO, logger="oceanstream.watch"):
        watcher._check_backlog(_rows("done", "extracting", "inference"))  # 5 s: behind
        watcher._check_backlog(_rows("done", "extracting", "inference"))  # said already
        assert watcher.metrics.backlog._value.get() == 2
        assert watcher.metrics.behind._value.get() == pytest.approx(5, abs=1)
        watcher._check_backlog(_rows("done", "done", "done"))
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "behind real time" in m]) == 1
    assert "2 segments wait for results, the oldest for 5" in messages[0]
    assert messages[-1] == "the watch caught up with real time"
    assert watcher.metrics.backlog._value.get() == 0


def test_a_watch_within_two_windows_is_not_behind(caplog: pytest.LogCaptureFixture) -> None:
    watcher = Watcher(SimpleNamespace(), segment_seconds=5.0, reconnect_s=1.0)  # type: ignore[arg-type]
    watcher._closed_at = {"s0": time.time() - 6}
    with caplog.at_level(logging.INFO, logger="oceanstream.watch"):
        watcher._check_backlog(_rows("faces"))
    assert not caplog.records
