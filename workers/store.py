"""Writing one video's outcome to the database: shared by `analyze` and the workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.pipeline import VideoResult


def store_result(*, session: Session, video_id: str, result: VideoResult) -> int | None:
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
        session=session, video_id=video_id, to_status=result.status, error=result.error
    )
    return prediction_id


def result_json(
    *,
    video: str,
    video_id: str | None,
    status: str,
    traits: dict[str, float] | None,
    faces_found: int | None,
    frames: int | None,
    model_version: str | None,
    model_trained: bool | None,
    error: str | None,
) -> dict[str, Any]:
    """One video in the JSON result contract (the keys and their order are fixed)."""
    return {
        "video": video,
        "video_id": video_id,
        "status": status,
        "traits": traits,
        "faces_found": faces_found,
        "frames": frames,
        "model_version": model_version,
        "model_trained": model_trained,
        "error": error,
    }
