"""`analyze`: every stage in this process, results stored in the database."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from core.backbones.registry import backbones_dir
from core.persons.segment_analysis import identity_for
from core.plots.attention import plot_attention_map
from db import repository as repo
from db.repository.outcomes import store_segmented
from workers.services.jobs import Registration, register_inputs
from workers.services.models import register_bundle, serving_bundle
from workers.services.results import ResultRow, job_results

if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

    from core.bundles.bundle import ModelBundle
    from core.persons.person_links import PersonLinker
    from core.video_analysis import SegmentedResult, VideoAnalyzer


@dataclass(frozen=True)
class Analyzer:
    """What `analyze` runs with: the analyzer, and how persons are linked across segments."""

    videos: VideoAnalyzer
    linker: PersonLinker


@dataclass(frozen=True)
class Analysis:
    registration: Registration
    rows: list[ResultRow]  # one per input, in order


def prepare(
    settings: object, session_factory: sessionmaker, model: Path | None
) -> tuple[Analyzer, ModelBundle]:
    """The analyzer for the bundle to serve with (recorded in the database).

    Persons are linked across segments by identity when FaceRes is installed, else by
    continuity (`core.persons.segment_analysis.identity_for`).
    """
    from core.video_analysis import VideoAnalyzer

    bundle, uri = serving_bundle(session_factory, settings, model)
    register_bundle(session_factory, bundle, uri=uri)
    linker, embed = identity_for(
        backbones_dir(settings.home_dir, settings.backbones)  # type: ignore[attr-defined]
    )
    config = settings.pipeline_config()  # type: ignore[attr-defined]
    return Analyzer(VideoAnalyzer(bundle, config, embed=embed), linker), bundle


def analyze_inputs(
    analyzer: Analyzer,
    session_factory: sessionmaker,
    inputs: Sequence[Path],
    *,
    attention_dir: Path | None = None,
    on_result: Callable[[Path, SegmentedResult], None] | None = None,
) -> Analysis:
    """Register the inputs as a job, analyse each distinct content once, store the results.

    Paths with the same bytes share one analysis and get a row each. An unreadable file is
    failed at registration and not analysed. Each video is stored in one transaction with
    its segments, persons and aggregate (`db.repository.outcomes.store_segmented`).
    """
    registration = register_inputs(session_factory, inputs, kind="analyze")
    paths_of: dict[str, list[Path]] = {}
    for path, video_id in zip(inputs, registration.video_ids, strict=True):
        paths_of.setdefault(video_id, []).append(path)
    todo = [vid for vid in paths_of if vid not in registration.failed_at_registration]
    results = analyzer.videos.analyze_many([paths_of[vid][0] for vid in todo])
    for video_id, result in zip(todo, results, strict=True):
        with session_factory.begin() as session:
            store_segmented(
                session=session, video_id=video_id, result=result, linker=analyzer.linker
            )
        for path in paths_of[video_id]:
            if attention_dir is not None:
                write_attention(session_factory, attention_dir, path, video_id, result)
            if on_result is not None:
                on_result(path, result)
    return Analysis(registration, job_results(session_factory, registration.job_id))


def write_attention(
    session_factory: sessionmaker,
    directory: Path,
    path: Path,
    video_id: str,
    result: SegmentedResult,
) -> None:
    """`<stem>-<short id>.png` in `directory`: the video's headline map (its main person's,
    from that person's segment with most face frames). Nothing for a video without one.
    The short id is accepted wherever an id is."""
    with session_factory() as session:
        prediction = repo.get_prediction(
            session=session, video_id=video_id, model_version=result.model_version
        )
        weights = (
            None
            if prediction is None
            else repo.load_attention(session=session, prediction_id=prediction.id)
        )
    if weights is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    title = f"{path} ({result.model_version}{'' if result.model_trained else ', untrained'})"
    plot_attention_map(
        weights, save_path=directory / f"{path.stem}-{video_id[:8]}.png", title=title
    )
