"""`oceanstream extract --via-queues`: one message per clip to the faces workers, then wait.

Messages carry the clip's path and the key to write, nothing else. The outcome of each clip
is read back from storage (its arrays, or the `.failed.npz` a worker left), so nothing needs
a result backend and a worker that dies mid-clip only delays that clip: the message is
acknowledged late and delivered again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.progress import Progress

from workers.cli.app import err

if TYPE_CHECKING:
    from core.training.extraction import DatasetLayout, ExtractionConfig
    from core.training.extraction_run import ClipOutcome
    from workers.settings import Settings


def _check_worker_settings(layout: DatasetLayout, key: str, config: ExtractionConfig) -> None:
    """Workers extract with their own settings: the first clip back must match ours."""
    from core.training.extraction import clip_config

    made = clip_config(layout.store.get_arrays(layout.store.uri(key)))
    if made != config:
        raise ValueError(
            f"the workers extracted with {made.to_dict()}, not {config.to_dict()}: give the "
            "workers and this command the same OCEANSTREAM_NUM_FRAMES, _FLOW_METHOD, "
            "_DETECT_WIDTH, _MIN_FACE_CONFIDENCE and _FRAME_MAX_SIDE (and no --num-frames), "
            "then run again with --force"
        )


def _outcome(layout: DatasetLayout, clip_id: str, key: str) -> ClipOutcome | None:
    from core.training.extraction_run import EXTRACTED, ClipOutcome, read_failure

    if layout.store.exists(layout.store.uri(key)):
        return ClipOutcome(clip_id, EXTRACTED)
    failure = read_failure(layout.store, key)
    if failure is not None:
        return ClipOutcome(clip_id, failure[0], failure[1])
    return None


def extract_through_queues(
    settings: Settings,
    layout: DatasetLayout,
    manifest: dict[str, Any],
    config: ExtractionConfig,
    timeout: float | None,
    columns: tuple[Any, ...],
    poll_s: float = 0.5,
) -> list[ClipOutcome]:
    """Send the clips not yet extracted, then poll storage until each has an outcome."""
    from core.training.extraction import failure_key
    from core.training.extraction_run import (
        EXTRACTED,
        FAILED,
        SKIPPED,
        ClipOutcome,
        record_outcomes,
    )
    from tasks.extract import QUEUE, TASK_NAME
    from workers.celery_app import create_app

    store = layout.store
    celery = create_app(settings)
    outcomes: dict[str, ClipOutcome] = {}
    pending: dict[str, str] = {}  # key -> clip id
    for clip in manifest["clips"]:
        if store.exists(store.uri(clip["key"])):
            outcomes[clip["id"]] = ClipOutcome(clip["id"], SKIPPED)
            continue
        store.delete_prefix(failure_key(clip["key"]))  # an earlier run's verdict
        celery.send_task(TASK_NAME, args=[clip["video"], clip["key"]], queue=QUEUE)
        pending[clip["key"]] = clip["id"]
    err.print(f"sent {len(pending)} clips to the {QUEUE!r} queue; {len(outcomes)} already there")
    deadline = None if timeout is None else time.monotonic() + timeout
    checked = False
    with Progress(*columns, console=err, transient=True) as progress:
        bar = progress.add_task("waiting for workers", total=len(manifest["clips"]))
        progress.update(bar, completed=len(outcomes))
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
                progress.advance(bar)
            if pending:
                time.sleep(max(poll_s, len(pending) / 5000))
    for clip_id in pending.values():
        outcomes[clip_id] = ClipOutcome(
            clip_id, FAILED, f"no result within {timeout:.0f} s: are faces workers running?"
        )
    ordered = [outcomes[clip["id"]] for clip in manifest["clips"]]
    record_outcomes(layout, manifest, ordered)
    return ordered
