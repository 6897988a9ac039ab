"""The pipeline stages as plain functions over ids: what each Celery task runs.

Each stage is idempotent and guarded by its row's state in the database, so a message
delivered twice, late, or after the row moved on does nothing harmful. Every stage is
guard -> run -> finish (`tasks.stages.skeleton`); the return value says what to enqueue
next, and the caller (the task) does the enqueueing after the commit.

    ingest      probe the stored video, plan its segments   (`tasks.stages.ingest`)
    sample      decode one segment's window, sample frames   (`tasks.stages.ingest`)
    faces/flow  a segment's persons and their features      (`tasks.stages.features`)
    inference   the fusion model over batches of segments   (`tasks.stages.inference`)

The last segment to become final aggregates its video (`tasks.stages.segment_rows`).
"""

from tasks.stages.features import run_faces, run_flow
from tasks.stages.inference import (
    RETRY,
    InferenceBatchReport,
    run_inference,
    run_inference_batch,
)
from tasks.stages.ingest import run_ingest, run_sample

__all__ = [
    "RETRY",
    "InferenceBatchReport",
    "run_faces",
    "run_flow",
    "run_inference",
    "run_inference_batch",
    "run_ingest",
    "run_sample",
]
