"""Writing one video's outcome: shared by `analyze` and, in batches, the inference stage.

`store_result` is the per-video form; `db.repository.inference_batches.finish_videos` does
the same for a whole batch of the inference pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.status import VideoStatus
from db.repository.predictions import save_prediction
from db.repository.stages import StageUpdate, finish_stage

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.pipeline import VideoResult


def store_result(
    *,
    session: Session,
    video_id: str,
    result: VideoResult,
    from_statuses: list[str] | None = None,
) -> int | None:
    """Record the prediction with its attention (when done), then status, probe data, counts
    and timings in one guarded UPDATE.

    The caller owns the transaction, so the prediction and the final status land together.
    Returns the prediction id when one was stored.
    """
    prediction_id = None
    if result.scores is not None:
        prediction = save_prediction(
            session=session,
            video_id=video_id,
            model_version=result.model_version,
            scores=[float(x) for x in result.scores],
            attention=result.attention,
            model_trained=result.model_trained,
        )
        prediction_id = prediction.id
    changes = StageUpdate(
        status=VideoStatus(result.status),
        error=result.error,
        timings=result.timings,
        probe=None if result.info is None else result.info.to_dict(),
        frames=result.frames,
        faces_found=result.faces_found,
    )
    finish_stage(session=session, video_id=video_id, changes=changes, from_statuses=from_statuses)
    return prediction_id
