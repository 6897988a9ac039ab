"""Which queue each stage's messages go to, and the Celery task that runs them.

Ingest takes a video id and plans its segments; every later stage takes a segment id.
Kept free of heavy imports: the CLI and the Celery app read it at start.
"""

from __future__ import annotations

#: Each stage's queue: segment sampling shares the ingest workers, which decode video.
STAGE_QUEUES = {
    "ingest": "ingest",
    "sample": "ingest",
    "faces": "faces",
    "flow": "flow",
    "inference": "inference",
}


def task_name(stage: str) -> str:
    """The Celery task a stage's messages name."""
    return f"oceanstream.{stage}"
