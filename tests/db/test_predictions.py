"""Predictions are stored once per (video, model version), with their attention maps."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.traits import TRAITS
from db import repository as repo
from db.models import AttentionMap, Prediction
from tests.support.rows import add_model, attention_map, new_video, run_together

Factory = sessionmaker[Session]
SCORES = [0.1, 0.2, 0.3, 0.4, 0.5]


def count(factory: Factory, entity: type) -> int:
    with factory() as session:
        return session.execute(select(func.count()).select_from(entity)).scalar_one()


def save(
    session: Session,
    video_id: str,
    version: str,
    scores: list[float] = SCORES,
    attention: np.ndarray | None = None,
    trained: bool = False,
) -> Prediction:
    return repo.save_prediction(
        session=session,
        video_id=video_id,
        model_version=version,
        scores=scores,
        attention=attention,
        model_trained=trained,
    )


@pytest.fixture
def video_and_model(session_factory: Factory) -> tuple[str, str]:
    video_id = new_video(session_factory, "v")
    with session_factory.begin() as session:
        version = add_model(session)
    return video_id, version


def test_saved_prediction_reads_back_in_trait_order(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with session_factory.begin() as session:
        prediction = save(session, video_id, version, attention=attention_map())
    with session_factory() as session:
        stored = repo.get_prediction(session=session, video_id=video_id, model_version=version)
        assert stored is not None and stored.id == prediction.id
        assert stored.scores == pytest.approx(tuple(SCORES))
        assert list(stored.traits) == list(TRAITS)
        assert stored.model_trained is False
        assert stored.created_at.tzinfo is not None
        assert repo.get_prediction(session=session, video_id=video_id, model_version="x") is None


def test_saving_twice_updates_the_one_row(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with session_factory.begin() as session:
        first = save(session, video_id, version, attention=attention_map(seed=1))
    with session_factory.begin() as session:
        second = save(session, video_id, version, [0.9] * 5, attention=attention_map(seed=2))
        assert second.scores == pytest.approx((0.9,) * 5)  # refreshed, not the cached object
    assert second.id == first.id
    assert count(session_factory, Prediction) == 1
    assert count(session_factory, AttentionMap) == 1
    with session_factory() as session:
        loaded = repo.load_attention(session=session, prediction_id=first.id)
    np.testing.assert_allclose(loaded, attention_map(seed=2), atol=1e-3)  # type: ignore[arg-type]


def test_saving_twice_in_one_transaction_refreshes_the_session_object(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with session_factory.begin() as session:
        first = save(session, video_id, version)
        second = save(session, video_id, version, [0.7] * 5)
        assert first is second
        assert first.openness == pytest.approx(0.7)
    assert count(session_factory, Prediction) == 1


def test_concurrent_saves_store_one_row(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model

    def store(index: int) -> int:
        with session_factory.begin() as session:
            prediction = save(session, video_id, version, [index / 10] * 5, attention_map(index))
            time.sleep(0.02)  # hold the transaction open so that the others overlap it
            return prediction.id

    ids = run_together(6, store)
    assert len(set(ids)) == 1
    assert count(session_factory, Prediction) == 1
    assert count(session_factory, AttentionMap) == 1


def test_attention_round_trip_through_the_database(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    weights = attention_map(seed=5, heads=4, frames=16)
    with session_factory.begin() as session:
        prediction = save(session, video_id, version, attention=weights)
    with session_factory() as session:
        loaded = repo.load_attention(session=session, prediction_id=prediction.id)
        stored = session.get(AttentionMap, prediction.id)
        assert stored is not None and (stored.shape, stored.dtype) == ([2, 4, 16, 16], "float16")
        assert len(stored.data) < weights.size * 2
    assert loaded is not None and loaded.shape == (2, 4, 16, 16)
    np.testing.assert_allclose(loaded, weights, rtol=1e-3, atol=1e-4)


def test_saving_without_attention_keeps_a_stored_map(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with session_factory.begin() as session:
        prediction = save(session, video_id, version)
    with session_factory() as session:
        assert repo.load_attention(session=session, prediction_id=prediction.id) is None
    with session_factory.begin() as session:
        save(session, video_id, version, attention=attention_map())
    with session_factory.begin() as session:
        save(session, video_id, version, attention=None)
    with session_factory() as session:
        assert repo.load_attention(session=session, prediction_id=prediction.id) is not None


def test_one_prediction_per_model_version(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with session_factory.begin() as session:
        trained = add_model(session, "trained-000000000002", trained=True)
        save(session, video_id, version)
        save(session, video_id, trained, trained=True)
    assert count(session_factory, Prediction) == 2


@pytest.mark.parametrize(
    "scores, message",
    [
        ([0.1] * 4, "expected 5"),
        ([0.1] * 6, "expected 5"),
        ([0.1, 0.2, 0.3, 0.4, float("nan")], "neuroticism"),
        ([1.5, 0.2, 0.3, 0.4, 0.5], "openness"),
        ([0.1, -0.2, 0.3, 0.4, 0.5], "conscientiousness"),
    ],
)
def test_invalid_scores_are_refused(
    session_factory: Factory, video_and_model: tuple[str, str], scores: list[float], message: str
) -> None:
    video_id, version = video_and_model
    with pytest.raises(ValueError, match=message), session_factory.begin() as session:
        save(session, video_id, version, scores)


def test_numpy_scores_are_accepted(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with session_factory.begin() as session:
        prediction = save(session, video_id, version, np.array(SCORES, dtype=np.float32))  # type: ignore[arg-type]
        assert prediction.scores == pytest.approx(tuple(SCORES), abs=1e-6)


def test_trained_flag_must_match_the_model_version(
    session_factory: Factory, video_and_model: tuple[str, str]
) -> None:
    video_id, version = video_and_model
    with pytest.raises(ValueError, match="contradicts"), session_factory.begin() as session:
        save(session, video_id, version, trained=True)
    with pytest.raises(repo.NotFoundError), session_factory.begin() as session:
        save(session, video_id, "unregistered")
