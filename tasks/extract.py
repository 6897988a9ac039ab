"""`oceanstream.extract_clip`: extracting one training clip on a `faces` worker.

The message carries the clip's location (a path every worker can read, or a URI in the
artifact store) and the key to write; the worker's own settings give the extraction
settings, and the stored clip records them so the sender can check they are the ones it
wanted. The outcome is in storage: the clip's arrays, or a `.failed.npz` saying why.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from celery import Celery

from core.errors import ArtifactError
from core.training.extraction import ExtractionConfig
from core.training.extraction_run import FAILED, extract_to_store, record_failure
from tasks.celery_tasks import RETRY_POLICY, RETRYABLE
from tasks.context import StageContext

TASK_NAME = "oceanstream.extract_clip"
QUEUE = "faces"
# A First Impressions clip (15 s) takes seconds; a long video is refused by the limits.
TIME_LIMITS = {"soft_time_limit": 180, "time_limit": 240}


@contextlib.contextmanager
def _local_video(ctx: StageContext, video: str) -> Iterator[Path]:
    """A readable path for `video`: a store URI is fetched, a path is used as it is."""
    if video.startswith(ctx.store.url + "/"):
        with ctx.store.local_copy(video) as path:
            yield path
    else:
        yield Path(video)


def run_extract_clip(ctx: StageContext, video: str, output_key: str) -> str:
    """Extract `video` to `output_key` with this worker's settings; returns the status."""
    config = ExtractionConfig.from_pipeline(ctx.config)
    try:
        with _local_video(ctx, video) as path:
            status, _ = extract_to_store(
                ctx.store,
                output_key,
                path,
                ctx.detector(config.crop_size),
                config,
                ctx.config.limits,
                ctx.config.decode_threads,
            )
    except ArtifactError as exc:  # the stored copy is gone: say so where the sender looks
        record_failure(ctx.store, output_key, FAILED, str(exc))
        return FAILED
    return status


def register_extract_task(app: Celery, get_context: Callable[[], StageContext]) -> None:
    """Define `oceanstream.extract_clip` on `app` (sent to the `faces` queue)."""

    @app.task(name=TASK_NAME, autoretry_for=RETRYABLE, **TIME_LIMITS, **RETRY_POLICY)
    def extract_clip(video: str, output_key: str) -> None:
        run_extract_clip(get_context(), video, output_key)
