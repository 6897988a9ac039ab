"""Writing one video's outcome to the database: shared by `analyze` and the inference stage."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    """Record status, probe data, timings and (when done) the prediction with its attention.

    The caller owns the transaction, so the prediction and the final status land together.
    Returns the prediction id when one was stored.
    """
    from db import repository as repo

    if result.info is not None:
        repo.record_probe(session=session, video_id=video_id, info=result.info.to_dict())
    repo.record_timings(session=session, video_id=video_id, timings=result.timings)
    repo.record_counts(
        session=session, video_id=video_id, frames=result.frames, faces_found=result.faces_found
    )
    prediction_id = None
    if result.scores is not None:
        prediction = repo.save_prediction(
            session=session,
            video_id=video_id,
            model_version=result.model_version,
            scores=[float(x) for x in result.scores],
            attention=result.attention,
            model_trained=result.model_trained,
        )
        prediction_id = prediction.id
    repo.transition_video(
        session=session,
        video_id=video_id,
        to_status=result.status,
        from_statuses=from_statuses,
        error=result.error,
    )
    return prediction_id
