"""`VideoAnalyzer.analyze_many`: the next video's first segment decodes while the current
video's last one computes, and that changes nothing in the results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.bundles.bundle import build_default_bundle
from core.pipeline import PipelineConfig
from core.video_analysis import VideoAnalyzer
from tests.clips import write_talking_head, write_text

T = 8


@pytest.fixture(scope="module")
def analyzer(face_detector) -> VideoAnalyzer:
    bundle = build_default_bundle(num_frames=T)
    config = PipelineConfig(num_frames=T, segment_seconds=1.0)
    return VideoAnalyzer(bundle, config, detector=face_detector)


def scores(result) -> list[list[list[float]]]:
    return [[list(p.scores) for p in s.persons] for s in result.segments]


def test_a_batch_gives_what_each_video_gives_alone(analyzer: VideoAnalyzer, tmp_path: Path) -> None:
    first = write_talking_head(tmp_path / "a.mp4", seconds=2.4, fps=10, seed=1)
    broken = write_text(tmp_path / "b.mp4")
    last = write_talking_head(tmp_path / "c.mp4", seconds=1.2, fps=10, seed=2)
    seen: list[tuple[str, int]] = []
    batch = list(
        analyzer.analyze_many(
            [first, broken, last], on_segment=lambda p, s: seen.append((p, s.segment.index))
        )
    )
    assert [r.path for r in batch] == [str(first), str(broken), str(last)]
    assert [r.status for r in batch] == ["done", "failed", "done"]
    assert [len(r.segments) for r in batch] == [2, 0, 1]
    assert "not a video" in (batch[1].error or "")
    assert seen == [(str(first), 0), (str(first), 1), (str(last), 0)]
    for result, path in ((batch[0], first), (batch[2], last)):
        alone = analyzer.analyze(path)
        assert result.info == alone.info and "probe" in result.timings
        np.testing.assert_allclose(scores(result), scores(alone), atol=1e-6)
