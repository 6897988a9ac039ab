"""Extracting a labelled data set, in this process or through the faces workers' queue.

Through the queue, messages carry the clip's path and the key to write, nothing else. The
outcome of each clip is read back from storage (its arrays, or the `.failed.npz` a worker
left), so nothing needs a result backend and a worker that dies mid-clip only delays that
clip: the message is acknowledged late and delivered again.

No printing here: progress is reported through callbacks, problems as ValueError.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from core.persons.faces import FaceDetector
from core.training.extraction import clip_config, failure_key
from core.training.extraction_run import (
    EXTRACTED,
    FAILED,
    SKIPPED,
    ClipOutcome,
    extract_dataset,
    read_failure,
    record_outcomes,
)
from workers.celery_app import create_app

if TYPE_CHECKING:
    from core.training.extraction import DatasetLayout, ExtractionConfig
    from workers.settings import Settings

OnOutcome = Callable[["ClipOutcome"], None]


def extract_in_process(
    settings: Settings,
    layout: DatasetLayout,
    manifest: dict[str, Any],
    config: ExtractionConfig,
    on_clip: OnOutcome | None = None,
) -> list[ClipOutcome]:
    """Extract every clip of `manifest` here, with a detector made for `config`."""
    detector = FaceDetector(
        detect_width=config.detect_width,
        min_confidence=config.min_face_confidence,
        crop_size=config.crop_size,
    )
    limits = settings.pipeline_config().limits
    return extract_dataset(manifest, layout, detector, limits, on_clip=on_clip)


def _check_worker_settings(layout: DatasetLayout, key: str, config: ExtractionConfig) -> None:
    """Workers extract with their own settings: the first clip back must match ours."""
    made = clip_config(layout.store.get_arrays(layout.store.uri(key)))
    if made != config:
        raise ValueError(
            f"the workers extracted with {made.to_dict()}, not {config.to_dict()}: give the "
            "workers and this command the same OCEANSTREAM_NUM_FRAMES, _FLOW_METHOD, "
            "_DETECT_WIDTH, _MIN_FACE_CONFIDENCE and _FRAME_MAX_SIDE (and no --num-frames), "
            "then run again with --force"
        )


def _outcome(layout: DatasetLayout, clip_id: str, key: str) -> ClipOutcome | None:
    if layout.store.exists(layout.store.uri(key)):
        return ClipOutcome(clip_id, EXTRACTED)
    failure = read_failure(layout.store, key)
    if failure is not None:
        return ClipOutcome(clip_id, failure[0], failure[1])
    return None


def send_clips(
    settings: Settings, layout: DatasetLayout, manifest: dict[str, Any]
) -> tuple[dict[str, ClipOutcome], dict[str, str]]:
    """Send each clip not yet extracted to the faces queue.

    Returns the outcomes known now (clips already there) and the clips sent, key -> clip id.
    """
    from tasks.extract import QUEUE, TASK_NAME

    store = layout.store
    celery = create_app(settings)
    outcomes: dict[str, ClipOutcome] = {}
    pending: dict[str, str] = {}
    for clip in manifest["clips"]:
        if store.exists(store.uri(clip["key"])):
            outcomes[clip["id"]] = ClipOutcome(clip["id"], SKIPPED)
            continue
        store.delete_prefix(failure_key(clip["key"]))  # an earlier run's verdict
        celery.send_task(TASK_NAME, args=[clip["video"], clip["key"]], queue=QUEUE)
        pending[clip["key"]] = clip["id"]
    return outcomes, pending


def wait_for_clips(
    layout: DatasetLayout,
    manifest: dict[str, Any],
    config: ExtractionConfig,
    sent: tuple[dict[str, ClipOutcome], dict[str, str]],
    timeout: float | None,
    on_clip: OnOutcome | None = None,
    poll_s: float = 0.5,
) -> list[ClipOutcome]:
    """Poll storage until each sent clip has an outcome (or `timeout` s pass); record them.

    Returns the outcomes in manifest order. Raises ValueError when the workers extracted
    with other settings than `config`.
    """
    outcomes, pending = dict(sent[0]), dict(sent[1])
    deadline = None if timeout is None else time.monotonic() + timeout
    checked = False
    while pending and (deadline is None or time.monotonic() < deadline):
        for key, clip_id in list(pending.items()):
            outcome = _outcome(layout, clip_id, key)
            if outcome is None:
                continue
            if outcome.status == EXTRACTED and not checked:
                _check_worker_settings(layout, key, config)
                checked = True
            outcomes[clip_id] = outcome
            del pending[key]
            if on_clip is not None:
                on_clip(outcome)
        if pending:
            time.sleep(max(poll_s, len(pending) / 5000))
    for clip_id in pending.values():
        outcomes[clip_id] = ClipOutcome(
            clip_id, FAILED, f"no result within {timeout:.0f} s: are faces workers running?"
        )
    ordered = [outcomes[clip["id"]] for clip in manifest["clips"]]
    record_outcomes(layout, manifest, ordered)
    return ordered
