"""Extracting a labelled set with the serving stages: real clips, real MTCNN, real storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.pipeline import PipelineConfig
from core.storage.store import ArtifactStore
from core.training.data import ClipBatches, ClipRef, fill_missing_crops
from core.training.datasets import load_labelled_set
from core.training.extraction import (
    DatasetLayout,
    ExtractionConfig,
    clip_config,
    extract_clip_arrays,
    failure_key,
)
from core.training.extraction_run import (
    EXTRACTED,
    FAILED,
    NO_FACE,
    SKIPPED,
    extract_dataset,
    prepare_dataset,
    read_failure,
)
from core.training.labels import DatasetError
from core.video.flow import compute_flow
from core.video.segment_sampling import sample_video
from db.engine import make_engine, make_session_factory
from db.migrate import upgrade_database
from tasks.context import StageContext
from tasks.extract import run_extract_clip
from tests.clips import write_faceless, write_talking_head, write_text

T = 4
HEADER = "video,openness,conscientiousness,extraversion,agreeableness,neuroticism\n"


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("labelled")
    write_talking_head(folder / "anna.seg0.mp4", seconds=1.0, seed=1)
    write_talking_head(folder / "anna.seg1.mp4", seconds=1.0, seed=2, brightness=0.7)
    write_talking_head(folder / "ben.seg0.mp4", seconds=1.0, seed=3, motion=1.5)
    write_faceless(folder / "cup.seg0.mp4", seconds=1.0)
    write_text(folder / "notes.seg0.mp4")
    write_talking_head(folder / "unlabelled.mp4", seconds=0.5, seed=4)
    rows = [
        f"{name},0.1,0.2,0.3,0.4,0.5\n"
        for name in ("anna.seg0.mp4", "anna.seg1.mp4", "ben.seg0.mp4", "cup.seg0.mp4")
    ]
    rows += ["notes.seg0.mp4,0.5,0.5,0.5,0.5,0.5\n", "gone.seg0.mp4,0.5,0.5,0.5,0.5,0.5\n"]
    (folder / "labels.csv").write_text(HEADER + "".join(rows), encoding="utf-8")
    return folder


def layout_in(tmp_path: Path) -> DatasetLayout:
    return DatasetLayout(ArtifactStore(f"file://{tmp_path / 'storage'}"), "datasets/faces")


def statuses(outcomes) -> dict[str, str]:
    return {o.clip_id: o.status for o in outcomes}


def test_extract_reports_bad_clips_and_skips_done_ones(
    labelled_folder: Path, tmp_path: Path, face_detector
) -> None:
    labelled = load_labelled_set(labelled_folder / "labels.csv")
    assert labelled.missing_videos == ["gone.seg0.mp4"]
    assert labelled.unlabelled_videos == ["unlabelled.mp4"]
    layout = layout_in(tmp_path)
    manifest = prepare_dataset(labelled, layout, ExtractionConfig(num_frames=T))
    first = statuses(extract_dataset(manifest, layout, face_detector))
    assert first == {
        "anna.seg0.mp4": EXTRACTED,
        "anna.seg1.mp4": EXTRACTED,
        "ben.seg0.mp4": EXTRACTED,
        "cup.seg0.mp4": NO_FACE,
        "notes.seg0.mp4": FAILED,
    }
    stored = layout.read_manifest()
    assert stored is not None
    assert "not a video" in stored["failed"]["notes.seg0.mp4"]["error"]
    assert stored["failed"]["cup.seg0.mp4"]["status"] == NO_FACE
    assert stored["missing_videos"] == ["gone.seg0.mp4"]
    clip_file = tmp_path / "storage" / layout.clip_key("anna.seg0.mp4")
    written = clip_file.stat().st_mtime_ns

    again = statuses(extract_dataset(manifest, layout, face_detector))
    assert [again[c] for c in ("anna.seg0.mp4", "anna.seg1.mp4", "ben.seg0.mp4")] == [SKIPPED] * 3
    assert again["notes.seg0.mp4"] == FAILED  # retried, and still reported
    assert clip_file.stat().st_mtime_ns == written


def test_stored_arrays_are_what_the_serving_stages_compute(
    labelled_folder: Path, tmp_path: Path, face_detector
) -> None:
    labelled = load_labelled_set(labelled_folder / "labels.csv")
    layout = layout_in(tmp_path)
    config = ExtractionConfig(num_frames=T)
    extract_dataset(prepare_dataset(labelled, layout, config), layout, face_detector)
    arrays = layout.store.get_arrays(layout.store.uri(layout.clip_key("ben.seg0.mp4")))
    assert arrays["crops"].shape == (T, 112, 112, 3) and arrays["crops"].dtype == np.uint8
    assert arrays["mask"].dtype == bool and arrays["mask"].sum() >= T - 1
    assert arrays["flow"].shape == (T, 112, 112, 2) and arrays["flow"].dtype == np.float16
    assert clip_config(arrays) == config
    sampled = sample_video(labelled_folder / "ben.seg0.mp4", T, max_side=config.frame_max_side)
    faces = face_detector.detect(sampled.frames)
    np.testing.assert_array_equal(arrays["crops"], faces.crops)
    np.testing.assert_array_equal(arrays["mask"], faces.mask)
    flow = compute_flow(sampled.frames, sampled.successors).astype(np.float16)
    np.testing.assert_array_equal(arrays["flow"], flow)
    assert np.abs(arrays["flow"].astype(np.float32)).mean() > 0.01  # the head moves


def test_other_settings_are_refused_unless_forced(
    labelled_folder: Path, tmp_path: Path, face_detector
) -> None:
    labelled = load_labelled_set(labelled_folder / "labels.csv")
    layout = layout_in(tmp_path)
    manifest = prepare_dataset(labelled, layout, ExtractionConfig(num_frames=T))
    extract_dataset(manifest, layout, face_detector)
    with pytest.raises(DatasetError, match="--force"):
        prepare_dataset(labelled, layout, ExtractionConfig(num_frames=T + 2))
    manifest = prepare_dataset(labelled, layout, ExtractionConfig(num_frames=T + 2), force=True)
    redone = statuses(extract_dataset(manifest, layout, face_detector))
    assert redone["anna.seg0.mp4"] == EXTRACTED
    arrays = layout.store.get_arrays(layout.store.uri(layout.clip_key("anna.seg0.mp4")))
    assert arrays["crops"].shape[0] == T + 2


def test_queue_task_body_extracts_a_stored_video_and_records_a_lost_one(
    labelled_folder: Path, tmp_path: Path, face_detector
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade_database(url)
    store = ArtifactStore(f"file://{tmp_path / 'storage'}")
    ctx = StageContext(
        session_factory=make_session_factory(make_engine(url)),
        store=store,
        config=PipelineConfig(num_frames=T),
        load_bundle=lambda version: None,  # type: ignore[arg-type,return-value]
        active_version=lambda: "unused",
    )
    ctx._detectors[112] = face_detector
    uri = store.put_file(labelled_folder / "anna.seg0.mp4", "videos/anna.mp4")
    key = "datasets/q/clips/anna.seg0.mp4.npz"
    assert run_extract_clip(ctx, uri, key) == EXTRACTED
    assert run_extract_clip(ctx, uri, key) == SKIPPED
    # A queued extraction uses the serving pipeline's settings: flow over the main person.
    expected = ExtractionConfig(num_frames=T, flow_region="person")
    assert clip_config(store.get_arrays(store.uri(key))) == expected
    by_path = "datasets/q/clips/anna.seg1.mp4.npz"
    assert run_extract_clip(ctx, str(labelled_folder / "anna.seg1.mp4"), by_path) == EXTRACTED
    lost = "datasets/q/clips/lost.npz"
    assert run_extract_clip(ctx, store.uri("videos/never-uploaded.mp4"), lost) == FAILED
    status, error = read_failure(store, lost) or ("", "")
    assert status == FAILED and "missing" in error
    assert store.exists(store.uri(failure_key(lost)))


def test_missing_crops_are_filled_from_the_nearest_face() -> None:
    crops = np.stack([np.full((2, 2, 3), value, np.uint8) for value in (0, 10, 0, 0, 40)])
    mask = np.array([False, True, False, False, True])
    filled = fill_missing_crops(crops, mask)
    assert [int(c[0, 0, 0]) for c in filled] == [10, 10, 10, 40, 40]
    assert fill_missing_crops(crops, np.zeros(5, bool)) is crops


def test_batches_hold_model_inputs_and_labels(
    labelled_folder: Path, tmp_path: Path, face_detector
) -> None:
    labelled = load_labelled_set(labelled_folder / "labels.csv")
    layout = layout_in(tmp_path)
    config = ExtractionConfig(num_frames=T)
    extract_dataset(prepare_dataset(labelled, layout, config), layout, face_detector)
    refs = [
        ClipRef(c.clip_id, layout.clip_key(c.clip_id), c.labels, c.group)
        for c in labelled.clips
        if c.clip_id.startswith(("anna", "ben"))
    ]
    for cache in (True, False):
        batches = ClipBatches(layout, refs, config, batch_size=2, shuffle=True, cache=cache)
        assert len(batches) == 2
        inputs, labels = batches[0]
        assert inputs["crops"].shape == (2, T, 112, 112, 3)
        assert inputs["flow"].dtype == np.float32 and inputs["mask"].shape == (2, T)
        assert labels.shape == (2, 5) and labels.dtype == np.float32


def test_person_flow_covers_the_main_persons_region_not_the_frame(
    labelled_folder: Path, face_detector
) -> None:
    """A person-region extraction keeps serving's first person's crops and computes the flow
    on that person's region; a whole-frame one differs only in the flow."""
    from core.persons.regions import crop_pair
    from core.persons.tracks import detect_persons

    clip = labelled_folder / "anna.seg0.mp4"
    person = extract_clip_arrays(
        clip, face_detector, ExtractionConfig(num_frames=T, flow_region="person")
    )
    frame = extract_clip_arrays(clip, face_detector, ExtractionConfig(num_frames=T))
    np.testing.assert_array_equal(person["crops"], frame["crops"])
    sampled = sample_video(clip, T, max_side=640)
    [main] = detect_persons(sampled.frames, face_detector)
    expected = compute_flow(*crop_pair(sampled.frames, sampled.successors, main.region))
    np.testing.assert_allclose(person["flow"], expected.astype(np.float16))
    assert not np.allclose(person["flow"], frame["flow"])
