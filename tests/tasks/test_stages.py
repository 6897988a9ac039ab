"""The distributed stages, called as plain functions (no broker), against SQLite and storage.

They must give exactly what `oceanstream analyze` gives for the same file, and stay
idempotent when a message is delivered twice or late. Ingest takes a video; every later
stage takes one of its segments.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from pathlib import Path

import numpy as np
import pytest

from core.bundles.bundle import build_default_bundle
from core.errors import StorageError
from core.pipeline import PipelineConfig
from core.storage.artifacts import LAYOUT
from core.storage.store import ArtifactStore
from core.video_analysis import VideoAnalyzer
from db import repository as repo
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from db.repository.stages import StageUpdate
from tasks import stages
from tasks.context import StageContext
from tasks.stages.features import FACES, FLOW
from tasks.stages.skeleton import VideoRef, run_stage
from tests.clips import (
    write_faceless,
    write_random_bytes,
    write_resolution_jump,
    write_talking_head,
    write_text,
)
from tests.support.stages import analyze_with_stages, prepare_segments, submit

T = 8


def make_context(tmp_path: Path, bundle, face_detector, **config: object) -> StageContext:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    session_factory = make_session_factory(make_engine(url))
    meta = bundle.metadata
    with session_factory.begin() as session:
        repo.ensure_model_version(
            session=session, version=meta.version, trained=meta.trained, metadata=meta.to_dict()
        )
    context = StageContext(
        session_factory=session_factory,
        store=ArtifactStore(f"file://{tmp_path / 'storage'}"),
        config=PipelineConfig(num_frames=T, **config),  # type: ignore[arg-type]
        load_bundle=lambda version: bundle,
        active_version=lambda session=None: meta.version,
    )
    context._detectors[meta.crop_size] = face_detector
    return context


@pytest.fixture
def ctx(tmp_path: Path, default_bundle, face_detector) -> StageContext:
    return make_context(tmp_path, default_bundle, face_detector)


def video_row(ctx: StageContext, video_id: str):
    with ctx.session_factory() as session:
        return repo.get_video(session=session, video_id=video_id)


def segment_row(ctx: StageContext, segment_id: str):
    with ctx.session_factory() as session:
        return repo.get_segment(session=session, segment_id=segment_id)


def stored_scores(ctx: StageContext, video_id: str, version: str) -> list[list[list[float]]]:
    """Each segment's persons' stored scores, in order."""
    with ctx.session_factory() as session:
        rows = repo.video_timeline(session=session, video_id=video_id, model_version=version)
    scores: dict[int, list[list[float]]] = {}
    for row in rows:
        people = scores.setdefault(row.segment, [])
        if row.traits is not None:
            people.append(list(row.traits.values()))
    return [scores[index] for index in sorted(scores)]


def test_stages_match_in_process_analysis(
    ctx: StageContext, default_bundle, tmp_path: Path
) -> None:
    clip = write_talking_head(tmp_path / "a.mp4", seconds=1.5, seed=4)
    video_id = submit(ctx, clip)
    [segment_id] = stages.run_ingest(ctx, video_id)
    assert stages.run_sample(ctx, segment_id) == ["faces", "flow"]
    # Only the second feature stage to finish enqueues inference.
    assert stages.run_flow(ctx, segment_id) == []
    assert stages.run_faces(ctx, segment_id) == ["inference"]
    assert stages.run_inference(ctx, segment_id) == "done"

    expected = VideoAnalyzer(default_bundle, ctx.config, detector=ctx.detector(112)).analyze(clip)
    [segment] = expected.segments
    [person] = segment.persons
    with ctx.session_factory() as session:
        prediction = repo.get_prediction(
            session=session, video_id=video_id, model_version=default_bundle.metadata.version
        )
        attention = repo.load_attention(session=session, prediction_id=prediction.id)
    stored = [getattr(prediction, trait) for trait in expected_traits()]
    np.testing.assert_allclose(stored, person.scores, atol=1e-6)
    np.testing.assert_allclose(attention, person.attention, atol=2e-3)  # float16 storage
    row = video_row(ctx, video_id)
    assert row.status == "done" and row.faces_found == person.faces_found
    assert {"probe"} <= set(row.timings)
    timings = segment_row(ctx, segment_id).timings
    assert {"sample", "faces", "flow", "inference"} <= set(timings)


def expected_traits() -> tuple[str, ...]:
    from core.traits import TRAITS

    return TRAITS


def test_a_first_impressions_clip_scores_as_the_whole_video_analysis_did(
    default_bundle, face_detector, tmp_path: Path
) -> None:
    """15 s, one person: one segment, one person, and exactly the scores, faces and frames of
    the in-process analysis of the whole video (`core.video_analysis.VideoAnalyzer`)."""
    ctx = make_context(tmp_path, default_bundle, face_detector)
    clip = write_talking_head(tmp_path / "fi.mp4", seconds=15, fps=8, seed=3)
    video_id = submit(ctx, clip)
    assert len(analyze_with_stages(ctx, video_id)) == 1
    before = VideoAnalyzer(default_bundle, ctx.config, detector=ctx.detector(112)).analyze(clip)
    [segment] = before.segments
    [person] = segment.persons
    with ctx.session_factory() as session:
        prediction = repo.get_prediction(
            session=session, video_id=video_id, model_version=default_bundle.metadata.version
        )
    stored = [getattr(prediction, trait) for trait in expected_traits()]
    np.testing.assert_allclose(stored, person.scores, atol=1e-6)
    row = video_row(ctx, video_id)
    assert (row.status, row.faces_found, row.frames) == ("done", segment.faces_found, T)


def test_segments_of_a_longer_video_match_the_in_process_analysis(
    default_bundle, face_detector, tmp_path: Path
) -> None:
    ctx = make_context(tmp_path, default_bundle, face_detector, segment_seconds=1.0)
    clip = write_talking_head(tmp_path / "long.mp4", seconds=3.4, fps=10, seed=12)
    video_id = submit(ctx, clip)
    ids = analyze_with_stages(ctx, video_id)
    # 3.4 s in windows of 1 s: the last absorbs the 0.4 s remainder. The clip (mp4v) has a
    # keyframe every 12 frames: the 1 s boundary moves onto the one at 1.2 s; 2.4 s lies
    # beyond a third of a window from 2 s, so that boundary stays.
    with ctx.session_factory() as session:
        plan = [(s.start_s, s.end_s) for s in repo.get_segments(session=session, video_id=video_id)]
    assert len(ids) == 3 and plan == [(0.0, 1.2), (1.2, 2.0), (2.0, 3.4)]
    expected = VideoAnalyzer(default_bundle, ctx.config, detector=ctx.detector(112)).analyze(clip)
    expected_scores = [[list(p.scores) for p in s.persons] for s in expected.segments]
    np.testing.assert_allclose(
        stored_scores(ctx, video_id, default_bundle.metadata.version), expected_scores, atol=1e-6
    )
    assert video_row(ctx, video_id).status == "done"


def test_duplicate_and_late_deliveries_change_nothing(ctx: StageContext, tmp_path: Path) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "b.mp4", seconds=1.5, seed=5))
    [segment_id] = stages.run_ingest(ctx, video_id)
    # A redelivered ingest finds the video extracting: it resends the sampling message of
    # every segment not sampled yet (their messages may have died with the worker).
    assert stages.run_ingest(ctx, video_id) == [segment_id]
    assert video_row(ctx, video_id).deliveries == {"ingest": 1}
    assert stages.run_sample(ctx, segment_id) == ["faces", "flow"]
    assert stages.run_sample(ctx, segment_id) == ["faces", "flow"]  # redelivered: resend
    assert stages.run_ingest(ctx, video_id) == []  # every segment is sampled
    assert stages.run_faces(ctx, segment_id) == []
    assert stages.run_faces(ctx, segment_id) == []  # duplicate: must not enqueue inference
    assert stages.run_flow(ctx, segment_id) == ["inference"]
    assert stages.run_flow(ctx, segment_id) == ["inference"]  # redelivered: resend inference
    assert segment_row(ctx, segment_id).deliveries == {"sample": 1, "faces": 1, "flow": 1}
    assert stages.run_inference(ctx, segment_id) == "done"
    assert stages.run_inference(ctx, segment_id) is None
    assert stages.run_ingest(ctx, video_id) == []  # done: nothing to resend
    with ctx.session_factory() as session:
        rows = repo.query_results(session=session, video=video_id)
        persons = repo.video_persons(
            session=session, video_id=video_id, model_version=rows[0].model_version
        )
    assert len(rows) == 1 and rows[0].status == "done"
    assert [p.person for p in persons] == [0]


def test_faceless_and_broken_videos_end_final_with_messages(
    ctx: StageContext, tmp_path: Path
) -> None:
    faceless = submit(ctx, write_faceless(tmp_path / "c.mp4", seconds=1.5))
    [segment_id] = prepare_segments(ctx, faceless)
    assert stages.run_flow(ctx, segment_id) == []  # no inference for a no_face segment
    assert segment_row(ctx, segment_id).status == "no_face"
    row = video_row(ctx, faceless)
    assert row.status == "no_face" and row.error is None

    broken = submit(ctx, write_text(tmp_path / "d.mp4"))
    assert stages.run_ingest(ctx, broken) == []
    row = video_row(ctx, broken)
    assert row.status == "failed" and "not a video" in row.error


def test_a_resolution_jump_past_the_limit_fails_its_segment_with_a_clear_error(
    ctx: StageContext, tmp_path: Path
) -> None:
    """The probe sees 320x240; the frame after the jump (4096x4096) is refused when decoded."""
    clip = write_resolution_jump(tmp_path / "jump.ts", large=(4096, 4096), large_frames=1)
    video_id = submit(ctx, clip)
    [segment_id] = stages.run_ingest(ctx, video_id)
    assert stages.run_sample(ctx, segment_id) == []
    row = segment_row(ctx, segment_id)
    assert row.status == "failed"
    assert row.error == (
        "video has a 4096x4096 frame, over the limit of 3840x2160 (its resolution changes "
        f"past what its header declares): {clip}"
    )
    assert video_row(ctx, video_id).status == "failed"


def test_missing_features_fail_that_segment_alone(ctx: StageContext, tmp_path: Path) -> None:
    ctx.config = dataclasses.replace(ctx.config, segment_seconds=1.0)
    video_id = submit(ctx, write_talking_head(tmp_path / "e.mp4", seconds=2.2, fps=10, seed=6))
    first, second = prepare_segments(ctx, video_id)
    ctx.store.delete_prefix(LAYOUT.segment_dynamic(video_id, 1))
    assert stages.run_inference(ctx, second) == "failed"
    assert "missing" in segment_row(ctx, second).error
    assert video_row(ctx, video_id).status == "extracting"  # a segment is still running
    assert stages.run_inference(ctx, first) == "done"
    row = video_row(ctx, video_id)
    assert row.status == "done"
    # The boundary sits on the keyframe at 1.2 s (mp4v: every 12 frames).
    assert row.error.startswith("segment 1 (1.2-2.2 s): ") and "missing" in row.error


def test_delivery_cap_fails_a_video_that_never_finishes(ctx: StageContext, tmp_path: Path) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "f.mp4", seconds=1.5, seed=7))
    with ctx.session_factory.begin() as session:
        for _ in range(ctx.max_deliveries):
            repo.count_delivery(session=session, video_id=video_id, stage="ingest")
    assert stages.run_ingest(ctx, video_id) == []
    row = video_row(ctx, video_id)
    assert row.status == "failed"
    assert row.error == (
        "ingest stage started 7 times without finishing (its worker died, timed out or hit "
        "an unexpected error each time); gave up"
    )


def test_duplicates_of_a_finished_feature_stage_are_not_starts(
    ctx: StageContext, tmp_path: Path
) -> None:
    """Faces done, flow's worker stopped: the faces messages that pile up meanwhile (resent,
    redelivered) do nothing, count nothing, and never fail the segment."""
    video_id = submit(ctx, write_talking_head(tmp_path / "dup.mp4", seconds=1.5, seed=8))
    [segment_id] = stages.run_ingest(ctx, video_id)
    stages.run_sample(ctx, segment_id)
    assert stages.run_faces(ctx, segment_id) == []
    for _ in range(2 * ctx.max_deliveries):
        assert stages.run_faces(ctx, segment_id) == []
    row = segment_row(ctx, segment_id)
    assert (row.status, row.deliveries["faces"], row.error) == ("extracting", 1, None)
    assert stages.run_flow(ctx, segment_id) == ["inference"]
    assert stages.run_inference(ctx, segment_id) == "done"


def test_a_start_that_meets_an_outage_is_taken_back(ctx: StageContext, tmp_path: Path) -> None:
    """A storage outage of minutes retries the task many times; none of it uses up the count."""
    video_id = submit(ctx, write_talking_head(tmp_path / "out.mp4", seconds=1.5, seed=9))
    [segment_id] = stages.run_ingest(ctx, video_id)
    stages.run_sample(ctx, segment_id)

    def storage_down(ctx: StageContext, ref: VideoRef) -> StageUpdate:
        raise StorageError("cannot reach the artifact store")

    flow_in_outage = dataclasses.replace(FLOW, work=storage_down)
    for _ in range(3 * ctx.max_deliveries):
        with pytest.raises(StorageError):
            run_stage(ctx, segment_id, flow_in_outage)
    row = segment_row(ctx, segment_id)
    assert (row.status, row.deliveries["flow"]) == ("extracting", 0)
    assert stages.run_flow(ctx, segment_id) == []  # the outage is over
    assert segment_row(ctx, segment_id).deliveries["flow"] == 1


def test_a_stage_that_keeps_failing_on_a_bug_gives_up_saying_so(
    ctx: StageContext, tmp_path: Path
) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "bug.mp4", seconds=1.5, seed=10))
    [segment_id] = stages.run_ingest(ctx, video_id)
    stages.run_sample(ctx, segment_id)

    def bug(ctx: StageContext, ref: VideoRef) -> StageUpdate:
        raise TypeError("unsupported operand")

    buggy_faces = dataclasses.replace(FACES, work=bug)
    for _ in range(ctx.max_deliveries):
        with pytest.raises(TypeError):
            run_stage(ctx, segment_id, buggy_faces)
    assert segment_row(ctx, segment_id).status == "extracting"
    assert run_stage(ctx, segment_id, buggy_faces) is False
    row = segment_row(ctx, segment_id)
    assert row.status == "failed"
    assert row.error.startswith("faces stage started 7 times without finishing")
    # Its only segment failed: the video is final, failed, and says which segment and why.
    video = video_row(ctx, video_id)
    assert video.status == "failed" and "faces stage started 7 times" in video.error


def test_messages_with_nothing_to_do_are_logged_once_with_the_reason(
    ctx: StageContext, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    video_id = submit(ctx, write_talking_head(tmp_path / "noop.mp4", seconds=1.5, seed=11))
    [segment_id] = stages.run_ingest(ctx, video_id)
    with caplog.at_level(logging.INFO, logger="tasks.stages.skeleton"):
        assert stages.run_faces(ctx, segment_id) == []  # not sampled yet
        assert stages.run_flow(ctx, "no-such-segment") == []
        with ctx.session_factory.begin() as session:
            repo.transition_video(session=session, video_id=video_id, to_status="no_face")
        assert stages.run_ingest(ctx, video_id) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "tasks.stages.skeleton"]
    assert lines == [
        f"faces stage: segment {segment_id} is in state pending; the message does nothing",
        "flow stage: no segment no-such-segment; the message does nothing",
        f"ingest stage: video {video_id} is already final (no_face); the message does nothing",
    ]


def test_errors_name_the_users_file_never_the_stored_copy(
    ctx: StageContext, default_bundle, tmp_path: Path
) -> None:
    empty = tmp_path / "holiday.mp4"
    empty.write_bytes(b"")
    garbage = write_random_bytes(tmp_path / "garbage.mp4", n=4096, seed=2)
    analyzer = VideoAnalyzer(default_bundle, ctx.config, detector=ctx.detector(112))
    for clip, words in ((empty, "empty"), (garbage, "not a video")):
        video_id = submit(ctx, clip)
        assert stages.run_ingest(ctx, video_id) == []
        error = video_row(ctx, video_id).error
        assert words in error and str(clip) in error, error
        assert "storage" not in error and "videos/" not in error, error
        assert "b'" not in error and 'b"' not in error and "\\x" not in error, error
        # `oceanstream analyze` says the same about the same file.
        assert analyzer.analyze(clip).error == error


def test_a_person_region_bundle_runs_flow_after_faces_per_person(
    face_detector, tmp_path: Path
) -> None:
    """Two people side by side, a bundle trained on person regions: flow waits for the
    persons faces stores, then gives each person their own dynamic tokens."""
    from tests.people_clips import write_side_by_side

    bundle = build_default_bundle(num_frames=T)
    bundle.metadata.flow_region = "person"
    ctx = make_context(tmp_path, bundle, face_detector)
    video_id = submit(ctx, write_side_by_side(tmp_path / "two.mp4", seconds=1.5))
    [segment_id] = stages.run_ingest(ctx, video_id)
    assert stages.run_sample(ctx, segment_id) == ["faces"]
    assert stages.run_flow(ctx, segment_id) == []  # early (a resend): waits, counts nothing
    assert segment_row(ctx, segment_id).deliveries.get("flow", 0) == 0
    assert stages.run_faces(ctx, segment_id) == ["flow"]
    assert stages.run_flow(ctx, segment_id) == ["inference"]
    dynamic = ctx.store.get_arrays(ctx.store.uri(LAYOUT.segment_dynamic(video_id, 0)))["tokens"]
    assert dynamic.shape == (2, T, bundle.metadata.dynamic_dim)
    assert not np.allclose(dynamic[0], dynamic[1])
    assert stages.run_inference(ctx, segment_id) == "done"
    [[left, right]] = stored_scores(ctx, video_id, bundle.metadata.version)
    assert not np.allclose(left, right)
    analyzed = VideoAnalyzer(bundle, ctx.config, detector=ctx.detector(112)).analyze(
        tmp_path / "two.mp4"
    )
    np.testing.assert_allclose(
        [left, right], [p.scores for p in analyzed.segments[0].persons], atol=1e-6
    )


@pytest.mark.parametrize("keep", [False, True])
def test_sampled_frames_are_dropped_once_both_features_are_stored(
    tmp_path: Path, default_bundle, face_detector, keep: bool
) -> None:
    ctx = make_context(tmp_path, default_bundle, face_detector, keep_frames=keep)
    video_id = submit(ctx, write_talking_head(tmp_path / "f.mp4", seconds=1.5, seed=6))
    [segment_id] = stages.run_ingest(ctx, video_id)
    stages.run_sample(ctx, segment_id)
    frames = ctx.store.uri(LAYOUT.segment_frames(video_id, 0))
    assert ctx.store.exists(frames)
    assert stages.run_faces(ctx, segment_id) == []
    assert ctx.store.exists(frames)  # flow still reads them
    assert stages.run_flow(ctx, segment_id) == ["inference"]
    assert ctx.store.exists(frames) is keep
    assert stages.run_flow(ctx, segment_id) == ["inference"]  # redelivered: still fine
    assert stages.run_inference(ctx, segment_id) == "done"
    for features in (LAYOUT.segment_static(video_id, 0), LAYOUT.segment_dynamic(video_id, 0)):
        assert ctx.store.exists(ctx.store.uri(features))


def test_the_stages_store_shots_and_never_link_across_a_cut(
    default_bundle, face_detector, tmp_path: Path
) -> None:
    """The same-framing edit (a cut inside each 4 s segment): the faces stage stores each
    segment's cut as a video time, two persons per segment, and continuity links persons
    across segment boundaries only, as the in-process analysis does."""
    from db.models import Segment, SegmentPerson
    from tests.people_clips import write_cut_edit

    ctx = make_context(tmp_path, default_bundle, face_detector, segment_seconds=4.0)
    video_id = submit(ctx, write_cut_edit(tmp_path / "cuts.mp4"))
    ids = analyze_with_stages(ctx, video_id)
    assert len(ids) == 3
    with ctx.session_factory() as session:
        segments = repo.get_segments(session=session, video_id=video_id)
        shots = [session.get(Segment, s.id).shots for s in segments]  # type: ignore[union-attr]
        persons = [
            [
                (p.person, p.opens_segment, p.closes_segment)
                for p in session.query(SegmentPerson)
                .filter_by(segment_id=s.id)
                .order_by(SegmentPerson.index)
            ]
            for s in segments
        ]
    assert [len(s) for s in shots] == [1, 1, 1]
    assert [s[0] for s in shots] == pytest.approx([1.25, 6.0, 10.75], abs=0.3)
    # Each segment: one person before its cut (opens it), one after (closes it).
    assert [sorted(flags for _, *flags in seg) for seg in persons] == [
        [[False, True], [True, False]]
    ] * 3
    numbers = [{(opens, p) for p, opens, _ in seg} for seg in persons]
    # The person closing a segment is the one opening the next; no other link.
    for before, after in itertools.pairwise(numbers):
        closing = {p for opens, p in before if not opens}
        opening = {p for opens, p in after if opens}
        assert closing == opening
    assert len({p for seg in numbers for _, p in seg}) == 4
