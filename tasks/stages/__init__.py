"""The pipeline stages as plain functions over ids: what each Celery task runs.

Each stage is idempotent and guarded by the video's state in the database, so a message
delivered twice, late, or after the video moved on does nothing harmful. Every stage is
guard -> run -> finish (`tasks.stages.skeleton`); the return value says what to enqueue
next, and the caller (the task) does the enqueueing after the commit.

    ingest      probe and sample the stored video          (`tasks.stages.ingest`)
    faces/flow  the two feature extractors, side by side   (`tasks.stages.features`)
    inference   the fusion model over batches of videos    (`tasks.stages.inference`)
"""

from tasks.stages.features import run_faces, run_flow
from tasks.stages.inference import (
    RETRY,
    InferenceBatchReport,
    run_inference,
    run_inference_batch,
)
from tasks.stages.ingest import run_ingest

__all__ = [
    "RETRY",
    "InferenceBatchReport",
    "run_faces",
    "run_flow",
    "run_inference",
    "run_inference_batch",
    "run_ingest",
]
