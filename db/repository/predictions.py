"""Predictions and their attention maps."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.traits import NUM_TRAITS, TRAITS
from db.attention import decode_attention, encode_attention
from db.models import AttentionMap, ModelVersion, Prediction
from db.repository._common import NotFoundError, dialect_insert
from db.types import utcnow


def save_prediction(
    *,
    session: Session,
    video_id: str,
    model_version: str,
    scores: Sequence[float],
    attention: np.ndarray | None,
    model_trained: bool,
) -> Prediction:
    """Store the OCEAN `scores` (in `core.traits.TRAITS` order) and attention of one video.

    Idempotent: a second save for the same video and model version updates that row in place
    (`INSERT ... ON CONFLICT DO UPDATE`), also when two workers save at the same moment, so a
    redelivered inference never stores a duplicate. `attention=None` keeps a stored map.
    The model version must exist (`ensure_model_version`) and `model_trained` must agree with
    it, so that untrained results are always labelled as such.
    """
    values = checked_scores(scores)
    check_model_trained(session, model_version, model_trained)
    insert = dialect_insert(session, Prediction).values(
        video_id=video_id,
        model_version=model_version,
        model_trained=bool(model_trained),
        created_at=utcnow(),
        **values,
    )
    upsert = insert.on_conflict_do_update(
        index_elements=[Prediction.video_id, Prediction.model_version],
        set_={name: insert.excluded[name] for name in (*TRAITS, "model_trained")},
    ).returning(Prediction)
    prediction = session.scalars(upsert, execution_options={"populate_existing": True}).one()
    if attention is not None:
        _save_attention(session, prediction.id, attention)
        session.expire(prediction, ["attention_map"])
    return prediction


def get_prediction(*, session: Session, video_id: str, model_version: str) -> Prediction | None:
    """The prediction for `video_id` by `model_version`, or None."""
    return session.execute(
        select(Prediction).where(
            Prediction.video_id == video_id, Prediction.model_version == model_version
        )
    ).scalar_one_or_none()


def load_attention(*, session: Session, prediction_id: int) -> np.ndarray | None:
    """The attention map stored with a prediction ([2, heads, T, T] float32), or None."""
    row = session.execute(
        select(AttentionMap.data, AttentionMap.shape, AttentionMap.dtype).where(
            AttentionMap.prediction_id == prediction_id
        )
    ).first()
    if row is None:
        return None
    return decode_attention(row.data, row.shape, row.dtype)


def checked_scores(scores: Sequence[float]) -> dict[str, float]:
    values = [float(score) for score in np.asarray(scores, dtype=np.float64).reshape(-1)]
    if len(values) != NUM_TRAITS:
        raise ValueError(f"expected {NUM_TRAITS} trait scores {TRAITS}, got {len(values)}")
    for name, value in zip(TRAITS, values, strict=True):
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} score must be a finite number in [0, 1], got {value}")
    return dict(zip(TRAITS, values, strict=True))


def _save_attention(session: Session, prediction_id: int, attention: np.ndarray) -> None:
    data, shape, dtype = encode_attention(attention)
    insert = dialect_insert(session, AttentionMap).values(
        prediction_id=prediction_id, shape=shape, dtype=dtype, data=data
    )
    session.execute(
        insert.on_conflict_do_update(
            index_elements=[AttentionMap.prediction_id],
            set_={name: insert.excluded[name] for name in ("shape", "dtype", "data")},
        )
    )


def check_model_trained(session: Session, model_version: str, model_trained: bool) -> None:
    """Refuse an unknown model version, or a `model_trained` flag that contradicts it."""
    stored = session.get(ModelVersion, model_version)
    if stored is None:
        raise NotFoundError(f"no model version {model_version!r}; call ensure_model_version first")
    if stored.trained != bool(model_trained):
        raise ValueError(
            f"model_trained={bool(model_trained)} contradicts model version {model_version!r} "
            f"(trained={stored.trained})"
        )
